//! Ops: the admin HTTP server, metrics, the access log, `dermaga check`, logging setup and
//! process signals. Reads the other layers; owns none of their logic.

pub mod access_log;
pub mod admin;
pub mod check;
pub mod log_throttle;
pub mod log_writer;
pub mod logging;
pub mod metrics;
pub mod signals;
