//! Every file lorascope writes appears atomically: written whole to a temporary sibling
//! (`.lorascope-*`), synced, then renamed into place. One helper for reports, repaired models,
//! cache entries, flags and the demo. A leaf.

use std::io::Write;
use std::path::{Path, PathBuf};

use tempfile::{NamedTempFile, TempDir};

/// The prefix of lorascope's temporary files and folders (a killed write may leave one behind).
pub const TEMP_PREFIX: &str = ".lorascope-";

/// This machine's name, as temporaries carry it (read once).
fn host() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let n = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        let name = if ok {
            String::from_utf8_lossy(&buf[..n]).into_owned()
        } else {
            String::new()
        };
        // A name part must not hold the separator or a path's.
        name.replace(['-', '/'], "_")
    })
}

/// `.lorascope-<host>-<pid>-`: a later run can tell a killed run's leftovers (its process gone
/// from this host) from a live run's, even in a folder shared between machines.
fn temp_prefix() -> String {
    format!("{TEMP_PREFIX}{}-{}-", host(), std::process::id())
}

/// A builder for lorascope's temporaries, with the permissions of anything new (`mode` less
/// the umask), not tempfile's private ones: reports and models are meant to be shared.
fn temp_builder(prefix: &str, mode: u32) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

/// A temporary file in `dir`, to fill and then [`commit`].
pub fn temp_in(dir: &Path) -> std::io::Result<NamedTempFile> {
    temp_builder(&temp_prefix(), 0o666).tempfile_in(dir)
}

/// A temporary folder in `dir`, to fill and then [`commit_dir`]; removed if dropped.
pub fn temp_dir_in(dir: &Path) -> std::io::Result<TempDir> {
    temp_builder(&temp_prefix(), 0o777).tempdir_in(dir)
}

/// Writes a whole file inside a temporary folder, synced (the folder's rename publishes it).
pub fn write_synced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(contents)?;
    f.sync_all()
}

/// Renames a complete temporary folder to `path`. An existing `path` (the caller decided it may
/// go) is swapped with it in one step where the system can (Linux), else moved aside first;
/// the old one is removed once the new one is in place. Killed at any point, `path` holds the
/// old or the new folder, and what is left over carries lorascope's temporary name.
pub fn commit_dir(tmp: TempDir, path: &Path) -> std::io::Result<()> {
    let parent = folder_of(path);
    let tmp = tmp.keep();
    let result = if std::fs::symlink_metadata(path).is_ok() {
        replace_dir(&tmp, path)
    } else {
        std::fs::rename(&tmp, path)
    };
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .or(Ok(()))
}

/// Puts folder `new` at `path`, where something is; afterwards `new` holds the old content
/// (or nothing) and is removed.
fn replace_dir(new: &Path, path: &Path) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(std::io::Error::other);
        let (a, b) = (c(new)?, c(path)?);
        // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them as given.
        let r = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                a.as_ptr(),
                libc::AT_FDCWD,
                b.as_ptr(),
                libc::RENAME_EXCHANGE,
            )
        };
        if r == 0 {
            return std::fs::remove_dir_all(new).or_else(|_| std::fs::remove_file(new));
        }
    }
    // No exchange: the old one goes aside (under a temporary name), the new one in.
    let mut aside = new.as_os_str().to_owned();
    aside.push(".old");
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    if let Err(e) = std::fs::rename(new, path) {
        let _ = std::fs::rename(&aside, path);
        return Err(e);
    }
    std::fs::remove_dir_all(&aside).or_else(|_| std::fs::remove_file(&aside))
}

/// Removes the temporaries lorascope runs on this host left in `dir` when killed (their
/// process is gone), and returns them. Others' — live runs, other hosts — are left alone.
pub fn clean_stale(dir: &Path) -> Vec<PathBuf> {
    let ours = format!("{TEMP_PREFIX}{}-", host());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&ours)
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        let p = e.path();
        let gone = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if gone.is_ok() {
            removed.push(p);
        }
    }
    removed
}

fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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

/// [`write_atomic`] without waiting for the disk, for files whose readers verify them (the
/// cache's checksummed entries): after a crash such a file may be missing or empty, never
/// another's, and is recomputed. Syncing each of thousands of small entries cost ~1 ms apiece.
pub fn write_atomic_unsynced(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_atomic_unsynced_with(path, &mut |w| w.write_all(contents))
}

/// [`write_atomic_unsynced`] of what `fill` writes, buffered: a large file is never whole in
/// memory (a cache entry of a 28672×8192 base matrix is 0.9 GiB).
pub fn write_atomic_unsynced_with(
    path: &Path,
    fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = temp_in(folder_of(path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp);
    fill(&mut w)?;
    let tmp = w.into_inner().map_err(|e| e.into_error())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Where a file the user named (`-o PATH`) is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A regular file or a new path: replaced atomically. A symlink's target is replaced and
    /// the link kept.
    Replace(PathBuf),
    /// A device, a FIFO or `/dev/fd/N`: written through, never replaced by a regular file (as
    /// root, renaming over `/dev/null` would replace the system's).
    Through(PathBuf),
}

/// What writing to `path` means (see [`Output`]); a folder is an error.
pub fn output(path: &Path) -> std::io::Result<Output> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(std::io::Error::other("is a folder")),
        Ok(m) if m.is_file() => Ok(Output::Replace(std::fs::canonicalize(path)?)),
        Ok(_) => Ok(Output::Through(path.to_path_buf())),
        // A dangling symlink: its target is created.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    let t = std::fs::read_link(path)?;
                    Ok(Output::Replace(folder_of(path).join(t)))
                }
                _ => Ok(Output::Replace(path.to_path_buf())),
            }
        }
        Err(e) => Err(e),
    }
}

/// Writes `contents` to a path the user named: atomically for a file, through for a device or a
/// FIFO, with write errors reported (a full disk, `/dev/full`).
pub fn write_output(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    match output(path)? {
        Output::Replace(p) => write_atomic(&p, contents),
        Output::Through(p) => {
            let mut f = std::fs::OpenOptions::new().write(true).open(p)?;
            f.write_all(contents)?;
            f.flush()
        }
    }
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

    #[cfg(unix)]
    #[test]
    fn outputs_follow_symlinks_and_go_through_devices_and_fifos() {
        let d = tempfile::tempdir().unwrap();
        // A symlink: its target is replaced, the link stays a link.
        let real = d.path().join("real.md");
        std::fs::write(&real, "old").unwrap();
        let link = d.path().join("link.md");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_output(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        // A dangling symlink creates its target.
        let dangling = d.path().join("dangling.md");
        std::os::unix::fs::symlink("made.md", &dangling).unwrap();
        write_output(&dangling, b"made").unwrap();
        assert_eq!(std::fs::read(d.path().join("made.md")).unwrap(), b"made");
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());
        // A FIFO gets the bytes through it and stays a FIFO.
        let fifo = d.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        write_output(&fifo, b"through").unwrap();
        assert_eq!(reader.join().unwrap(), b"through");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
        assert_eq!(
            output(Path::new("/dev/null")).unwrap(),
            Output::Through("/dev/null".into())
        );
        // A device's write errors are reported (ENOSPC).
        if Path::new("/dev/full").exists() {
            assert!(write_output(Path::new("/dev/full"), b"x").is_err());
        }
        assert!(write_output(d.path(), b"x").is_err(), "a folder");
    }

    #[test]
    fn a_folder_replaces_another_whole_and_stale_temporaries_are_told_from_live_ones() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("model");
        let fill = |text: &str| {
            let t = temp_dir_in(d.path()).unwrap();
            write_synced(&t.path().join("a.txt"), text.as_bytes()).unwrap();
            t
        };
        commit_dir(fill("one"), &out).unwrap();
        commit_dir(fill("two"), &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "two");
        let names = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(d.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(), ["model"], "nothing left over");
        // A killed run's temporary (its process gone), a live one's, another host's.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let h = host();
        let killed = d.path().join(format!("{TEMP_PREFIX}{h}-{dead}-x1"));
        let live = d
            .path()
            .join(format!("{TEMP_PREFIX}{h}-{}-x2", std::process::id()));
        let other = d
            .path()
            .join(format!("{TEMP_PREFIX}elsewhere_{h}-{dead}-x3"));
        std::fs::create_dir(&killed).unwrap();
        std::fs::write(killed.join("model.safetensors"), "partial").unwrap();
        std::fs::write(&live, "").unwrap();
        std::fs::write(&other, "").unwrap();
        assert_eq!(clean_stale(d.path()), std::slice::from_ref(&killed));
        assert!(!killed.exists() && live.exists() && other.exists());
    }
}
