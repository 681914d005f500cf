//! The user's verdicts: flags on singular vectors (intruder or not, overriding the rule) and
//! marks on matrices, set in the explorer and applied by `scan`, `report` and `repair`.
//!
//! They are the user's annotation of weights, not cache content: they live in the XDG state
//! directory (`$XDG_STATE_HOME/lorascope`, else `~/.local/state/lorascope`), so `cache clear`
//! and `--no-cache` never lose them. A file holds the flags of every pair whose checkpoints
//! have the same headers (every checkpoint of one training run has the same), and each
//! matrix's entry is keyed by the content of its weights: a flag set on run A never applies to
//! run B, and a changed adapter config (another scaling) makes its flags stale, reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::checkpoint::{Inputs, Tuned};
use crate::key::KeyBuilder;
use crate::spectral::Rule;

/// The verdicts in force for the pair being looked at, by matrix name.
#[derive(Debug, Clone, Default, PartialEq)]
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
    pub fn verdict(&self, matrix: &str, j: usize, c: f64, rule: &Rule) -> bool {
        self.flag(matrix, j)
            .unwrap_or_else(|| rule.is_intruder_at(j, c))
    }

    /// Intruder indices of a matrix under the verdict, ascending.
    pub fn intruders(&self, matrix: &str, max_cos: &[f64], rule: &Rule) -> Vec<usize> {
        (0..max_cos.len())
            .filter(|&j| self.verdict(matrix, j, max_cos[j], rule))
            .collect()
    }

    pub fn overrides(&self) -> usize {
        self.flags.values().map(|m| m.len()).sum()
    }
}

/// The version of the file's layout; a file of another is reported and left alone.
pub const FORMAT: u32 = 2;

/// One matrix's flags and mark, for the weights they were set on.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub name: String,
    #[serde(default)]
    pub flags: BTreeMap<usize, bool>,
    #[serde(default)]
    pub marked: bool,
}

/// Where the user was: restored when the same pair is opened again.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct View {
    pub matrix: String,
    pub vector: usize,
    pub zoom: bool,
    /// The focused pane (its name in the explorer).
    #[serde(default)]
    pub pane: String,
}

/// A flags file's content.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    pub format: u32,
    /// By [`weights_key`] (hex): the weights' content, not their name.
    #[serde(default)]
    pub matrices: BTreeMap<String, Entry>,
    #[serde(default)]
    pub view: Option<View>,
}

impl Default for Stored {
    fn default() -> Self {
        Stored {
            format: FORMAT,
            matrices: BTreeMap::new(),
            view: None,
        }
    }
}

/// A matrix's identity for flags: the content keys of its base and tuned sides (see
/// [`crate::engine::MatrixReport::weights`]).
pub fn weights_key(weights: u128) -> String {
    format!("{weights:032x}")
}

impl Stored {
    /// Puts a matrix's stored flags and mark into `user`, if any were set on these weights.
    pub fn apply(&self, user: &mut UserState, name: &str, weights: u128) {
        let Some(e) = self.matrices.get(&weights_key(weights)) else {
            return;
        };
        if !e.flags.is_empty() {
            user.flags.insert(name.to_string(), e.flags.clone());
        }
        if e.marked {
            user.marks.insert(name.to_string());
        }
    }

    /// Records a matrix's flags and mark from `user` under its weights (dropping an entry that
    /// holds nothing).
    pub fn record(&mut self, user: &UserState, name: &str, weights: u128) {
        let e = Entry {
            name: name.to_string(),
            flags: user.flags.get(name).cloned().unwrap_or_default(),
            marked: user.marks.contains(name),
        };
        let key = weights_key(weights);
        if e.flags.is_empty() && !e.marked {
            self.matrices.remove(&key);
        } else {
            self.matrices.insert(key, e);
        }
    }

    /// The verdicts for these matrices (name, weights), as [`Stored::apply`] gives them.
    pub fn user_for<'a>(&self, matrices: impl IntoIterator<Item = (&'a str, u128)>) -> UserState {
        let mut u = UserState::default();
        for (name, w) in matrices {
            self.apply(&mut u, name, w);
        }
        u
    }

    /// Flags stored under these matrices' names for other weights (another run of the same
    /// architecture, or a changed adapter config): not applied, but worth saying.
    pub fn stale<'a>(&self, matrices: impl IntoIterator<Item = (&'a str, u128)>) -> usize {
        let current: BTreeMap<&str, String> = matrices
            .into_iter()
            .map(|(n, w)| (n, weights_key(w)))
            .collect();
        let names_in_force: BTreeSet<&str> = current
            .iter()
            .filter(|(_, k)| self.matrices.contains_key(*k))
            .map(|(n, _)| *n)
            .collect();
        self.matrices
            .iter()
            .filter(|(k, e)| {
                current.get(e.name.as_str()).is_some_and(|c| c != *k)
                    && !names_in_force.contains(e.name.as_str())
            })
            .map(|(_, e)| e.flags.len())
            .sum()
    }
}

/// `$XDG_STATE_HOME/lorascope`, else `~/.local/state/lorascope`.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local").join("state")))
        .map(|d| d.join("lorascope"))
}

/// The flags file for a pair: found from the checkpoints' headers (cheap, and a renamed copy
/// keeps its flags); entries inside are told apart by content.
pub fn state_path(dir: &Path, inputs: &Inputs) -> PathBuf {
    let mut kb = KeyBuilder::new().str("lorascope-flags-file-2");
    for f in &inputs.base.files {
        kb = kb.u128(f.header_hash);
    }
    match &inputs.tuned {
        Tuned::Model(m) => {
            for f in &m.files {
                kb = kb.u128(f.header_hash);
            }
        }
        Tuned::Adapter(a) => kb = kb.u128(a.file.header_hash),
    }
    dir.join("flags")
        .join(format!("{}.json", kb.finish().hex()))
}

/// Flags of lorascope before this layout sit in `<cache>/state/` keyed by headers only (so they
/// may belong to another run of the same architecture): not read, but said once they exist.
pub fn legacy_warning(cache_root: &Path) -> Option<String> {
    let old = cache_root.join("state");
    let n = std::fs::read_dir(&old)
        .ok()?
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    (n > 0).then(|| {
        format!(
            "{n} flags file{} from an earlier lorascope in {} {} keyed by headers only and not \
             read; set them again (they now live in the state folder) and delete that folder",
            if n == 1 { "" } else { "s" },
            old.display(),
            if n == 1 { "is" } else { "are" }
        )
    })
}

/// A flags file, read. Problems (damage, another version) are kept in `warning`: the rule
/// still works without flags, and a file of another version is never written over.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
    pub stored: Stored,
    pub warning: Option<String>,
    /// False for a file this version cannot read: saving would lose what it holds.
    pub writable: bool,
}

impl StateFile {
    pub fn open(path: PathBuf) -> StateFile {
        let mut f = StateFile {
            path,
            stored: Stored::default(),
            warning: None,
            writable: true,
        };
        let text = match std::fs::read_to_string(&f.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return f,
            Err(e) => {
                f.warning = Some(format!("flags not read: {}: {e}", f.path.display()));
                f.writable = false;
                return f;
            }
        };
        let format = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("format")?.as_u64());
        match format {
            Some(n) if n == FORMAT as u64 => match serde_json::from_str::<Stored>(&text) {
                Ok(s) => f.stored = s,
                Err(e) => {
                    f.warning = Some(format!(
                        "flags file {} is damaged ({e}); it is left as is and not applied",
                        f.path.display()
                    ));
                    f.writable = false;
                }
            },
            Some(n) => {
                f.warning = Some(format!(
                    "flags file {} is of format {n}, from another lorascope version (this one \
                     reads {FORMAT}); it is left as is and not applied",
                    f.path.display()
                ));
                f.writable = false;
            }
            None => {
                f.warning = Some(format!(
                    "flags file {} is not a lorascope flags file; it is left as is and not applied",
                    f.path.display()
                ));
                f.writable = false;
            }
        }
        f
    }

    /// Writes the file atomically (a temporary file renamed over it).
    pub fn save(&self) -> std::io::Result<()> {
        if !self.writable {
            return Err(std::io::Error::other(format!(
                "{} is kept as it was (see the warning when it was read)",
                self.path.display()
            )));
        }
        std::fs::create_dir_all(crate::fsio::folder_of(&self.path))?;
        let text = serde_json::to_string_pretty(&self.stored)?;
        crate::fsio::write_atomic(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_apply_only_to_the_weights_they_were_set_on() {
        let mut s = Stored::default();
        let mut u = UserState::default();
        u.flags.insert("m".into(), [(2, false)].into());
        u.marks.insert("m".into());
        s.record(&u, "m", 7);
        // The same name on other weights (another run, a changed config) gets nothing.
        assert_eq!(s.user_for([("m", 8)]), UserState::default());
        assert_eq!(s.stale([("m", 8)]), 1);
        assert_eq!(s.user_for([("m", 7)]), u);
        assert_eq!(s.stale([("m", 7)]), 0);
        // Unflagging everything drops the entry.
        s.record(&UserState::default(), "m", 7);
        assert!(s.matrices.is_empty());
    }

    #[test]
    fn flags_left_beside_the_cache_by_earlier_versions_are_mentioned() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(legacy_warning(d.path()), None);
        std::fs::create_dir_all(d.path().join("state")).unwrap();
        std::fs::write(d.path().join("state/0123.json"), "{}").unwrap();
        let w = legacy_warning(d.path()).unwrap();
        assert!(
            w.starts_with("1 flags file from an earlier lorascope"),
            "{w}"
        );
        assert!(w.contains(" is keyed by headers only"), "{w}");
    }

    #[test]
    fn a_file_of_another_format_or_damaged_is_reported_and_never_written_over() {
        let d = tempfile::tempdir().unwrap();
        for (text, says) in [
            (
                r#"{"flags": {"m": {"2": false}}, "marks": []}"#,
                "not a lorascope flags file",
            ),
            (r#"{"format": 3, "matrices": {}}"#, "of format 3"),
            (r#"{"format": 2, "matrices": 5}"#, "damaged"),
        ] {
            let p = d.path().join("f.json");
            std::fs::write(&p, text).unwrap();
            let f = StateFile::open(p.clone());
            assert!(
                f.warning.as_deref().unwrap().contains(says),
                "{:?}",
                f.warning
            );
            assert!(f.save().is_err());
            assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        }
        let p = d.path().join("new").join("f.json");
        let mut f = StateFile::open(p.clone());
        assert!(f.warning.is_none());
        f.stored.view = Some(View {
            matrix: "m".into(),
            vector: 3,
            zoom: true,
            pane: "Heatmap".into(),
        });
        f.save().unwrap();
        assert_eq!(StateFile::open(p).stored, f.stored);
    }
}
