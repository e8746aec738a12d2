//! Placeholder until the device layer lands.

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    #[error("{0}")]
    Unavailable(String),
}
