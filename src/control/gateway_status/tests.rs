//! Rendering of the Gateway API status.
