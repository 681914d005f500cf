//! Finding a base model the way PEFT does: a local path, or a hub id (`org/name`) looked up in
//! the local Hugging Face cache — offline, never the network.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The hub cache folders to look in, in order.
#[derive(Debug, Clone, Default)]
pub struct HubCache {
    pub roots: Vec<PathBuf>,
}

impl HubCache {
    /// Where huggingface_hub keeps models: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
    pub fn from_env() -> HubCache {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = var("HF_HUB_CACHE")
            .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
            .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
            .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")));
        HubCache {
            roots: root.into_iter().collect(),
        }
    }

    /// The snapshot folder of `id` (`org/name`): the revision `refs/main` names, or the only
    /// snapshot there is. Err says what was found instead, None that nothing was.
    pub fn find(&self, id: &str) -> std::result::Result<Option<PathBuf>, String> {
        let folder = format!("models--{}", id.replace('/', "--"));
        for root in &self.roots {
            let repo = root.join(&folder);
            let snapshots = repo.join("snapshots");
            if !snapshots.is_dir() {
                continue;
            }
            if let Ok(rev) = std::fs::read_to_string(repo.join("refs/main")) {
                let snap = snapshots.join(rev.trim());
                if snap.is_dir() {
                    return Ok(Some(snap));
                }
            }
            let mut all: Vec<PathBuf> = std::fs::read_dir(&snapshots)
                .map_err(|e| format!("{}: {e}", snapshots.display()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            match all.len() {
                0 => continue,
                1 => return Ok(all.pop()),
                n => {
                    return Err(format!(
                        "{} has {n} snapshots and no refs/main to choose one; pass the \
                         snapshot's folder as BASE",
                        snapshots.display()
                    ))
                }
            }
        }
        Ok(None)
    }
}

/// `org/name` (one slash, no path-like parts): what the hub calls a model.
fn is_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
}

/// A BASE argument: the path as given where it exists, else a hub id from the local cache.
pub fn resolve(arg: &Path, hub: &HubCache) -> Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let s = arg.to_string_lossy();
    if !is_hub_id(&s) {
        // Opening it says what is wrong.
        return Ok(arg.to_path_buf());
    }
    from_hub(&s, hub, "")
}

fn from_hub(id: &str, hub: &HubCache, whence: &str) -> Result<PathBuf> {
    match hub.find(id) {
        Ok(Some(p)) => Ok(p),
        Err(m) => Err(Error::Usage(m)),
        Ok(None) => {
            let looked: Vec<String> = hub.roots.iter().map(|r| r.display().to_string()).collect();
            Err(Error::Usage(format!(
                "base `{id}`{whence} is not a local path nor in the Hugging Face cache (looked in \
                 {}); download it (`hf download {id}`) or give its folder as BASE: \
                 lorascope scan BASE TUNED",
                if looked.is_empty() {
                    "no cache folder: HOME is not set".to_string()
                } else {
                    looked.join(", ")
                }
            )))
        }
    }
}

/// The base an adapter folder names (`base_model_name_or_path`), found as [`resolve`] finds
/// a BASE argument.
pub fn base_of_adapter(dir: &Path, hub: &HubCache) -> Result<PathBuf> {
    let cfg = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).map_err(|e| Error::io(&cfg, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::file(&cfg, format!("invalid JSON: {e}")))?;
    let Some(name) = v
        .get("base_model_name_or_path")
        .and_then(|n| n.as_str())
        .filter(|n| !n.is_empty())
    else {
        return Err(Error::file(
            &cfg,
            "names no base (base_model_name_or_path); give it: lorascope scan BASE ADAPTER",
        ));
    };
    let p = Path::new(name);
    if p.exists() {
        return Ok(p.to_path_buf());
    }
    if is_hub_id(name) {
        return from_hub(name, hub, " (from adapter_config.json)");
    }
    Err(Error::file(
        &cfg,
        format!("names base `{name}`, which does not exist; give it: lorascope scan BASE ADAPTER"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_from_paths() {
        for id in [
            "sentence-transformers/all-MiniLM-L6-v2",
            "meta-llama/Llama-3.1-8B",
        ] {
            assert!(is_hub_id(id), "{id}");
        }
        for p in [
            "model",
            "./a/b",
            "/abs/path",
            "a/b/c",
            "../x",
            "a/",
            "a b/c",
        ] {
            assert!(!is_hub_id(p), "{p}");
        }
    }

    #[test]
    fn a_hub_id_resolves_to_its_main_snapshot_offline() {
        let d = tempfile::tempdir().unwrap();
        let hub = HubCache {
            roots: vec![d.path().join("none"), d.path().join("hub")],
        };
        let repo = d.path().join("hub/models--org--model");
        for rev in ["aaa", "bbb"] {
            std::fs::create_dir_all(repo.join("snapshots").join(rev)).unwrap();
        }
        // Two snapshots and no refs/main: ambiguous, said so.
        let e = resolve(Path::new("org/model"), &hub)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 snapshots and no refs/main"), "{e}");
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "bbb\n").unwrap();
        assert_eq!(
            resolve(Path::new("org/model"), &hub).unwrap(),
            repo.join("snapshots/bbb")
        );
        // An adapter naming it; one naming a model not there says where it looked.
        let ad = d.path().join("adapter");
        std::fs::create_dir(&ad).unwrap();
        std::fs::write(
            ad.join("adapter_config.json"),
            r#"{"base_model_name_or_path": "org/model"}"#,
        )
        .unwrap();
        assert_eq!(
            base_of_adapter(&ad, &hub).unwrap(),
            repo.join("snapshots/bbb")
        );
        std::fs::write(
            ad.join("adapter_config.json"),
            r#"{"base_model_name_or_path": "org/other"}"#,
        )
        .unwrap();
        let e = base_of_adapter(&ad, &hub).unwrap_err().to_string();
        assert!(
            e.contains("`org/other` (from adapter_config.json)")
                && e.contains(&d.path().join("hub").display().to_string())
                && e.contains("hf download org/other")
                && !e.contains('\n'),
            "{e}"
        );
        // A path that exists is taken as it is.
        assert_eq!(resolve(&ad, &hub).unwrap(), ad);
    }
}
