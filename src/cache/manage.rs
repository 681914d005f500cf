//! Looking after the cache folder: what it holds per base, removing the least recently used,
//! checking every file. Safe beside running scans and workers: only whole files are removed,
//! a reader that had one mapped keeps its pages, and one that finds it gone recomputes it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{is_sound, read_label, Cache, Key, HEAD, MAGIC, RECORD_MAGIC};

/// One stored entry (`.lsd`) or record (`.lsr`).
#[derive(Debug, Clone)]
pub struct Stored {
    pub path: PathBuf,
    pub size: u64,
    /// Last used: written, or read (renewed at most hourly).
    pub used: SystemTime,
    /// The base it was computed for, if its head says (read by [`Cache::usage`] only).
    pub group: Option<u128>,
}

/// What the cache holds for one base.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUsage {
    pub group: Option<u128>,
    /// The base's path as last opened, if known.
    pub label: Option<String>,
    pub entries: usize,
    pub size: u64,
    pub last_used: SystemTime,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pruned {
    pub removed: usize,
    pub removed_bytes: u64,
    pub kept: usize,
    pub kept_bytes: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verified {
    pub checked: usize,
    pub bytes: u64,
    /// Damaged, or not their name's key: removed.
    pub removed: Vec<PathBuf>,
}

fn is_stored(name: &str) -> bool {
    name.ends_with(".lsd") || name.ends_with(".lsr")
}

/// The key a stored file's name gives (`<32 hex>.lsd`).
fn key_of(path: &std::path::Path) -> Option<Key> {
    let stem = path.file_stem()?.to_str()?;
    (stem.len() == 32)
        .then(|| u128::from_str_radix(stem, 16).ok().map(Key))
        .flatten()
}

fn group_of(path: &std::path::Path) -> Option<u128> {
    let mut head = [0u8; HEAD];
    let mut f = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    (&head[..8] == MAGIC || &head[..8] == RECORD_MAGIC)
        .then(|| u128::from_le_bytes(head[8..].try_into().unwrap()))
        .filter(|g| *g != 0)
}

impl Cache {
    /// Every entry and record in the folder, oldest use first.
    pub fn stored(&self) -> Vec<Stored> {
        self.listed(false)
    }

    /// [`stored`](Self::stored), reading each file's head for its base when `groups`.
    fn listed(&self, groups: bool) -> Vec<Stored> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut v: Vec<Stored> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| is_stored(&e.file_name().to_string_lossy()))
            .filter_map(|e| {
                // Gone between listing and looking (a concurrent prune): not there.
                let m = e.metadata().ok()?;
                Some(Stored {
                    group: groups.then(|| group_of(&e.path())).flatten(),
                    path: e.path(),
                    size: m.len(),
                    used: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                })
            })
            .collect();
        v.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
        v
    }

    /// Entries and their total size.
    pub fn info(&self) -> (usize, u64) {
        let s = self.stored();
        (s.len(), s.iter().map(|s| s.size).sum())
    }

    /// What each base's files take, the most recently used base first.
    pub fn usage(&self) -> Vec<BaseUsage> {
        let mut by: BTreeMap<Option<u128>, BaseUsage> = BTreeMap::new();
        for s in self.listed(true) {
            let u = by.entry(s.group).or_insert_with(|| BaseUsage {
                group: s.group,
                label: s.group.and_then(|g| read_label(&self.label_path(g)?, g)),
                entries: 0,
                size: 0,
                last_used: SystemTime::UNIX_EPOCH,
            });
            u.entries += 1;
            u.size += s.size;
            u.last_used = u.last_used.max(s.used);
        }
        let mut v: Vec<BaseUsage> = by.into_values().collect();
        v.sort_by_key(|u| std::cmp::Reverse(u.last_used));
        v
    }

    /// Removes files unused for longer than `older_than`, then the least recently used until
    /// the rest fit in `max_size` bytes; and what killed runs of this host left behind.
    pub fn prune(
        &self,
        max_size: Option<u64>,
        older_than: Option<Duration>,
    ) -> std::io::Result<Pruned> {
        let Some(dir) = &self.dir else {
            return Ok(Pruned::default());
        };
        crate::fsio::clean_stale(dir);
        let now = SystemTime::now();
        let stored = self.stored();
        let mut total: u64 = stored.iter().map(|s| s.size).sum();
        let mut out = Pruned::default();
        for s in &stored {
            let old =
                older_than.is_some_and(|d| now.duration_since(s.used).unwrap_or_default() > d);
            let over = max_size.is_some_and(|m| total > m);
            if !(old || over) {
                out.kept += 1;
                out.kept_bytes += s.size;
                continue;
            }
            match std::fs::remove_file(&s.path) {
                Ok(()) => {}
                // Someone else removed it: as good.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            total -= s.size;
            out.removed += 1;
            out.removed_bytes += s.size;
        }
        self.remove_orphan_labels();
        Ok(out)
    }

    /// Labels of bases none of whose files are left.
    fn remove_orphan_labels(&self) {
        let Some(dir) = &self.dir else { return };
        let live: std::collections::HashSet<u128> =
            self.listed(true).iter().filter_map(|s| s.group).collect();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "lsb")
                && key_of(&p).is_some_and(|k| !live.contains(&k.0))
            {
                let _ = std::fs::remove_file(&p);
            }
        }
    }

    /// Reads every file through and checks it against its name's key; removes those that fail
    /// (a scan would recompute them anyway). `progress(checked, of)` after each.
    pub fn verify(&self, progress: &dyn Fn(usize, usize)) -> std::io::Result<Verified> {
        let mut out = Verified::default();
        let stored = self.stored();
        let total = stored.len();
        for s in stored {
            let ext = if s.path.extension().is_some_and(|x| x == "lsd") {
                "lsd"
            } else {
                "lsr"
            };
            let sound = match (key_of(&s.path), std::fs::File::open(&s.path)) {
                (Some(key), Ok(f)) => {
                    // SAFETY: entries are replaced by rename, never written in place.
                    match unsafe { memmap2::Mmap::map(&f) } {
                        Ok(m) => is_sound(Arc::new(m), ext, key),
                        // An empty file cannot be mapped: not an entry.
                        Err(_) => false,
                    }
                }
                (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
                _ => false,
            };
            out.checked += 1;
            out.bytes += s.size;
            if !sound {
                match std::fs::remove_file(&s.path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                out.removed.push(s.path);
            }
            progress(out.checked, total);
        }
        self.remove_orphan_labels();
        Ok(out)
    }

    /// A warning when the cache holds more than `limit` bytes, with how to shrink it.
    pub fn size_warning(&self, limit: u64) -> Option<String> {
        let (n, size) = self.info();
        (size > limit).then(|| {
            format!(
                "the cache {} holds {} in {n} files, above {}: `lorascope cache prune --max-size \
                 SIZE` removes the least recently used (LORASCOPE_CACHE_WARN_SIZE sets this \
                 limit, `off` silences it)",
                self.dir
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display(),
                human_bytes(size),
                human_bytes(limit)
            )
        })
    }
}

/// `1.5 GiB`, `12.0 MiB`, `512 B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut x = b as f64 / 1024.0;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    format!("{x:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::super::KeyBuilder;
    use super::*;
    use crate::spectral::Decomposition;

    fn entry(n: usize) -> Decomposition {
        Decomposition {
            sigma: vec![2.0; n],
            vectors: (0..n * n).map(|i| i as f32).collect(),
            dim: n,
            keep: n,
        }
    }

    fn age(path: &std::path::Path, secs: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn usage_is_per_base_and_prune_removes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Cache::open(dir.path());
        a.set_base(7, "/models/a");
        let mut b = Cache::open(dir.path());
        b.set_base(9, "/models/b");
        let keys: Vec<Key> = (0..4).map(|i| KeyBuilder::new().u128(i).finish()).collect();
        a.put(keys[0], &entry(8));
        a.put(keys[1], &entry(8));
        b.put(keys[2], &entry(8));
        b.put_record(keys[3], &[1; 16]);
        let size = std::fs::metadata(a.path(keys[0]).unwrap()).unwrap().len();
        // Used 3, 2, 1 days ago; the record now.
        for (i, d) in [3u64, 2, 1].iter().enumerate() {
            age(&a.path(keys[i]).unwrap(), d * 86400);
        }
        let u = a.usage();
        assert_eq!(u.len(), 2, "{u:?}");
        assert_eq!(u[0].label.as_deref(), Some("/models/b"));
        assert_eq!((u[0].entries, u[1].entries), (2, 2));
        assert_eq!(u[1].label.as_deref(), Some("/models/a"));
        assert_eq!(u[1].size, 2 * size);
        // A read renews an old entry's time: key 0 becomes the most recent of the three.
        assert!(a.get(keys[0]).is_some());
        // Down to about two entries' size: keys 1 and 2 go, oldest use first.
        let p = a.prune(Some(2 * size), None).unwrap();
        assert_eq!(p.removed, 2, "{p:?}");
        assert!(a.contains(keys[0]) && !a.contains(keys[1]) && !a.contains(keys[2]));
        assert_eq!(a.get_record(keys[3]).as_deref(), Some(&[1u8; 16][..]));
        // Base b has only its record left; --older-than takes nothing younger.
        assert_eq!(
            a.prune(None, Some(Duration::from_secs(3600)))
                .unwrap()
                .removed,
            0
        );
        age(&a.record_path(keys[3]).unwrap(), 7200);
        assert_eq!(
            a.prune(None, Some(Duration::from_secs(3600)))
                .unwrap()
                .removed,
            1
        );
        // b's label went with its last file.
        assert!(!a.label_path(9).unwrap().exists());
        assert!(a.label_path(7).unwrap().exists());
        assert_eq!(a.usage().len(), 1);
    }

    #[test]
    fn verify_removes_damaged_and_misnamed_files_and_keeps_sound_ones() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path());
        let keys: Vec<Key> = (0..3).map(|i| KeyBuilder::new().u128(i).finish()).collect();
        c.put(keys[0], &entry(4));
        c.put(keys[1], &entry(4));
        c.put_record(keys[2], b"remembered key!!");
        // One flipped byte deep in the vectors (contains() only checks the sizes).
        let p1 = c.path(keys[1]).unwrap();
        let mut b = std::fs::read(&p1).unwrap();
        let n = b.len();
        b[n - 30] ^= 1;
        std::fs::write(&p1, &b).unwrap();
        assert!(c.contains(keys[1]));
        // A sound entry under another key's name; an empty file.
        let moved = c.path(KeyBuilder::new().str("elsewhere").finish()).unwrap();
        std::fs::copy(c.path(keys[0]).unwrap(), &moved).unwrap();
        let empty = dir.path().join("v3").join(format!("{:032x}.lsr", 5));
        std::fs::write(&empty, b"").unwrap();
        let v = c.verify(&|_, _| {}).unwrap();
        assert_eq!(v.checked, 5);
        let mut removed = v.removed.clone();
        removed.sort();
        let mut want = vec![p1, moved, empty];
        want.sort();
        assert_eq!(removed, want);
        assert!(c.get(keys[0]).is_some());
        assert!(c.get_record(keys[2]).is_some());
        assert_eq!(c.verify(&|_, _| {}).unwrap().removed.len(), 0);
    }

    #[test]
    fn the_size_warning_names_the_limit_and_the_way_out() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(dir.path());
        c.put(KeyBuilder::new().str("x").finish(), &entry(8));
        assert_eq!(c.size_warning(1 << 20), None);
        let w = c.size_warning(100).unwrap();
        assert!(
            w.contains("above 100 B") && w.contains("cache prune"),
            "{w}"
        );
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
