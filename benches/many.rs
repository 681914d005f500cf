//! `cargo bench --bench many`: a scan's cost against the number of tensors. Checkpoints of N
//! tiny (4×4) matrices, each in a block of its own (the worst case for per-layer sums), for N =
//! 10k, 20k, 40k: scanned without a cache and with an empty one, 3 interleaved rounds, medians.
//! Linear cost shows as time(2N)/time(N) ≈ 2 and a flat time per tensor.

mod common;

use std::path::Path;
use std::time::Instant;

use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::demo::Rng;
use lorascope::engine::{Engine, Options};
use lorascope::spectral::Rule;

fn write(path: &Path, n: usize, seed: u64) {
    let mut rng = Rng(seed);
    let tensors: Vec<_> = (0..n)
        .map(|i| {
            let v: Vec<f64> = (0..16).map(|_| rng.normal()).collect();
            (
                format!("model.layers.{i}.mlp.up_proj.weight"),
                vec![4, 4],
                common::f32_bytes(&v),
            )
        })
        .collect();
    common::write_st(path, &tensors);
}

fn scan(base: &Path, tuned: &Path, cache: Cache) -> usize {
    let inputs = Inputs::open(base, tuned, &Selection::default()).unwrap();
    let e = Engine::new(inputs, cache, Options::default());
    let s = e.scan(2, &|_, _, _| {});
    // The per-layer sums are part of every output.
    let _ = s.per_layer(&Rule::default());
    s.results.len()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [10_000, 20_000, 40_000];
    let mut rows = Vec::new();
    for n in sizes {
        let (b, t) = (
            dir.path().join(format!("b{n}.safetensors")),
            dir.path().join(format!("t{n}.safetensors")),
        );
        write(&b, n, 1);
        write(&t, n, 2);
        let (mut none, mut empty) = (Vec::new(), Vec::new());
        for round in 0..3 {
            let s = Instant::now();
            assert_eq!(scan(&b, &t, Cache::disabled()), n);
            none.push(s.elapsed().as_secs_f64());
            let c = dir.path().join(format!("cache-{n}-{round}"));
            let s = Instant::now();
            assert_eq!(scan(&b, &t, Cache::open(&c)), n);
            empty.push(s.elapsed().as_secs_f64());
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[1]
        };
        rows.push((n, median(none), median(empty)));
    }
    println!(
        "{:>7}  {:>9}  {:>7}  {:>11}  {:>7}",
        "tensors", "no cache", "µs/each", "empty cache", "µs/each"
    );
    for (n, a, b) in &rows {
        println!(
            "{n:>7}  {a:>8.2}s  {:>7.1}  {b:>10.2}s  {:>7.1}",
            a * 1e6 / *n as f64,
            b * 1e6 / *n as f64
        );
    }
    for w in rows.windows(2) {
        println!(
            "{} → {}: ×{:.2} without a cache, ×{:.2} with an empty one",
            w[0].0,
            w[1].0,
            w[1].1 / w[0].1,
            w[1].2 / w[0].2
        );
    }
}
