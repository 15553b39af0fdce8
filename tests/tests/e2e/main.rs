//! End-to-end tests over real TCP on loopback: the protocol and the server (t10..t45), and
//! `dlock-client` against a real server (t50..t58, t76), and the wire table (t59: every SDK
//! entry point, option and outcome crosses the wire intact). One test binary; each numbered
//! module is one topic.

mod t10_acquire;
mod t20_queue_push;
mod t30_lease;
mod t32_replay_and_slow_reader;
mod t35_restart;
mod t36_restart_grace;
mod t40_bad_input;
mod t42_limits;
mod t43_server_hardening;
mod t44_half_close;
mod t45_shutdown;
mod t50_client_locks;
mod t51_client_faults;
mod t52_client_endpoints;
mod t58_client_low_level;
mod t59_wire_outcomes;
mod t59_wire_table;
mod t76_pause_is_lost;
