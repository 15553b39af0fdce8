//! Per-request options: the DLM flags of the rule book in builder form.

use std::time::Duration;

use dlock_core::LockFlags;

/// Options of a new lock request ([`Client::lock_with`](crate::Client::lock_with)).
///
/// ```
/// use std::time::Duration;
/// use dlock_client::LockOptions;
///
/// let opts = LockOptions::new().timeout(Duration::from_secs(5)).read_value();
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, Default)]
pub struct LockOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) no_queue: bool,
    pub(crate) read_value: bool,
    pub(crate) extra: LockFlags,
}

impl LockOptions {
    /// ORs arbitrary [`LockFlags`] bits into the request, on top of what the other options
    /// set. This reaches every DLM flag of the rule book, including the optional ones dlock
    /// does not implement and bits that name no flag
    /// ([`LockFlags::from_bits_retain`]): the server refuses those with
    /// [`Error::Invalid`](crate::Error::Invalid) (R54, R56) and nothing changes. Calling it
    /// again adds more bits.
    pub fn flags(mut self, flags: LockFlags) -> Self {
        self.extra |= flags;
        self
    }

    /// Default options: wait in the queue for as long as it takes, no value block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give up with [`Error::TimedOut`](crate::Error::TimedOut) if still queued after `d`
    /// (R65; the server measures it).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// NOQUEUE: fail with [`Error::NotQueued`](crate::Error::NotQueued) instead of waiting
    /// (R22).
    pub fn no_queue(mut self) -> Self {
        self.no_queue = true;
        self
    }

    /// VALBLK: read the resource's value block on grant (R26, R27); see
    /// [`LockGuard::value`](crate::LockGuard::value).
    pub fn read_value(mut self) -> Self {
        self.read_value = true;
        self
    }

    pub(crate) fn wire_flags(&self) -> LockFlags {
        let mut f = self.extra;
        if self.no_queue {
            f |= LockFlags::NOQUEUE;
        }
        if self.read_value {
            f |= LockFlags::VALBLK;
        }
        f
    }

    pub(crate) fn timeout_ms(&self) -> Option<u64> {
        self.timeout.map(duration_ms)
    }
}

/// Options of a conversion ([`LockGuard::convert_with`](crate::LockGuard::convert_with)).
///
/// `read_value` and `value` both set VALBLK: whether it reads or writes depends on the
/// conversion (R26: down from PW/EX writes, everything else reads).
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) no_queue: bool,
    pub(crate) quecvt: bool,
    pub(crate) read_value: bool,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) invalidate_value: bool,
    pub(crate) extra: LockFlags,
}

impl ConvertOptions {
    /// ORs arbitrary [`LockFlags`] bits into the request, on top of what the other options
    /// set. This reaches every DLM flag of the rule book, including the optional ones dlock
    /// does not implement and bits that name no flag
    /// ([`LockFlags::from_bits_retain`]): the server refuses those with
    /// [`Error::Invalid`](crate::Error::Invalid) (R54, R56) and nothing changes. Calling it
    /// again adds more bits.
    pub fn flags(mut self, flags: LockFlags) -> Self {
        self.extra |= flags;
        self
    }

    /// Default options: wait as long as it takes, no value block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Give up with [`Error::TimedOut`](crate::Error::TimedOut) if still queued after `d`;
    /// the lock keeps its old mode (R65).
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// NOQUEUE: fail with [`Error::NotQueued`](crate::Error::NotQueued) instead of waiting;
    /// the lock keeps its old mode (R19).
    pub fn no_queue(mut self) -> Self {
        self.no_queue = true;
        self
    }

    /// QUECVT: queue behind conversions already queued instead of being granted in place
    /// (R21). Only valid on the up-conversions R21 lists.
    pub fn quecvt(mut self) -> Self {
        self.quecvt = true;
        self
    }

    /// VALBLK on a read path: the value block is read when the conversion is granted (R26).
    pub fn read_value(mut self) -> Self {
        self.read_value = true;
        self
    }

    /// VALBLK on a write path: `value` replaces the value block when a conversion down from
    /// PW/EX (or PW→PW, EX→EX) is granted (R16, R26). Shorter values are zero-padded.
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// IVVALBLK: mark the value block not valid on a conversion from PW or EX down or to the
    /// same mode (R29a; the write path of R26, where a value would otherwise be written).
    pub fn invalidate_value(mut self) -> Self {
        self.invalidate_value = true;
        self
    }

    pub(crate) fn wire_flags(&self) -> LockFlags {
        let mut f = self.extra;
        if self.no_queue {
            f |= LockFlags::NOQUEUE;
        }
        if self.quecvt {
            f |= LockFlags::QUECVT;
        }
        if self.read_value || self.value.is_some() {
            f |= LockFlags::VALBLK;
        }
        if self.invalidate_value {
            f |= LockFlags::IVVALBLK;
        }
        f
    }

    pub(crate) fn timeout_ms(&self) -> Option<u64> {
        self.timeout.map(duration_ms)
    }
}

/// Options of an unlock ([`LockGuard::unlock_with`](crate::LockGuard::unlock_with)).
#[derive(Clone, Debug, Default)]
pub struct UnlockOptions {
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) invalidate_value: bool,
    pub(crate) extra: LockFlags,
}

impl UnlockOptions {
    /// ORs arbitrary [`LockFlags`] bits into the request, on top of what the other options
    /// set. This reaches every DLM flag of the rule book, including the optional ones dlock
    /// does not implement and bits that name no flag
    /// ([`LockFlags::from_bits_retain`]): the server refuses those with
    /// [`Error::Invalid`](crate::Error::Invalid) (R54, R56) and nothing changes. Calling it
    /// again adds more bits.
    pub fn flags(mut self, flags: LockFlags) -> Self {
        self.extra |= flags;
        self
    }

    /// Default options: the value block is left alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// VALBLK: write `value` to the resource's value block when unlocking from PW or EX
    /// (R28). Shorter values are zero-padded.
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// IVVALBLK: mark the value block not valid when unlocking from PW or EX (R29a).
    pub fn invalidate_value(mut self) -> Self {
        self.invalidate_value = true;
        self
    }

    pub(crate) fn wire_flags(&self) -> LockFlags {
        let mut f = self.extra;
        if self.value.is_some() {
            f |= LockFlags::VALBLK;
        }
        if self.invalidate_value {
            f |= LockFlags::IVVALBLK;
        }
        f
    }
}

/// Milliseconds of a duration, saturating, at least 1 for a non-zero duration.
pub(crate) fn duration_ms(d: Duration) -> u64 {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 && !d.is_zero() { 1 } else { ms }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_map_to_the_rule_book_flags() {
        assert_eq!(LockOptions::new().wire_flags(), LockFlags::empty());
        assert_eq!(
            LockOptions::new().no_queue().read_value().wire_flags(),
            LockFlags::NOQUEUE | LockFlags::VALBLK
        );
        assert_eq!(
            ConvertOptions::new().quecvt().no_queue().wire_flags(),
            LockFlags::QUECVT | LockFlags::NOQUEUE
        );
        // A value to write and a read both travel as VALBLK (R26 decides which happens).
        assert_eq!(
            ConvertOptions::new().value(b"x".to_vec()).wire_flags(),
            LockFlags::VALBLK
        );
        assert_eq!(
            ConvertOptions::new().read_value().wire_flags(),
            LockFlags::VALBLK
        );
        assert_eq!(
            ConvertOptions::new().invalidate_value().wire_flags(),
            LockFlags::IVVALBLK
        );
        assert_eq!(UnlockOptions::new().wire_flags(), LockFlags::empty());
        assert_eq!(
            UnlockOptions::new().value(b"x".to_vec()).wire_flags(),
            LockFlags::VALBLK
        );
        assert_eq!(
            UnlockOptions::new().invalidate_value().wire_flags(),
            LockFlags::IVVALBLK
        );
        // Raw bits are ORed in, unknown ones included.
        let odd = LockFlags::from_bits_retain(1 << 30);
        assert_eq!(
            LockOptions::new()
                .no_queue()
                .flags(LockFlags::EXPEDITE)
                .flags(odd)
                .wire_flags(),
            LockFlags::NOQUEUE | LockFlags::EXPEDITE | odd
        );
        assert_eq!(
            ConvertOptions::new()
                .flags(LockFlags::CONVDEADLK)
                .wire_flags(),
            LockFlags::CONVDEADLK
        );
        assert_eq!(
            UnlockOptions::new()
                .flags(LockFlags::FORCEUNLOCK)
                .wire_flags(),
            LockFlags::FORCEUNLOCK
        );
    }

    #[test]
    fn timeouts_are_whole_milliseconds_and_never_round_to_zero() {
        assert_eq!(duration_ms(Duration::ZERO), 0);
        assert_eq!(duration_ms(Duration::from_micros(1)), 1);
        assert_eq!(duration_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(duration_ms(Duration::MAX), u64::MAX);
        assert_eq!(
            LockOptions::new()
                .timeout(Duration::from_secs(2))
                .timeout_ms(),
            Some(2000)
        );
    }
}
