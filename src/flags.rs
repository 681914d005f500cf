//! The user's verdicts: flags on singular vectors (intruder or not, overriding the rule) and
//! marks on matrices. They persist per (base, tuned) pair, keyed by the checkpoints' headers (so
//! a renamed copy keeps them), in `<cache dir>/state/`, written atomically. The explorer edits
//! them; reports show them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cache::KeyBuilder;
use crate::checkpoint::{Inputs, Tuned};
use crate::spectral::rule;

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserState {
    /// matrix → vector index → the user's verdict: intruder or not.
    pub flags: BTreeMap<String, BTreeMap<usize, bool>>,
    pub marks: BTreeSet<String>,
}

impl UserState {
    pub fn flag(&self, matrix: &str, j: usize) -> Option<bool> {
        self.flags.get(matrix)?.get(&j).copied()
    }

    /// The verdict shown everywhere: the user's flag where there is one, else the rule.
    pub fn verdict(&self, matrix: &str, j: usize, c: f64, k: usize, epsilon: f64) -> bool {
        self.flag(matrix, j)
            .unwrap_or_else(|| rule::is_intruder_at(j, c, k, epsilon))
    }

    /// Intruder indices of a matrix under the verdict, ascending.
    pub fn intruders(&self, matrix: &str, max_cos: &[f64], k: usize, epsilon: f64) -> Vec<usize> {
        (0..max_cos.len())
            .filter(|&j| self.verdict(matrix, j, max_cos[j], k, epsilon))
            .collect()
    }

    pub fn overrides(&self) -> usize {
        self.flags.values().map(|m| m.len()).sum()
    }
}

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
