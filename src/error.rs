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

/// Returns the first path from `path` upwards that exists but is not a folder, such as a
/// file where an output folder should be.
pub fn file_in_the_way(path: &std::path::Path) -> Option<&std::path::Path> {
    path.ancestors().find(|a| !a.as_os_str().is_empty() && a.exists() && !a.is_dir())
}

/// Creates folder `dir` and its missing parents. When a file is in the way, the error names
/// the file instead of the system's `File exists`.
pub fn create_dir_all(dir: &std::path::Path) -> Result<()> {
    if let Some(file) = file_in_the_way(dir) {
        return Err(Error::Invalid(format!(
            "cannot create folder {}: {} is a file, not a folder; choose another path",
            dir.display(),
            file.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("cannot create folder {}", dir.display()), e))
}

/// Creates the folder that file `path` will be written in. Callers run it before long work,
/// so that the final write does not fail for a missing folder.
pub fn create_parent_dir(path: &std::path::Path) -> Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => create_dir_all(parent),
        None => Ok(()),
    }
}

/// Returns the count with the noun in singular or plural: "1 round", "3 rounds".
pub(crate) fn plural(count: usize, singular: &str, plural: &str) -> String {
    format!("{count} {}", if count == 1 { singular } else { plural })
}
