//! GPU dispatch (placeholder).
