//! Request flags (the `DLM_LKF_*` / `LCK$M_*` flags of the rule book).

use serde::{Deserialize, Serialize};

bitflags::bitflags! {
    /// Flags on a lock, convert or unlock request.
    ///
    /// dlock implements [`NOQUEUE`](LockFlags::NOQUEUE), [`QUECVT`](LockFlags::QUECVT),
    /// [`VALBLK`](LockFlags::VALBLK) and [`IVVALBLK`](LockFlags::IVVALBLK). The optional
    /// flags of the rule book have stable bits reserved here; until dlock implements one, a
    /// request carrying it is rejected as invalid (R56), never silently ignored. Bits that
    /// name no flag at all are rejected the same way (R54).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    pub struct LockFlags: u32 {
        /// Fail with NOT_QUEUED instead of waiting (R22, R19).
        const NOQUEUE = 1 << 0;
        /// Queue a conversion behind already queued conversions (R21).
        const QUECVT = 1 << 1;
        /// Read or write the resource's lock value block (R25..R28).
        const VALBLK = 1 << 2;
        /// Invalidate the value block on an unlock or down-conversion from PW/EX (R29a).
        const IVVALBLK = 1 << 3;
        /// Optional, not implemented (R61).
        const NOQUEUEBAST = 1 << 8;
        /// Optional, not implemented (R60).
        const CONVDEADLK = 1 << 9;
        /// Optional, not implemented (R59).
        const EXPEDITE = 1 << 10;
        /// Optional, not implemented (R62).
        const HEADQUE = 1 << 11;
        /// Optional, not implemented (R58).
        const NOORDER = 1 << 12;
        /// Optional, not implemented (R57).
        const ALTPR = 1 << 13;
        /// Optional, not implemented (R57).
        const ALTCW = 1 << 14;
        /// Optional, not implemented (R53).
        const PERSISTENT = 1 << 15;
        /// Optional, not implemented (R43).
        const NODLCKWT = 1 << 16;
        /// Optional, not implemented (R64).
        const FORCEUNLOCK = 1 << 17;
    }
}

impl LockFlags {
    /// The flags dlock implements.
    pub const SUPPORTED: LockFlags = LockFlags::NOQUEUE
        .union(LockFlags::QUECVT)
        .union(LockFlags::VALBLK)
        .union(LockFlags::IVVALBLK);
}
