//! One memory-mapped safetensors file: header parsed and validated at open, data untouched
//! until a tensor is asked for.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use super::dtype::{self, Element};
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Absolute byte range in the file.
    pub start: usize,
    pub end: usize,
}

pub struct StFile {
    pub path: PathBuf,
    /// Declared before `mmap`: dropped, so unwatched, before the range is unmapped.
    region: super::fault::Region,
    mmap: Mmap,
    /// Kept open to see the file shrink under the map ([`StFile::check_intact`]).
    file: File,
    pub tensors: BTreeMap<String, TensorInfo>,
    /// xxh3-128 of the header bytes: identifies the file cheaply in reports.
    pub header_hash: u128,
    pub size: u64,
    /// Who the file is without reading it (see [`identity`]), `None` where that is not safe.
    pub identity: Option<u128>,
}

/// A file's identity from its metadata: device, inode, size, and modification and change times
/// (nanoseconds; the change time cannot be set back, so a rewrite or a copy in place gets a new
/// one). Equal identities mean equal bytes, which lets a re-run skip hashing the weights. `None`
/// for a file changed in the last two seconds, which may still be being written (a second
/// write within the clock's tick would keep every field), and off Unix.
fn identity(meta: &std::fs::Metadata) -> Option<u128> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs() as i64;
        if now - meta.mtime().max(meta.ctime()) < 2 {
            return None;
        }
        let fields = [
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime() as u64,
            meta.mtime_nsec() as u64,
            meta.ctime() as u64,
            meta.ctime_nsec() as u64,
        ];
        let bytes: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
        Some(
            crate::key::KeyBuilder::new()
                .str("file")
                .bytes(&bytes)
                .finish()
                .0,
        )
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

impl std::fmt::Debug for StFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StFile({})", self.path.display())
    }
}

const N_LEN: usize = 8;

impl StFile {
    pub fn open(path: &Path) -> Result<Arc<StFile>> {
        /// The largest header safetensors reads (its `MAX_HEADER_SIZE`).
        const MAX_HEADER: u64 = 100_000_000;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let stat = file.metadata().map_err(|e| Error::io(path, e))?;
        let size = stat.len();
        if size < N_LEN as u64 {
            return Err(Error::file(
                path,
                format!("truncated: {size} bytes, too short for a safetensors header"),
            ));
        }
        // SAFETY: the map is read-only and never outlives the file. A file truncated while
        // mapped raises SIGBUS on the next read past its new end; the region below turns that
        // into zeros and a fault that every read checks (`with_bytes`), so it becomes an error
        // naming the file. Bytes rewritten in place are not detected.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let region = super::fault::Region::watch(mmap.as_ptr(), mmap.len());
        let n = u64::from_le_bytes(mmap[..N_LEN].try_into().unwrap());
        if n > size - N_LEN as u64 {
            return Err(Error::file(
                path,
                format!("header length {n} runs past the end of the file ({size} bytes): truncated or not safetensors"),
            ));
        }
        // safetensors' own limit, checked before parsing: a huge header would be parsed whole
        // first (a 150 MB one took 5 GB of memory before the crate refused it).
        if n > MAX_HEADER {
            return Err(Error::file(
                path,
                format!("header of {n} bytes is larger than safetensors allows ({MAX_HEADER})"),
            ));
        }
        let header = &mmap[N_LEN..N_LEN + n as usize];
        let text = std::str::from_utf8(header)
            .map_err(|e| Error::file(path, format!("header is not UTF-8: {e}")))?;
        let raw: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::file(path, format!("header is not valid JSON: {e}")))?;
        // The crate validates offsets, sizes and coverage; we only improve the wording.
        let (_, meta) = SafeTensors::read_metadata(&mmap[..])
            .map_err(|e| Error::file(path, describe(&e, &raw, size, n as usize)))?;
        let base = N_LEN + n as usize;
        let tensors = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let (s, e) = info.data_offsets;
                (
                    name,
                    TensorInfo {
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: base + s,
                        end: base + e,
                    },
                )
            })
            .collect();
        let header_hash = xxhash_rust::xxh3::xxh3_128(header);
        if region.faulted() {
            return Err(changed(path));
        }
        Ok(Arc::new(StFile {
            path: path.to_path_buf(),
            region,
            mmap,
            file,
            tensors,
            header_hash,
            size,
            identity: identity(&stat),
        }))
    }

    /// An error if a read already ran past the file's end, or the file is now shorter than
    /// when it was opened (being rewritten, or
    /// truncated): reading its mapped pages past the new end would kill the process (SIGBUS).
    /// One fstat, far below the cost of reading a tensor.
    pub fn check_intact(&self) -> Result<()> {
        if self.region.faulted() {
            return Err(changed(&self.path));
        }
        let now = self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len();
        if now < self.size {
            return Err(Error::file(
                &self.path,
                format!(
                    "shrank from {} to {now} bytes while lorascope was reading it (was it being \
                     rewritten?)",
                    self.size
                ),
            ));
        }
        Ok(())
    }

    /// `f` on a tensor's stored bytes, read through the map while the file is whole: checked
    /// before ([`check_intact`](Self::check_intact)), and after for a truncation during the
    /// read (see [`super::fault`]), in which case what `f` saw was not the file and its result
    /// is dropped. Every read of tensor bytes goes through here.
    pub fn with_bytes<R>(&self, info: &TensorInfo, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
        self.check_intact()?;
        let r = f(&self.mmap[info.start..info.end]);
        if self.region.faulted() {
            return Err(changed(&self.path));
        }
        Ok(r)
    }

    /// Decode a whole tensor. Unsupported dtypes are reported here, not at open.
    pub fn decode<T: Element>(&self, name: &str) -> Result<Vec<T>> {
        self.decode_into(name, Vec::new())
    }

    /// [`decode`](Self::decode) into a recycled buffer: its pages are already mapped, where a
    /// fresh one costs the kernel a zeroing pass (measured: 14 % of a warm 7B scan).
    pub fn decode_into<T: Element>(&self, name: &str, buf: Vec<T>) -> Result<Vec<T>> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "not in this file"))?;
        if !dtype::is_supported(info.dtype) {
            return Err(Error::tensor(
                &self.path,
                name,
                format!(
                    "unsupported dtype {:?} (lorascope reads F32, F16, BF16, F64)",
                    info.dtype
                ),
            ));
        }
        let n: usize = info.shape.iter().product();
        self.with_bytes(info, |b| dtype::decode_reusing(info.dtype, b, buf, n))?
            .map_err(|m| Error::tensor(&self.path, name, m))
    }
}

/// A read ran past the end of a file truncated under the map ([`super::fault`]).
fn changed(path: &Path) -> Error {
    Error::file(
        path,
        "changed while being read (truncated under lorascope: was it being rewritten?)",
    )
}

fn describe(e: &SafeTensorError, raw: &serde_json::Value, size: u64, n: usize) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer => {
            let end = raw
                .as_object()
                .into_iter()
                .flat_map(|o| o.values())
                .filter_map(|v| v.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0)
                + (N_LEN + n) as u64;
            if end > size {
                format!("truncated: the header says the data ends at byte {end}, the file has {size} bytes")
            } else {
                format!(
                    "{} bytes after the last tensor (the header says the data ends at byte {end})",
                    size - end
                )
            }
        }
        SafeTensorError::InvalidOffset(t) => {
            format!("tensor `{t}`: data offsets overlap, leave a gap, or are out of order")
        }
        SafeTensorError::TensorInvalidInfo => {
            // Find the culprit ourselves: the crate does not name it.
            let culprit = raw.as_object().and_then(|o| {
                o.iter().find_map(|(k, v)| {
                    let dt: Dtype = serde_json::from_value(v.get("dtype")?.clone()).ok()?;
                    let shape: Vec<usize> = serde_json::from_value(v.get("shape")?.clone()).ok()?;
                    let off: (usize, usize) =
                        serde_json::from_value(v.get("data_offsets")?.clone()).ok()?;
                    let want = shape.iter().product::<usize>() * dt.bitsize() / 8;
                    let have = off.1.checked_sub(off.0)?;
                    (want != have).then(|| format!(
                        "tensor `{k}`: byte length {have} does not match shape {shape:?} × {dt:?} ({want} bytes)"
                    ))
                })
            });
            culprit.unwrap_or_else(|| {
                "a tensor's byte length does not match its shape and dtype".into()
            })
        }
        SafeTensorError::InvalidHeaderDeserialization(err) => {
            format!("header is not a valid safetensors header: {err}")
        }
        other => format!("invalid safetensors file: {other}"),
    }
}

/// A safetensors header for tensors laid out in the given order, back to back: the 8-byte
/// length, then the JSON padded with spaces to a multiple of 8 (so data starts aligned).
/// Entries are (name, dtype as safetensors spells it, shape, bytes).
pub fn header(
    entries: &[(String, String, Vec<usize>, usize)],
    metadata: serde_json::Map<String, serde_json::Value>,
) -> Vec<u8> {
    let mut h = serde_json::Map::new();
    h.insert("__metadata__".into(), serde_json::Value::Object(metadata));
    let mut off = 0;
    for (name, dtype, shape, len) in entries {
        h.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [off, off + len]}),
        );
        off += len;
    }
    let mut json = serde_json::Value::Object(h).to_string().into_bytes();
    while json.len() % 8 != 0 {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_file_truncated_during_a_read_is_an_error_naming_it_not_a_signal() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("model.safetensors");
        let n = 64 * 1024; // f32 values: 256 KiB of data, many pages
        let mut bytes = header(
            &[("w".into(), "F32".into(), vec![n], 4 * n)],
            Default::default(),
        );
        bytes.extend((0..n).flat_map(|i| (i as f32).to_le_bytes()));
        std::fs::write(&p, &bytes).unwrap();
        let f = StFile::open(&p).unwrap();
        let info = f.tensors["w"].clone();
        assert_eq!(f.with_bytes(&info, |b| b.len()).unwrap(), 4 * n);
        // Truncated after the size check, in the middle of the read.
        let e = f
            .with_bytes(&info, |b| {
                let head = b[0];
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .unwrap()
                    .set_len(4096)
                    .unwrap();
                b.iter().fold(head as u64, |s, &x| s + x as u64)
            })
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("model.safetensors") && e.contains("changed while being read"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        // And every read after, before touching the map.
        assert!(f
            .decode::<f32>("w")
            .unwrap_err()
            .to_string()
            .contains("changed while being read"));
    }
}
