//! Ops, on top of everything: the admin HTTP server, `dermaga check`, `dermaga doctor` and
//! process signals.
//! They read the other layers and own none of their logic.

pub mod admin;
pub mod check;
pub mod doctor;
pub(crate) mod signals;
