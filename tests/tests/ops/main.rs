//! The server's HTTP listener over real TCP on loopback: `/metrics` (t80), `/healthz` and
//! `/readyz` across a restart grace (t81), the JSON API (t82), the status page in a real
//! headless Chromium (t83), and the listener's connection cap (t84). One test binary; each
//! numbered module is one topic.

mod prom;
mod scenario;
mod t80_metrics;
mod t81_health;
mod t82_api;
mod t83_browser;
mod t84_limits;
