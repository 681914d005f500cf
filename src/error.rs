//! One error type for the engine. Every variant renders as a single line that names the file
//! (and tensor) and the problem, because that line is what the CLI prints before exiting.

use std::path::{Path, PathBuf};

#[derive(Debug)]
pub enum Error {
    /// Bad or unreadable input: exit code 2.
    Input {
        path: PathBuf,
        tensor: Option<String>,
        msg: String,
    },
    /// Inputs that are each fine but do not fit together (adapter for another base, shape
    /// mismatch, ambiguous pairing): exit code 2.
    Mismatch(String),
    /// A computation failed on valid input (NaN weights, SVD did not converge).
    Compute(String),
    /// Invalid option value given by the user.
    Usage(String),
    /// A bug: code that panicked, contained (see [`contain`]) so that only its matrix fails.
    Internal(String),
}

/// Every error is one line with no control characters, whatever names a file carried (a shard
/// named with a newline in an index split its error in two, found by fuzzing).
impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw = match self {
            Error::Input { path, tensor, msg } => format!(
                "{}: {}{msg}",
                path.display(),
                tensor
                    .as_ref()
                    .map(|t| format!("tensor `{t}`: "))
                    .unwrap_or_default()
            ),
            Error::Mismatch(m) | Error::Compute(m) | Error::Usage(m) => m.clone(),
            Error::Internal(m) => {
                format!("internal error (a bug in lorascope; please report it): {m}")
            }
        };
        f.write_str(&escape_controls(&raw))
    }
}

impl std::error::Error for Error {}

/// Text from files as it is shown: control characters (line breaks, escape sequences) written
/// as `\u{1b}`, so no name can break a line or drive the terminal. The one place that decides it.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    let mut s = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            s.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            s.push(c);
        }
    }
    s.into()
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

thread_local! {
    static PANICKED_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// For a panic hook on threads whose panics are contained: keeps where the panic happened for
/// [`contain`]'s message instead of printing it (over the explorer's screen).
pub fn note_panic(info: &std::panic::PanicHookInfo<'_>) {
    let at = info
        .location()
        .map(|l| format!(" (at {}:{})", l.file(), l.line()))
        .unwrap_or_default();
    PANICKED_AT.with(|p| *p.borrow_mut() = Some(at));
}

/// Runs `f`, turning a panic inside it into [`Error::Internal`]: a bug then fails one matrix (its
/// line of a scan, its row in the explorer) instead of ending a long scan or leaving the
/// explorer with a worker gone and its matrix pending for ever.
pub fn contain<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".to_string());
        let at = PANICKED_AT
            .with(|p| p.borrow_mut().take())
            .unwrap_or_default();
        Err(Error::Internal(format!("{msg}{at}")))
    })
}

/// Test scaffolding: panics when the environment variable `LORASCOPE_TEST_PANIC` names `point` (a
/// matrix, or `ui`), so tests can check what a bug there does to the user.
pub fn panic_if_asked(point: &str) {
    // Read once: this is on every matrix's path. Compiled into release builds too, so that
    // `cargo test --release` tests the same binary behaviour as debug builds.
    static ASKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let asked = ASKED.get_or_init(|| std::env::var("LORASCOPE_TEST_PANIC").ok());
    if asked.as_deref() == Some(point) {
        panic!("LORASCOPE_TEST_PANIC at {point}");
    }
}

/// Test scaffolding: stops for good (until killed) when `LORASCOPE_TEST_STOP` names `point`, so
/// tests can kill a run in the middle of a write and see what it leaves.
pub fn stop_if_asked(point: &str) {
    if std::env::var("LORASCOPE_TEST_STOP").ok().as_deref() == Some(point) {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_error_with_its_message() {
        let e = contain::<()>(|| panic!("index {} out of range", 7)).unwrap_err();
        assert!(
            matches!(&e, Error::Internal(m) if m == "index 7 out of range"),
            "{e}"
        );
        assert!(e
            .to_string()
            .starts_with("internal error (a bug in lorascope"));
        // Results and errors pass through unchanged.
        assert_eq!(contain(|| Ok(3)).unwrap(), 3);
        let e = contain::<()>(|| Err(Error::Compute("no".into()))).unwrap_err();
        assert!(matches!(e, Error::Compute(_)));
    }
}
