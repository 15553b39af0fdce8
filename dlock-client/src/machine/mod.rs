//! The session as a sans-IO state machine.

pub(crate) mod backoff;
