//! `cargo bench --bench compare`: what comparing N adapters of one base costs against N
//! separate cold scans. Five rank-8 adapters (other seeds) of one synthetic base of BERT-base
//! shapes (2 blocks: q, k, v, o 768×768, up 3072×768, down 768×3072), f32. "compare" opens the
//! five runs over one empty cache and compares them (scans, tracking), as `lorascope compare`
//! does; "5 cold scans" scans each run with an empty cache of its own, as five `lorascope scan`
//! runs would. Rounds interleave the two (3 rounds), each time a median; the same counts are
//! checked. The expected ratio is (B + 5T)/(5B + 5T): the base (B) is decomposed once.

mod common;

use std::path::{Path, PathBuf};

use common::{f32_bytes, write_st};
use std::time::Instant;

use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::compare::{self, RunSpec, Settings, Show};
use lorascope::demo::Rng;
use lorascope::engine::{Engine, Options};
use lorascope::spectral::Rule;

const RUNS: usize = 5;
const RANK: usize = 8;
const JOBS: usize = 2;

fn modules() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("attention.query", 768, 768),
        ("attention.key", 768, 768),
        ("attention.value", 768, 768),
        ("attention.output", 768, 768),
        ("intermediate", 3072, 768),
        ("output", 768, 3072),
    ]
}

/// The base (a file) and RUNS adapter folders.
fn make_runs(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let mut rng = Rng(7);
    let mut base = Vec::new();
    for block in 0..2 {
        for (m, rows, cols) in modules() {
            let name = format!("encoder.layer.{block}.{m}.weight");
            let w: Vec<f64> = (0..rows * cols)
                .map(|_| rng.normal() / (cols as f64).sqrt())
                .collect();
            base.push((name, vec![rows, cols], f32_bytes(&w)));
        }
    }
    let base_path = dir.join("base.safetensors");
    write_st(&base_path, &base);
    let runs = (0..RUNS)
        .map(|r| {
            let run = dir.join(format!("run{r}"));
            std::fs::create_dir_all(&run).unwrap();
            let mut rng = Rng(100 + r as u64);
            let mut t = Vec::new();
            for block in 0..2 {
                for (m, rows, cols) in modules() {
                    let p = format!("base_model.model.encoder.layer.{block}.{m}");
                    let a: Vec<f64> = (0..RANK * cols)
                        .map(|_| rng.normal() / (cols as f64).sqrt())
                        .collect();
                    let b: Vec<f64> = (0..rows * RANK)
                        .map(|_| 0.5 * rng.normal() / (rows as f64).sqrt())
                        .collect();
                    t.push((
                        format!("{p}.lora_A.weight"),
                        vec![RANK, cols],
                        f32_bytes(&a),
                    ));
                    t.push((
                        format!("{p}.lora_B.weight"),
                        vec![rows, RANK],
                        f32_bytes(&b),
                    ));
                }
            }
            write_st(&run.join("adapter_model.safetensors"), &t);
            let cfg = serde_json::json!({
                "peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK,
                "target_modules": ["query", "key", "value", "output", "intermediate"],
            });
            std::fs::write(run.join("adapter_config.json"), cfg.to_string()).unwrap();
            run
        })
        .collect();
    (base_path, runs)
}

fn engine(base: &Path, run: &Path, cache: &Path) -> Engine {
    let inputs = Inputs::open(base, run, &Selection::default()).unwrap();
    Engine::new(inputs, Cache::open(cache), Options::default())
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let (base, runs) = make_runs(dir.path());
    let mut round = 0;
    let mut fresh = || {
        round += 1;
        let d = dir.path().join(format!("cache{round}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (mut t_compare, mut t_scans) = (Vec::new(), Vec::new());
    let (mut c_counts, mut s_counts) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let cache = fresh();
        let s = Instant::now();
        let specs: Vec<_> = runs
            .iter()
            .map(|r| {
                let spec = RunSpec {
                    label: r.file_name().unwrap().to_string_lossy().into_owned(),
                    path: r.clone(),
                    step: None,
                    epoch: None,
                    group: None,
                    metrics: Default::default(),
                };
                (spec, Ok(engine(&base, r, &cache)))
            })
            .collect();
        let settings = Settings {
            rule: Rule::default(),
            reference: RUNS - 1,
            keep: lorascope::engine::DEFAULT_KEEP,
            show: Show::None,
        };
        let c = compare::compare(specs, settings, &|_| JOBS, &|_, _| {}, &|_| {}).unwrap();
        t_compare.push(s.elapsed().as_secs_f64());
        c_counts = c
            .runs
            .iter()
            .map(|r| r.results.as_ref().unwrap().total_rule)
            .collect();

        let s = Instant::now();
        s_counts = runs
            .iter()
            .map(|r| {
                let e = engine(&base, r, &fresh());
                let scan = e.scan(JOBS, &|_, _, _| {});
                scan.total(&Rule::default())
            })
            .collect();
        t_scans.push(s.elapsed().as_secs_f64());
    }
    assert_eq!(c_counts, s_counts, "compare counts as the scans do");
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let (c, s) = (median(t_compare), median(t_scans));
    println!("{RUNS} rank-{RANK} adapters of one base, 12 matrices each, {JOBS} jobs, f64");
    println!("compare (one cache):   {c:>7.2} s");
    println!("{RUNS} cold scans:          {s:>7.2} s");
    println!("compare / cold scans:  {:>7.2}", c / s);
    println!("intruders per run:     {c_counts:?}");
}
