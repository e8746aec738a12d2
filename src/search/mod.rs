//! placeholder

pub mod plot;
