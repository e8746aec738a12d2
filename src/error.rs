//! The crate-wide error type. Each layer has its own `thiserror` enum; this one wraps them
//! so the command line can print any failure as one `error: ...` line.

/// Any failure the library reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An architecture file or value is invalid.
    #[error(transparent)]
    Arch(#[from] crate::arch::ArchError),
    /// A search space is invalid or cannot be read.
    #[error(transparent)]
    Space(#[from] crate::space::SpaceError),
    /// The GPU or CPU backend failed.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// A surrogate model, its data or its settings are invalid.
    #[error(transparent)]
    Surrogate(#[from] crate::surrogate::SurrogateError),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A user-supplied value or combination of options is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Any other failure, already phrased as one line.
    #[error("{0}")]
    Other(String),
    /// The user stopped the run (Ctrl-C, SIGTERM) after it wrote what it had; the binary exits
    /// with status 130.
    #[error("{0}")]
    Interrupted(String),
}

/// Result with the crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done, for example `cannot write out/front.csv`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
