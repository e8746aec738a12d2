//! activation kernels: GPU dispatch in `gpu`, CPU twin in `cpu`.

pub mod cpu;
pub mod gpu;
