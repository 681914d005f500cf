//! Flags and marks persist per (base, tuned) pair, keyed by the checkpoints' headers (so a
//! renamed copy keeps them), in `<cache dir>/state/`, written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::app::UserState;
use crate::cache::KeyBuilder;
use crate::checkpoint::{Inputs, Tuned};

pub fn state_path(root: &Path, inputs: &Inputs) -> PathBuf {
    let mut kb = KeyBuilder::new().str("lorascope-user-state-1");
    for f in &inputs.base.files {
        kb = kb.u128(f.header_hash);
    }
    match &inputs.tuned {
        Tuned::Model(m) => {
            for f in &m.files {
                kb = kb.u128(f.header_hash);
            }
        }
        Tuned::Adapter(a) => kb = kb.u128(a.file.header_hash).str(&format!("{:?}", a.config)),
    }
    root.join("state")
        .join(format!("{}.json", kb.finish().hex()))
}

pub fn load(path: &Path) -> Result<UserState, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s)
            .map_err(|e| format!("{}: ignored, not valid: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(UserState::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

pub fn save(path: &Path, state: &UserState) -> std::io::Result<()> {
    let dir = path.parent().unwrap();
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
