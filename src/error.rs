//! One error type for the engine. Every variant renders as a single line that names the file
//! (and tensor) and the problem, because that line is what the CLI prints before exiting.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad or unreadable input: exit code 2.
    #[error("{}: {}{msg}", path.display(), tensor.as_ref().map(|t| format!("tensor `{t}`: ")).unwrap_or_default())]
    Input {
        path: PathBuf,
        tensor: Option<String>,
        msg: String,
    },
    /// Inputs that are each fine but do not fit together (adapter for another base, shape
    /// mismatch, ambiguous pairing): exit code 2.
    #[error("{0}")]
    Mismatch(String),
    /// A computation failed on valid input (NaN weights, SVD did not converge).
    #[error("{0}")]
    Compute(String),
    /// Invalid option value given by the user.
    #[error("{0}")]
    Usage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.to_path_buf(),
            tensor: None,
            msg: msg.into(),
        }
    }
    pub fn tensor(path: &Path, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Input {
            path: path.to_path_buf(),
            tensor: Some(tensor.to_string()),
            msg: msg.into(),
        }
    }
    pub fn io(path: &Path, e: std::io::Error) -> Self {
        Error::file(path, e.to_string())
    }
}
