//! The checker: replays a chaos history and reports every violation of dlock's safety and
//! liveness properties, each with a counterexample. It lives in the `dlock-history` crate
//! (also behind `dlock verify`); see its docs for the six properties and the clock
//! assumption.

pub use dlock_history::{
    CheckConfig, CheckReport, Checker, Location, Property, Violation, check, check_files,
};
