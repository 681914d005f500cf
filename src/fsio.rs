//! Every file lorascope writes appears atomically: written whole to a temporary sibling
//! (`.lorascope-*`), synced, then renamed into place. One helper for reports, repaired models,
//! cache entries, flags and the demo. A leaf.

use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// The prefix of lorascope's temporary files (a killed write may leave one behind).
pub const TEMP_PREFIX: &str = ".lorascope-";

/// A temporary file in `dir` that ends up with the permissions of any new file (0666 less the
/// umask), not tempfile's private 0600: reports and models are meant to be shared.
pub fn temp_in(dir: &Path) -> std::io::Result<NamedTempFile> {
    let mut b = tempfile::Builder::new();
    b.prefix(TEMP_PREFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o666));
    }
    b.tempfile_in(dir)
}

/// The folder a path's file goes in (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Syncs a complete temporary file and renames it to `path` (replacing what is there).
pub fn commit(tmp: NamedTempFile, path: &Path) -> std::io::Result<()> {
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Writes `contents` to `path` atomically (the caller chose the path: replacing is intended).
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = temp_in(folder_of(path))?;
    tmp.write_all(contents)?;
    commit(tmp, path)
}

/// Writes `contents` as `<dir>/<stem>.<ext>`, or `<stem>-2.<ext>`, …: never over an existing
/// file (the rename refuses to clobber), atomically.
pub fn write_new(dir: &Path, stem: &str, ext: &str, contents: &[u8]) -> std::io::Result<PathBuf> {
    let mut tmp = temp_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    for n in 1..10_000 {
        let name = if n == 1 {
            format!("{stem}.{ext}")
        } else {
            format!("{stem}-{n}.{ext}")
        };
        let path = dir.join(name);
        match tmp.persist_noclobber(&path) {
            Ok(_) => return Ok(path),
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = e.file,
            Err(e) => return Err(e.error),
        }
    }
    Err(std::io::Error::other("no free file name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_appear_whole_and_new_names_never_clobber() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            write_new(d.path(), "a", "txt", b"3").unwrap(),
            d.path().join("a-2.txt")
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // No temporary file is left.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(TEMP_PREFIX)),
            "{names:?}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_ne!(
                mode & 0o044,
                0,
                "a written file is readable by others (umask aside)"
            );
        }
        assert_eq!(folder_of(Path::new("x.html")), Path::new("."));
    }
}
