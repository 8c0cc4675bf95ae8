//! Telemetry, beneath everything: metrics, the access log, logging (its bounded writer and the
//! per-connection warning throttle) and the data plane's words for how a connection ended,
//! was refused or failed to connect. Every layer may use it; it uses nothing above it (only
//! [`crate::names`] and [`crate::sys`]).

pub mod access_log;
pub(crate) mod log_throttle;
pub(crate) mod log_writer;
pub mod logging;
pub mod metrics;
pub mod outcome;
