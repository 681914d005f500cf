//! lorascope: find intruder dimensions (Shuttleworth et al., 2024) in fine-tuned weights.
//!
//! The pipeline: [`checkpoint`] (mmap, formats, pairing) → [`spectral`] (SVD, the intruder
//! rule) → [`cache`] (lazy, persistent) → [`engine`] → [`report`], [`repair`] and [`tui`].
//! Leaves that everything may use: [`error`], [`fsio`], [`key`], [`matrix`], [`rng`]. What may import
//! what is in docs/architecture.md (a test checks it).

pub mod cache;
pub mod checkpoint;
pub mod compare;
pub mod demo;
pub mod engine;
pub mod error;
pub mod flags;
pub mod fsio;
#[doc(hidden)]
pub mod fuzz;
pub mod key;
pub mod matrix;
pub mod repair;
pub mod report;
pub mod rng;
pub mod shard;
pub mod spectral;
pub mod tui;

pub use error::{Error, Result};

/// docs/architecture.md's table of allowed imports, checked against every `crate::X` in the
/// library's files, so the document stays true.
#[cfg(test)]
mod architecture {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    fn allowed() -> BTreeMap<String, BTreeSet<String>> {
        let doc =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/architecture.md"))
                .unwrap();
        let ticked = |s: &str| -> Vec<String> {
            s.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect()
        };
        doc.lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                let module = ticked(cells[1]).remove(0);
                (module, ticked(cells[cells.len() - 2]).into_iter().collect())
            })
            .collect()
    }

    /// Every `crate::X` named in a file, or in the files under a folder.
    fn imports(p: &Path, out: &mut BTreeSet<String>) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                imports(&e.path(), out);
            }
            return;
        }
        if p.extension().is_none_or(|x| x != "rs") {
            return;
        }
        let text = std::fs::read_to_string(p).unwrap();
        for line in text.lines().map(|l| l.split("//").next().unwrap()) {
            for part in line.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }

    fn read_all(p: &Path, out: &mut String) {
        if p.is_dir() {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                read_all(&e.path(), out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(p).unwrap());
        }
    }

    #[test]
    fn every_module_imports_only_what_docs_architecture_allows() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let table = allowed();
        for e in std::fs::read_dir(&src).unwrap().flatten() {
            let p = e.path();
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            if ["lib", "main", "cli"].contains(&name.as_str()) {
                continue;
            }
            let may = table
                .get(&name)
                .unwrap_or_else(|| panic!("module `{name}` is missing from docs/architecture.md"));
            let mut used = BTreeSet::new();
            imports(&p, &mut used);
            used.remove(&name);
            // No command line in the library, and no terminal outside the explorer.
            let mut text = String::new();
            read_all(&p, &mut text);
            assert!(
                !text.contains("clap::"),
                "`{name}` uses clap: keep it in src/cli"
            );
            if name != "tui" {
                assert!(
                    !text.contains("ratatui") && !text.contains("crossterm"),
                    "`{name}` uses the terminal: keep it in src/tui"
                );
            }
            let extra: Vec<_> = used.difference(may).collect();
            assert!(
                extra.is_empty(),
                "`{name}` imports {extra:?}, which docs/architecture.md does not allow"
            );
        }
    }
}
