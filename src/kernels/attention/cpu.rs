//! CPU twin (placeholder).
