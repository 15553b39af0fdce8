//! Static argument checks (R54, R56). The order of all checks is R55 as refined by dlock:
//! unknown session, then these static checks, then the lock lookup (NOT_FOUND), then the
//! checks that need the lock's granted mode (QUECVT on a lock that has none, still waiting
//! for its first grant, is INVALID too), then state checks (BUSY, NOT_PENDING), then
//! limits. `ops.rs` runs them in that order.

use crate::{Config, ConvertRequest, Invalid, LockFlags, LockRequest, UnlockRequest};

/// Flag bits: unknown bits first, then optional features dlock does not implement (R56),
/// then (for a new lock) QUECVT, then flags that mean nothing for the command.
pub(crate) fn flags(flags: LockFlags, applicable: LockFlags) -> Result<(), Invalid> {
    let bits = flags.bits();
    let unknown = bits & !LockFlags::all().bits();
    if unknown != 0 {
        return Err(Invalid::UnknownFlags(unknown));
    }
    let unsupported = bits & !LockFlags::SUPPORTED.bits();
    if unsupported != 0 {
        return Err(Invalid::UnsupportedFlags(unsupported));
    }
    if applicable == LOCK_FLAGS && flags.contains(LockFlags::QUECVT) {
        // R21, R54: QUECVT on a new request has its own reason.
        return Err(Invalid::QuecvtOnNewLock);
    }
    let stray = bits & !applicable.bits();
    if stray != 0 {
        return Err(Invalid::FlagNotApplicable(stray));
    }
    Ok(())
}

/// A resource name: 1..=`max_name_len` bytes.
pub(crate) fn name(name: &[u8], config: &Config) -> Result<(), Invalid> {
    if name.is_empty() {
        return Err(Invalid::EmptyName);
    }
    if name.len() > config.max_name_len {
        return Err(Invalid::NameTooLong {
            len: name.len(),
            max: config.max_name_len,
        });
    }
    Ok(())
}

/// A value: at most `lvb_len` bytes (shorter ones are zero-padded, R24).
pub(crate) fn value(value: Option<&[u8]>, config: &Config) -> Result<(), Invalid> {
    match value {
        Some(v) if v.len() > config.lvb_len => Err(Invalid::ValueTooLong {
            len: v.len(),
            max: config.lvb_len,
        }),
        _ => Ok(()),
    }
}

/// The static checks of a new lock's arguments: name, value, flags (R54, R56).
pub(crate) fn lock_args(q: &LockRequest, config: &Config) -> Result<(), Invalid> {
    name(&q.resource, config)
        .and_then(|()| value(q.value.as_deref(), config))
        .and_then(|()| flags(q.flags, LOCK_FLAGS))
}

/// The static checks of a conversion's arguments: value, flags.
pub(crate) fn convert_args(q: &ConvertRequest, config: &Config) -> Result<(), Invalid> {
    value(q.value.as_deref(), config).and_then(|()| flags(q.flags, CONVERT_FLAGS))
}

/// The static checks of an unlock's arguments: value, flags.
pub(crate) fn unlock_args(q: &UnlockRequest, config: &Config) -> Result<(), Invalid> {
    value(q.value.as_deref(), config).and_then(|()| flags(q.flags, UNLOCK_FLAGS))
}

/// Flags a new lock may carry (IVVALBLK is accepted and has no effect there, R29a).
pub(crate) const LOCK_FLAGS: LockFlags = LockFlags::NOQUEUE
    .union(LockFlags::VALBLK)
    .union(LockFlags::IVVALBLK);
/// Flags a conversion may carry.
pub(crate) const CONVERT_FLAGS: LockFlags = LockFlags::SUPPORTED;
/// Flags an unlock may carry.
pub(crate) const UNLOCK_FLAGS: LockFlags = LockFlags::VALBLK.union(LockFlags::IVVALBLK);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_checks_in_order() {
        let unknown = LockFlags::from_bits_retain(1 << 30);
        assert_eq!(
            flags(unknown | LockFlags::EXPEDITE, LOCK_FLAGS),
            Err(Invalid::UnknownFlags(1 << 30))
        );
        assert_eq!(
            flags(LockFlags::EXPEDITE | LockFlags::QUECVT, LOCK_FLAGS),
            Err(Invalid::UnsupportedFlags(LockFlags::EXPEDITE.bits()))
        );
        assert_eq!(
            flags(LockFlags::QUECVT, LOCK_FLAGS),
            Err(Invalid::QuecvtOnNewLock)
        );
        assert_eq!(
            flags(LockFlags::NOQUEUE, UNLOCK_FLAGS),
            Err(Invalid::FlagNotApplicable(LockFlags::NOQUEUE.bits()))
        );
        assert_eq!(flags(LockFlags::SUPPORTED, CONVERT_FLAGS), Ok(()));
    }
}
