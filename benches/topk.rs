//! `cargo bench --bench topk`: the tuned side's top 10 (the rule's k) and top 32 (the default
//! `--keep`) vectors by block Krylov against the full
//! SVD of the same matrix, and the LoRA route (base decomposition given, as from the cache),
//! side by side in one run. Gaussian matrices have the flat top spectrum that is hard for
//! iterative methods; "decaying" ones look like real weights. LORASCOPE_BENCH_BIG=1 adds 4096.
//! Every method runs once per round, rounds interleaved (5 at 2048, 3 at 4096); each time is
//! its median, so a drift of the host's speed slows the SVD and the fast path alike.

use std::time::Instant;

use faer::{Mat, Par};
use lorascope::checkpoint::Dense;
use lorascope::demo::Rng;
use lorascope::spectral::{self, topk, Side};

const KEEP: usize = 32;

/// Times each of `runs` in `rounds` interleaved rounds (every method once per round, in order)
/// and returns each one's median and last result. The host's speed drifts by tens of percent
/// within minutes here: interleaving lets a drift slow every method alike, so the ratios hold.
fn interleaved<R>(rounds: usize, runs: &mut [&mut dyn FnMut() -> R]) -> Vec<(f64, R)> {
    let mut times = vec![Vec::with_capacity(rounds); runs.len()];
    let mut last: Vec<Option<R>> = runs.iter().map(|_| None).collect();
    for _ in 0..rounds {
        for (i, f) in runs.iter_mut().enumerate() {
            let s = Instant::now();
            let r = f();
            times[i].push(s.elapsed().as_secs_f64());
            last[i] = Some(r);
        }
    }
    times
        .into_iter()
        .zip(last)
        .map(|(mut t, r)| {
            t.sort_by(f64::total_cmp);
            (t[t.len() / 2], r.expect("rounds ≥ 1"))
        })
        .collect()
}

/// Rounds per size: a 4096² SVD takes ~25 s.
fn rounds(n: usize) -> usize {
    if n <= 2048 {
        5
    } else {
        3
    }
}

fn dense_of(m: &Mat<f64>) -> Dense<f64> {
    Dense::from_mat(m.as_ref())
}

/// Real-weight-like: σ_i = 1/(1 + 0.02 i) on random orthogonal factors, plus Gaussian noise.
fn decaying(rng: &mut Rng, n: usize) -> Dense<f64> {
    let u = rng.gaussian(n, n, 1.0).qr().compute_thin_Q();
    let v = rng.gaussian(n, n, 1.0).qr().compute_thin_Q();
    let us = Mat::from_fn(n, n, |i, j| u[(i, j)] / (1.0 + 0.02 * j as f64));
    dense_of(&(us * v.transpose()))
}

fn max_dcj(
    base: &spectral::Decomposition,
    a: &spectral::Decomposition,
    b: &spectral::Decomposition,
) -> f64 {
    let (x, y) = (
        spectral::best_matches(base, a),
        spectral::best_matches(base, b),
    );
    x.iter()
        .zip(&y)
        .map(|(p, q)| (p.0 - q.0).abs())
        .fold(0.0, f64::max)
}

fn main() {
    let big = std::env::var_os("LORASCOPE_BENCH_BIG").is_some();
    let mut sizes = vec![2048];
    if big {
        sizes.push(4096);
    }
    let par = Par::rayon(0);
    println!("tuned top-k (f64), W = W0 + small noise (a full fine-tune): block Krylov from a");
    println!("random start and from W0's top vectors (as the engine runs) vs full SVD of W;");
    println!("k = 10 (the rule's k) and {KEEP} (the default --keep, what a scan computes)");
    println!(
        "{:>6} {:>9} {:>3}  {:>9}  {:>9}  {:>8}  {:>9}  {:>8}  {:>10}",
        "n", "spectrum", "k", "svd s", "random s", "speedup", "base s", "speedup", "max|Δc_j|"
    );
    for &n in &sizes {
        for kind in ["gaussian", "decaying"] {
            let mut rng = Rng(7);
            let w0 = if kind == "gaussian" {
                rng.dense(n, n)
            } else {
                decaying(&mut rng, n)
            };
            let mut w = w0.clone();
            w.data
                .iter_mut()
                .for_each(|x| *x += 0.05 * rng.normal() / (n as f64).sqrt());
            let base = spectral::decompose_gram(&w0, Side::Left, usize::MAX, par)
                .unwrap()
                .unwrap();
            let dec = |k: usize, from: Option<&spectral::Decomposition>| {
                topk::dense_top(&w, Side::Left, k, from, par)
                    .unwrap()
                    .expect("converged")
            };
            let t = interleaved(
                rounds(n),
                &mut [
                    &mut || spectral::decompose(&w, Side::Left, KEEP, par).unwrap(),
                    &mut || dec(10, None),
                    &mut || dec(10, Some(&base)),
                    &mut || dec(KEEP, None),
                    &mut || dec(KEEP, Some(&base)),
                ],
            );
            let (t_svd, exact) = &t[0];
            for (k, random, warm) in [(10, &t[1], &t[2]), (KEEP, &t[3], &t[4])] {
                let ((t_k, fast), (t_b, warm)) = (random, warm);
                println!(
                    "{n:>6} {kind:>9} {k:>3}  {t_svd:>9.3}  {t_k:>9.3}  {:>7.1}×  {t_b:>9.3}  {:>7.1}×  {:>10.1e}",
                    t_svd / t_k,
                    t_svd / t_b,
                    max_dcj(&base, fast, exact).max(max_dcj(&base, warm, exact))
                );
            }
        }
    }
    println!("\nLoRA route, base decomposition given (f64): never forms W");
    println!(
        "{:>6} {:>5}  {:>9}  {:>9}  {:>8}  {:>10}",
        "n", "r", "svd s", "lora s", "speedup", "max|Δc_j|"
    );
    for &n in &sizes {
        let mut rng = Rng(9);
        let w0 = decaying(&mut rng, n);
        let base = spectral::decompose_gram(&w0, Side::Left, usize::MAX, par)
            .unwrap()
            .unwrap();
        for r in [1usize, 16, 64, 256] {
            let b = dense_of(&rng.gaussian(n, r, 1.0 / (n as f64).sqrt()));
            let a = dense_of(&rng.gaussian(r, n, 1.0 / (n as f64).sqrt()));
            let s = 2.0;
            let mut w = w0.clone();
            let bm = faer::MatRef::from_row_major_slice(&b.data, n, r);
            let am = faer::MatRef::from_row_major_slice(&a.data, r, n);
            let d = bm * am;
            for i in 0..n {
                for j in 0..n {
                    w.data[i * n + j] += s * d[(i, j)];
                }
            }
            // Above MAX_PROJECTED_RANK the route declines and the engine runs Krylov on W.
            let t = interleaved(
                rounds(n),
                &mut [
                    &mut || spectral::decompose(&w, Side::Left, KEEP, par).unwrap(),
                    &mut || {
                        topk::lora_top(
                            &base,
                            topk::LoraUpdate {
                                w0: &w0,
                                b: &b,
                                a: &a,
                                scaling: s,
                            },
                            Side::Left,
                            KEEP,
                            par,
                        )
                        .unwrap()
                        .or_else(|| {
                            topk::dense_top(&w, Side::Left, KEEP, Some(&base), par).unwrap()
                        })
                        .expect("converged")
                    },
                ],
            );
            let ((t_svd, exact), (t_l, fast)) = (&t[0], &t[1]);
            println!(
                "{n:>6} {r:>5}  {t_svd:>9.3}  {t_l:>9.3}  {:>7.1}×  {:>10.1e}",
                t_svd / t_l,
                max_dcj(&base, fast, exact)
            );
        }
    }
}
