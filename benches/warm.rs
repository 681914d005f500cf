//! `cargo bench --bench warm`: the cost model that `cache warm --shard` balances by
//! (`engine::base_cost`) against measured times of the base decomposition (the Gram route, one
//! core, f64) on a LLaMA block's shapes scaled down: each shape's time over the square one's,
//! beside the model's ratio. LORASCOPE_BENCH_SCALE=2 halves instead of quartering (slower);
//! 1 runs the real 4096/11008 shapes (minutes).

use std::time::Instant;

use faer::Par;
use lorascope::demo::Rng;
use lorascope::engine::base_cost;
use lorascope::spectral::{self, Side};

fn main() {
    let scale: usize = std::env::var("LORASCOPE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let (h, i) = (4096 / scale, 11008 / scale);
    let shapes = [(h, h), (i, h), (h, i)];
    println!(
        "{:>11}  {:>8}  {:>10}  {:>10}",
        "matrix", "s", "measured×", "model×"
    );
    let mut first = None;
    for (m, n) in shapes {
        let w = Rng(7).dense(m, n);
        let runs = 3;
        let mut t: Vec<f64> = (0..runs)
            .map(|_| {
                let s = Instant::now();
                let d = spectral::decompose_gram(&w, Side::Left, usize::MAX, Par::Seq).unwrap();
                assert!(d.is_some());
                s.elapsed().as_secs_f64()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        let secs = t[runs / 2];
        let (t0, c0) = *first.get_or_insert((secs, base_cost((m, n), Side::Left)));
        println!(
            "{:>11}  {secs:>8.3}  {:>10.2}  {:>10.2}",
            format!("{m}×{n}"),
            secs / t0,
            base_cost((m, n), Side::Left) / c0
        );
    }
}
