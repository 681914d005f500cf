//! The persistent decomposition cache: content-addressed files, written atomically
//! (temp file + rename), each with a checksum of its key and content, so a damaged entry, or one
//! that is another key's, is recomputed, never trusted.
//!
//! Layout: `<dir>/v3/<32 hex digits>.lsd`, and `.lsr` for small records (a pair's content keys
//! remembered by its files' identities). Two processes computing the same entry both write a
//! complete temp file and rename it into place; whichever lands last wins, and both are whole.
//! So many workers on many machines may share one folder (`cache warm --shard`), and removing
//! an entry (`prune`) at any time only makes a reader recompute it.
//!
//! Every file names the base model it was computed for (its *group*: a hash of the base's
//! safetensors headers), and `<group>.lsb` holds that base's path, so that `cache info` can
//! tell what belongs to which base. A file's modification time is when it was last used:
//! reads renew it (at most hourly), and `prune` removes the least recently used first.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::spectral::{Decomposition, Vectors};

mod manage;
pub use manage::{human_bytes, BaseUsage, Pruned, Stored, Verified};

const MAGIC: &[u8; 8] = b"LSCDEC02";
const RECORD_MAGIC: &[u8; 8] = b"LSCREC02";
const LABEL_MAGIC: &[u8; 8] = b"LSCBAS01";
/// Magic, group: where every stored file's body starts.
const HEAD: usize = 24;
/// Entries' folder, by layout version; earlier versions' folders are removed by `clear`.
const VERSION_DIR: &str = "v3";
const OLD_VERSION_DIRS: [&str; 2] = ["v1", "v2"];
/// A read renews an entry's last-used time when it is older than this.
const TOUCH_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where the cache lives: `LORASCOPE_CACHE_DIR`, else `$XDG_CACHE_HOME/lorascope`, else
/// `~/.cache/lorascope`.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("LORASCOPE_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("lorascope")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/lorascope")))
}

pub use crate::key::{Key, KeyBuilder};

pub struct Cache {
    dir: Option<PathBuf>,
    writable: AtomicBool,
    warnings: Mutex<Vec<String>>,
    /// The base model what is written belongs to (0: not said).
    group: u128,
}

impl Cache {
    pub fn disabled() -> Cache {
        Cache::with_dir(None)
    }

    /// A cache in `dir`. If it cannot be created the cache is off, with a warning.
    pub fn open(dir: &Path) -> Cache {
        let d = dir.join(VERSION_DIR);
        match std::fs::create_dir_all(&d) {
            Ok(()) => Cache::with_dir(Some(d)),
            Err(e) => {
                let c = Cache::with_dir(None);
                c.warn(format!(
                    "cache {}: {e}; running without a cache",
                    dir.display()
                ));
                c
            }
        }
    }

    fn with_dir(dir: Option<PathBuf>) -> Cache {
        Cache {
            writable: AtomicBool::new(dir.is_some()),
            dir,
            warnings: Mutex::new(Vec::new()),
            group: 0,
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Files written from now on belong to base `group`, whose path `label` names in
    /// `cache info` (written once, if not there yet).
    pub fn set_base(&mut self, group: u128, label: &str) {
        self.group = group;
        let Some(path) = self.label_path(group) else {
            return;
        };
        if read_label(&path, group).as_deref() != Some(label) {
            let mut b = LABEL_MAGIC.to_vec();
            b.extend_from_slice(&group.to_le_bytes());
            b.extend_from_slice(label.as_bytes());
            self.write(&path, &seal(b, Key(group)));
        }
    }

    fn label_path(&self, group: u128) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{}.lsb", Key(group).hex())))
    }

    /// Whether files can still be written (false after a failed write: read-only, disk full).
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    fn warn(&self, w: String) {
        self.warnings.lock().unwrap().push(w);
    }

    /// Warnings gathered so far (drained).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap())
    }

    fn path(&self, key: Key) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{}.lsd", key.hex())))
    }

    pub fn get(&self, key: Key) -> Option<Decomposition> {
        let path = self.path(key)?;
        // Mapped, not read, and the vectors are used in place. Entries are replaced by rename and
        // never written in place, so the mapping cannot change under us. Populated in one call:
        // the checksum reads every page anyway.
        let file = std::fs::File::open(&path).ok()?;
        let bytes = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.ok()?;
        match decode(Arc::new(bytes), key) {
            Some(d) => {
                touch(&path, &file);
                Some(d)
            }
            None => {
                self.warn(format!(
                    "cache entry {} is damaged or not this key's (bad checksum or size); \
                     recomputing it",
                    path.display()
                ));
                None
            }
        }
    }

    pub fn put(&self, key: Key, d: &Decomposition) {
        if let Some(path) = self.path(key) {
            // Streamed, not built whole: the vectors would be in memory twice.
            self.write_with(&path, &mut |w| write_entry(w, d, key, self.group));
        }
    }

    /// Whether an entry is stored under `key`, as long as its sizes say (without reading it
    /// through: `verify` does that, and a reader recomputes a damaged one).
    pub fn contains(&self, key: Key) -> bool {
        let Some(path) = self.path(key) else {
            return false;
        };
        let Ok(mut file) = std::fs::File::open(&path) else {
            return false;
        };
        let mut head = [0u8; HEAD + 24];
        let whole = std::io::Read::read_exact(&mut file, &mut head).is_ok()
            && &head[..8] == MAGIC
            && entry_len(&head[HEAD..]) == file.metadata().ok().map(|m| m.len());
        if whole {
            touch(&path, &file);
        }
        whole
    }

    /// A small record stored under `key` (checksummed; a damaged one reads as absent).
    pub fn get_record(&self, key: Key) -> Option<Vec<u8>> {
        let b = std::fs::read(self.record_path(key)?).ok()?;
        unseal(&b, RECORD_MAGIC, HEAD + 16, key).map(|body| body[HEAD..].to_vec())
    }

    pub fn put_record(&self, key: Key, payload: &[u8]) {
        let Some(path) = self.record_path(key) else {
            return;
        };
        let mut b = RECORD_MAGIC.to_vec();
        b.extend_from_slice(&self.group.to_le_bytes());
        b.extend_from_slice(payload);
        self.write(&path, &seal(b, key));
    }

    fn record_path(&self, key: Key) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{}.lsr", key.hex())))
    }

    /// Writes `bytes` to `path` atomically (a complete temp file renamed into place).
    fn write(&self, path: &Path, bytes: &[u8]) {
        self.write_with(path, &mut |w| w.write_all(bytes))
    }

    /// [`write`](Self::write) of what `fill` writes.
    fn write_with(&self, path: &Path, fill: &mut dyn FnMut(&mut dyn Write) -> std::io::Result<()>) {
        if !self.writable.load(Ordering::Relaxed) {
            return;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        // Entries are checksummed: a crash loses one at worst, so no sync per entry.
        let res = crate::fsio::write_atomic_unsynced_with(path, fill);
        if let Err(e) = res {
            // Read-only or full disk: keep going without writing, say so once.
            if self.writable.swap(false, Ordering::Relaxed) {
                self.warn(format!(
                    "cannot write to cache {}: {e}; results will not be cached",
                    dir.display()
                ));
            }
        }
    }

    /// Remove every entry (and stray temp files). Returns how many files were removed.
    pub fn clear(&self) -> std::io::Result<usize> {
        let Some(dir) = &self.dir else { return Ok(0) };
        let mut n = 0;
        // Entries of earlier layouts are never read again.
        for old in OLD_VERSION_DIRS {
            let d = dir.parent().unwrap_or(dir).join(old);
            if d.is_dir() {
                n += std::fs::read_dir(&d)?.count();
                std::fs::remove_dir_all(&d)?;
            }
        }
        for e in std::fs::read_dir(dir)?.flatten() {
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".lsd")
                || name.ends_with(".lsr")
                || name.ends_with(".lsb")
                || name.starts_with(crate::fsio::TEMP_PREFIX)
                || name.starts_with(".tmp-")
            {
                std::fs::remove_file(&p)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// Renews a file's last-used time if it is older than [`TOUCH_AFTER`] (best effort: a
/// read-only cache keeps its times).
fn touch(path: &Path, file: &std::fs::File) {
    let now = std::time::SystemTime::now();
    let stale = file
        .metadata()
        .and_then(|m| m.modified())
        .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > TOUCH_AFTER);
    if stale {
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
            let _ = f.set_modified(now);
        }
    }
}

/// The length of a whole entry from its sizes (`dim`, `keep`, `ns`: the 24 bytes after the
/// head), if they are an entry's.
fn entry_len(sizes: &[u8]) -> Option<u64> {
    let u = |i: usize| u64::from_le_bytes(sizes[8 * i..8 * i + 8].try_into().unwrap());
    let (dim, keep, ns) = (u(0), u(1), u(2));
    // A thin SVD keeps at most p = ns vectors, each of dim ≥ p entries: anything else is not an
    // entry (found by fuzzing: dim 0 with keep 2^62 passed the size check, and every loop over
    // the kept vectors then ran for ever).
    if keep > ns || dim < keep {
        return None;
    }
    (HEAD as u64 + 24 + 16)
        .checked_add(ns.checked_mul(8)?)?
        .checked_add(dim.checked_mul(keep)?.checked_mul(4)?)
}

/// The base named in a label file, if it is whole.
fn read_label(path: &Path, group: u128) -> Option<String> {
    let b = std::fs::read(path).ok()?;
    let body = unseal(&b, LABEL_MAGIC, HEAD + 16, Key(group))?;
    String::from_utf8(body[HEAD..].to_vec()).ok()
}

/// Writes `d`'s entry as [`encode`] lays it out, hashing as it goes.
fn write_entry(w: &mut dyn Write, d: &Decomposition, key: Key, group: u128) -> std::io::Result<()> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&key.0.to_le_bytes());
    let mut put = |w: &mut dyn Write, b: &[u8]| {
        h.update(b);
        w.write_all(b)
    };
    let mut head = MAGIC.to_vec();
    head.extend_from_slice(&group.to_le_bytes());
    for x in [d.dim as u64, d.keep as u64, d.sigma.len() as u64] {
        head.extend_from_slice(&x.to_le_bytes());
    }
    for s in &d.sigma {
        head.extend_from_slice(&s.to_le_bytes());
    }
    put(w, &head)?;
    let mut buf = Vec::with_capacity(1 << 16);
    for chunk in d.vectors.chunks(1 << 14) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
        put(w, &buf)?;
    }
    w.write_all(&h.digest128().to_le_bytes())
}

#[cfg(test)]
fn encode(d: &Decomposition, key: Key, group: u128) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEAD + 24 + 8 * d.sigma.len() + 4 * d.vectors.len() + 16);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&group.to_le_bytes());
    for x in [d.dim as u64, d.keep as u64, d.sigma.len() as u64] {
        b.extend_from_slice(&x.to_le_bytes());
    }
    for s in &d.sigma {
        b.extend_from_slice(&s.to_le_bytes());
    }
    for v in d.vectors.iter() {
        b.extend_from_slice(&v.to_le_bytes());
    }
    seal(b, key)
}

/// The checksum of a stored file: of its key and its body, so a file that is another key's
/// (swapped, copied over) fails it like a damaged one.
fn checksum(key: Key, body: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&key.0.to_le_bytes());
    h.update(body);
    h.digest128()
}

/// Appends the checksum every stored file ends with.
fn seal(mut b: Vec<u8>, key: Key) -> Vec<u8> {
    let sum = checksum(key, &b);
    b.extend_from_slice(&sum.to_le_bytes());
    b
}

/// The body (from its magic on) of a stored file that starts with `magic`, has at least `min`
/// bytes and a matching checksum.
fn unseal<'a>(b: &'a [u8], magic: &[u8; 8], min: usize, key: Key) -> Option<&'a [u8]> {
    if b.len() < min || &b[..8] != magic {
        return None;
    }
    let (body, sum) = b.split_at(b.len() - 16);
    (checksum(key, body).to_le_bytes() == sum).then_some(body)
}

/// An entry's `body` (from its magic on) sealed under a fixed key and read back: the
/// structure parser past the checksum, for fuzzing ([`crate::fuzz`]).
#[doc(hidden)]
pub fn decode_body(body: &[u8]) -> Option<Decomposition> {
    let key = KeyBuilder::new().str("fuzz").finish();
    decode(Arc::new(seal(body.to_vec(), key)), key)
}

/// Whether a stored file (`.lsd` entry or `.lsr` record, by `ext`) is whole and `key`'s.
fn is_sound(bytes: Arc<dyn AsRef<[u8]> + Send + Sync>, ext: &str, key: Key) -> bool {
    match ext {
        "lsd" => decode(bytes, key).is_some(),
        _ => unseal((*bytes).as_ref(), RECORD_MAGIC, HEAD + 16, key).is_some(),
    }
}

fn decode(bytes: Arc<dyn AsRef<[u8]> + Send + Sync>, key: Key) -> Option<Decomposition> {
    let b = (*bytes).as_ref();
    let body = unseal(b, MAGIC, HEAD + 24 + 16, key)?;
    let u = |i: usize| {
        u64::from_le_bytes(body[HEAD + 8 * i..HEAD + 8 + 8 * i].try_into().unwrap()) as usize
    };
    let (dim, keep, ns) = (u(0), u(1), u(2));
    if entry_len(&body[HEAD..HEAD + 24]) != Some(b.len() as u64) {
        return None;
    }
    let nv = dim * keep;
    let start = HEAD + 24;
    let sigma = body[start..start + 8 * ns]
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    // The vectors start 48 + 8·ns bytes in: 4-aligned in a mapping, so used where they lie.
    let vectors = Vectors::from_le_bytes(bytes, start + 8 * ns, nv)?;
    Some(Decomposition {
        sigma,
        vectors,
        dim,
        keep,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Decomposition {
        Decomposition {
            sigma: vec![3.0, 2.0, 1.0],
            vectors: (0..6).map(|i| i as f32 * 0.5).collect(),
            dim: 3,
            keep: 2,
        }
    }

    #[test]
    fn an_entry_keeping_more_vectors_than_it_has_values_or_entries_is_refused() {
        // The fuzzer's: dim 0, keep 0xf9ffffff00300000 of 2 values; no vector bytes needed.
        let mut body = MAGIC.to_vec();
        body.extend(0u128.to_le_bytes());
        for x in [0u64, 0xf9ff_ffff_0030_0000, 2] {
            body.extend(x.to_le_bytes());
        }
        body.extend([1.0f64, 0.5].iter().flat_map(|x| x.to_le_bytes()));
        assert_eq!(decode_body(&body), None);
        // Three values, two vectors of dimension 1 < 2: not a thin SVD either.
        let mut body = MAGIC.to_vec();
        body.extend(0u128.to_le_bytes());
        for x in [1u64, 2, 3] {
            body.extend(x.to_le_bytes());
        }
        body.extend([3.0f64, 2.0, 1.0].iter().flat_map(|x| x.to_le_bytes()));
        body.extend([1.0f32, 1.0].iter().flat_map(|x| x.to_le_bytes()));
        assert_eq!(decode_body(&body), None);
        // A whole one still reads.
        let d = sample();
        let key = KeyBuilder::new().str("fuzz").finish();
        let sealed = encode(&d, key, 0);
        assert_eq!(decode_body(&sealed[..sealed.len() - 16]), Some(d));
    }

    #[test]
    fn a_streamed_entry_is_byte_for_byte_the_built_one() {
        let mut d = sample();
        // Past one chunk of the stream.
        d.vectors = (0..40_000).map(|i| i as f32).collect();
        d.dim = 20_000;
        let key = KeyBuilder::new().str("s").finish();
        let mut out = Vec::new();
        write_entry(&mut out, &d, key, 5).unwrap();
        assert_eq!(out, encode(&d, key, 5));
    }

    #[test]
    fn round_trip_and_every_single_byte_corruption_is_caught() {
        let d = sample();
        let key = KeyBuilder::new().str("k").finish();
        let b = encode(&d, key, 0);
        assert_eq!(decode(Arc::new(b.clone()), key), Some(d));
        // Another key's file reads as absent: entries carry their key.
        let other = KeyBuilder::new().str("other").finish();
        assert_eq!(decode(Arc::new(b.clone()), other), None);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert_eq!(
                decode(Arc::new(c), key),
                None,
                "flip at byte {i} went unnoticed"
            );
        }
        for n in 0..b.len() {
            let t = b[..n].to_vec();
            assert_eq!(
                decode(Arc::new(t), key),
                None,
                "truncation to {n} went unnoticed"
            );
        }
    }

    #[test]
    fn records_round_trip_and_a_damaged_one_reads_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path());
        let key = KeyBuilder::new().str("r").finish();
        assert_eq!(cache.get_record(key), None);
        cache.put_record(key, b"0123456789abcdef0123456789abcdef");
        assert_eq!(
            cache.get_record(key).as_deref(),
            Some(&b"0123456789abcdef0123456789abcdef"[..])
        );
        let path = cache.record_path(key).unwrap();
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 1;
            std::fs::write(&path, &b).unwrap();
            assert_eq!(
                cache.get_record(key),
                None,
                "flip at byte {i} went unnoticed"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert_eq!(cache.get_record(key), None, "truncation went unnoticed");
        // Counted and cleared with the decompositions.
        std::fs::write(&path, &good).unwrap();
        assert_eq!(cache.info().0, 1);
        assert_eq!(cache.clear().unwrap(), 1);
        assert_eq!(cache.get_record(key), None);
    }

    #[test]
    fn entries_read_back_in_place_from_their_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path());
        let key = KeyBuilder::new().str("x").finish();
        assert_eq!(cache.get(key), None);
        cache.put(key, &sample());
        let got = cache.get(key).unwrap();
        assert_eq!(got, sample());
        assert!(
            got.vectors.is_shared(),
            "vectors were copied out of the mapping"
        );
        // A clone shares the mapping; it outlives the cache and the file.
        let again = got.clone();
        drop(got);
        cache.clear().unwrap();
        drop(cache);
        assert_eq!(again.column(1), &[1.5, 2.0, 2.5]);
        assert!(cache_is_empty(dir.path()));
    }

    fn cache_is_empty(dir: &Path) -> bool {
        std::fs::read_dir(dir.join(VERSION_DIR))
            .unwrap()
            .next()
            .is_none()
    }

    #[test]
    fn swapped_entries_are_recomputed_not_used_and_clear_removes_old_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path());
        let (ka, kb) = (
            KeyBuilder::new().str("a").finish(),
            KeyBuilder::new().str("b").finish(),
        );
        let mut other = sample();
        other.sigma[0] = 9.0;
        cache.put(ka, &sample());
        cache.put(kb, &other);
        let (pa, pb) = (cache.path(ka).unwrap(), cache.path(kb).unwrap());
        let tmp = pa.with_extension("swap");
        std::fs::rename(&pa, &tmp).unwrap();
        std::fs::rename(&pb, &pa).unwrap();
        std::fs::rename(&tmp, &pb).unwrap();
        assert_eq!(cache.get(ka), None);
        assert_eq!(cache.get(kb), None);
        let w = cache.take_warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("not this key's"), "{w:?}");
        // A folder of an earlier layout goes with `clear`.
        std::fs::create_dir_all(dir.path().join("v1")).unwrap();
        std::fs::write(dir.path().join("v1/old.lsd"), b"x").unwrap();
        assert!(cache.clear().unwrap() >= 3);
        assert!(!dir.path().join("v1").exists());
    }

    #[test]
    fn keys_separate_parts() {
        let a = KeyBuilder::new().str("ab").str("c").finish();
        let b = KeyBuilder::new().str("a").str("bc").finish();
        assert_ne!(a, b);
    }
}
