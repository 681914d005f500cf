//! `cargo bench --bench decompose`: the base decomposition by thin SVD and by the Gram route,
//! side by side in one run (ratios, not absolute times, are what to compare on a noisy
//! machine), with the largest c_j difference between the routes. LORASCOPE_BENCH_BIG=1 adds
//! 4096×4096. scripts/bench.sh runs NumPy's LAPACK SVD beside it.

use std::time::Instant;

use faer::Par;
use lorascope::checkpoint::Dense;
use lorascope::demo::Rng;
use lorascope::spectral::{self, Side};

fn gaussian(rng: &mut Rng, rows: usize, cols: usize) -> Dense<f64> {
    rng.dense(rows, cols)
}

fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing we need.
    let big = std::env::var_os("LORASCOPE_BENCH_BIG").is_some();
    let mut sizes = vec![(768, 768), (768, 3072), (3072, 768), (2048, 2048)];
    if big {
        sizes.push((4096, 4096));
    }
    let par = Par::rayon(0);
    println!(
        "{:>11}  {:>9}  {:>9}  {:>8}  {:>10}",
        "matrix", "svd s", "gram s", "gram/svd", "max|Δc_j|"
    );
    for (m, n) in sizes {
        let mut rng = Rng(42);
        let w0 = gaussian(&mut rng, m, n);
        let mut w = w0.clone();
        w.data
            .iter_mut()
            .for_each(|x| *x += 0.05 * rng.normal() / (n as f64).sqrt());
        let runs = if m * n >= 2048 * 2048 { 3 } else { 5 };
        let mut svd = None;
        let t_svd = median_secs(runs, || {
            svd = Some(spectral::decompose(&w0, Side::Left, usize::MAX, par).unwrap())
        });
        let mut gram = None;
        let t_gram = median_secs(runs, || {
            gram = Some(
                spectral::decompose_gram(&w0, Side::Left, usize::MAX, par)
                    .unwrap()
                    .unwrap(),
            )
        });
        let tuned = spectral::decompose(&w, Side::Left, 10, par).unwrap();
        let (a, b) = (
            spectral::best_matches(&svd.unwrap(), &tuned),
            spectral::best_matches(&gram.unwrap(), &tuned),
        );
        let dc = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x.0 - y.0).abs())
            .fold(0.0, f64::max);
        println!(
            "{:>11}  {t_svd:>9.3}  {t_gram:>9.3}  {:>8.2}  {dc:>10.1e}",
            format!("{m}×{n}"),
            t_gram / t_svd
        );
    }
}
