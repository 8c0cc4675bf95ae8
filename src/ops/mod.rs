//! Ops: logging setup and process signals. Reads the other layers; owns none of their logic.

pub mod logging;
pub mod signals;
