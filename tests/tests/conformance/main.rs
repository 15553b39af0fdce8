//! Conformance to the rule book (R1..R66) end to end through `dlock-client` against a real
//! server. One test binary; each numbered module is one topic.

mod t60_conformance_queues;
mod t61_conformance_conversions;
mod t62_conformance_lvb;
mod t63_conformance_blocking;
mod t64_conformance_deadlock;
mod t65_conformance_unlock_cancel;
mod t66_conformance_sessions;
mod t67_conformance_validation;
mod t68_conformance_queries_tokens;
mod t69_conformance_edge_cases;
mod t6r_conformance_random;
