//! The crate's error type: every failure says what was wrong and, where it can, how to fix it.

use std::path::PathBuf;

/// Errors raised by genflow. Library code never panics on bad input; it returns one of these.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor had the wrong shape, dtype or device for the operation.
    #[error("shape error: {0}")]
    Shape(String),
    /// A configuration value is out of range, unknown or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file is missing, corrupt, truncated or of the wrong kind.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// Training produced a NaN or infinite value.
    #[error("non-finite value: {0}")]
    NonFinite(String),
    /// An error reported by libtorch (its first line: libtorch's C++ backtrace is left out).
    #[error("libtorch: {}", first_line(&.0.to_string()))]
    Torch(#[from] tch::TchError),
    /// A collective, the process group or a launched rank failed (`genflow::distributed`).
    #[error("distributed: {0}")]
    Distributed(String),
    /// An operating-system I/O error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A [`Error::File`] for `path` with the message `msg`.
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
    /// A [`Error::Config`] with the message `msg`.
    pub fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }
    /// A [`Error::Distributed`] with the message `msg`.
    pub fn distributed(msg: impl Into<String>) -> Self {
        Error::Distributed(msg.into())
    }
    /// The same error with `context` (the key or file it concerns) in front of its message, where
    /// the message does not say so already.
    pub fn context(self, context: &str) -> Self {
        match self {
            Error::Config(msg) if !msg.starts_with(context) => {
                Error::Config(format!("{context}: {msg}"))
            }
            other => other,
        }
    }
    /// A [`Error::Shape`] with the message `msg`.
    pub fn shape(msg: impl Into<String>) -> Self {
        Error::Shape(msg.into())
    }
}

/// The message of a libtorch error without the C++ source location and backtrace that follow it
/// ("Exception raised from ... frame #0: ...").
fn first_line(message: &str) -> String {
    let message = message
        .split("Exception raised from")
        .next()
        .unwrap_or(message);
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
