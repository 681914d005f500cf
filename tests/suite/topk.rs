//! The fast paths against the exact SVD: the tuned top-k by block Krylov (dense matrices, a
//! flat top spectrum, both sides) and the LoRA route that never forms W (square and tall, on
//! planted updates and on the real MiniLM adapter).

use crate::common::*;
use faer::{Mat, Par};
use lorascope::checkpoint::{Dense, Inputs, Selection};
use lorascope::spectral::{self, topk, Decomposition, Side};

fn dense_of(m: &Mat<f64>) -> Dense<f64> {
    Dense::from_mat(m.as_ref())
}

fn orthogonal(rng: &mut Rng, n: usize, k: usize) -> Mat<f64> {
    rng.gaussian(n, k, 1.0).qr().compute_thin_Q()
}

/// U·diag(s)·Vᵀ with random orthogonal factors.
fn with_spectrum(rng: &mut Rng, m: usize, n: usize, s: &[f64]) -> Dense<f64> {
    let p = s.len();
    let u = orthogonal(rng, m, p);
    let v = orthogonal(rng, n, p);
    let us = Mat::from_fn(m, p, |i, j| u[(i, j)] * s[j]);
    dense_of(&(us * v.transpose()))
}

/// As [`assert_matches_cj`] (σ and c_j, here to `tol_cj`), and every vector the exact one up to
/// sign: the spectra of these tests have no ties.
fn assert_matches_exact(
    fast: &Decomposition,
    exact: &Decomposition,
    base: &Decomposition,
    keep: usize,
    tol_cj: f64,
    what: &str,
) {
    assert_eq!((fast.dim, fast.keep), (exact.dim, keep), "{what}");
    assert_matches_cj(fast, exact, base, tol_cj, what);
    // Unit vectors, each the same as the exact one up to sign (the spectra here have no ties).
    for j in 0..keep {
        let dot: f64 = fast
            .column(j)
            .iter()
            .zip(exact.column(j))
            .map(|(x, y)| *x as f64 * *y as f64)
            .sum();
        assert!(
            (dot.abs() - 1.0).abs() < 1e-5,
            "{what} vector {j}: |⟨u, u*⟩| = {dot}"
        );
    }
}

#[test]
fn krylov_top_k_matches_the_svd_on_gaussian_matrices_both_sides() {
    let mut rng = Rng(11);
    for (m, n, side) in [
        (300, 500, Side::Left),
        (500, 300, Side::Left),
        (300, 500, Side::Right),
    ] {
        let base = rng.dense(m, n);
        let mut w = base.clone();
        w.data
            .iter_mut()
            .for_each(|x| *x += 0.3 * rng.normal() / (n as f64).sqrt());
        let exact = spectral::decompose(&w, side, 32, Par::Seq).unwrap();
        let b = spectral::decompose(&base, side, usize::MAX, Par::Seq).unwrap();
        let fast = topk::dense_top(&w, side, 32, None, Par::Seq)
            .unwrap()
            .expect("converges");
        assert_matches_exact(&fast, &exact, &b, 32, 1e-6, &format!("{m}×{n} {side:?}"));
    }
}

#[test]
fn krylov_top_k_is_exact_on_a_flat_top_spectrum() {
    // 40 values within 1% of each other (gaps of 2.5e-4·σ₁), then a flat bulk at half of that:
    // the case where a fixed number of power iterations gets c_j wrong.
    let mut rng = Rng(12);
    let (m, n) = (400, 400);
    let s: Vec<f64> = (0..n)
        .map(|i| {
            if i < 40 {
                1.0 - 2.5e-4 * i as f64
            } else {
                0.5 - 1e-4 * i as f64
            }
        })
        .collect();
    let w = with_spectrum(&mut rng, m, n, &s);
    let mut w0 = w.clone();
    w0.data
        .iter_mut()
        .for_each(|x| *x += 0.02 * rng.normal() / (n as f64).sqrt());
    let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
    let exact = spectral::decompose(&w, Side::Left, 32, Par::Seq).unwrap();
    let fast = topk::dense_top(&w, Side::Left, 32, None, Par::Seq)
        .unwrap()
        .expect("converges");
    assert_matches_exact(&fast, &exact, &base, 32, 1e-4, "flat top");
}

#[test]
fn krylov_declines_when_the_wanted_vectors_are_not_few() {
    let mut rng = Rng(13);
    let w = rng.dense(60, 60);
    assert!(topk::dense_top(&w, Side::Left, 32, None, Par::Seq)
        .unwrap()
        .is_none());
}

fn planted_lora(
    rng: &mut Rng,
    m: usize,
    n: usize,
    r: usize,
) -> (Dense<f64>, Dense<f64>, Dense<f64>) {
    // A decaying base spectrum, like real weights, and an update strong enough to intrude.
    let p = m.min(n);
    let s: Vec<f64> = (0..p).map(|i| 1.0 / (1.0 + 0.05 * i as f64)).collect();
    let w0 = with_spectrum(rng, m, n, &s);
    let b = dense_of(&rng.gaussian(m, r, 2.0 / (m as f64).sqrt()));
    let a = dense_of(&rng.gaussian(r, n, 1.0 / (n as f64).sqrt()));
    (w0, b, a)
}

fn merged(w0: &Dense<f64>, b: &Dense<f64>, a: &Dense<f64>, s: f64) -> Dense<f64> {
    let bm = faer::MatRef::from_row_major_slice(&b.data, b.rows, b.cols);
    let am = faer::MatRef::from_row_major_slice(&a.data, a.rows, a.cols);
    let d = bm * am;
    let mut w = w0.clone();
    for i in 0..w.rows {
        for j in 0..w.cols {
            w.data[i * w.cols + j] += s * d[(i, j)];
        }
    }
    w
}

#[test]
fn lora_route_matches_the_svd_of_the_merged_matrix() {
    let mut rng = Rng(14);
    // Square, wide and tall (there U0 does not span R^m and the update leaves its span).
    for (m, n, side, r, s) in [
        (300, 300, Side::Left, 4, 2.0),
        (240, 400, Side::Left, 8, 1.0),
        (400, 240, Side::Left, 8, 1.0),
        (400, 240, Side::Right, 1, 4.0),
    ] {
        let (w0, b, a) = planted_lora(&mut rng, m, n, r);
        let w = merged(&w0, &b, &a, s);
        let base = spectral::decompose(&w0, side, usize::MAX, Par::Seq).unwrap();
        let exact = spectral::decompose(&w, side, 32, Par::Seq).unwrap();
        let (fast, trace) = topk::lora_top_traced(
            &base,
            topk::LoraUpdate {
                w0: &w0,
                b: &b,
                a: &a,
                scaling: s,
            },
            side,
            32,
            Par::Seq,
        )
        .unwrap()
        .expect("converges");
        let what = format!("{m}×{n} {side:?} r={r}");
        // One product with W, then at most one correction round: the route's speed rests on it.
        assert!(
            !trace.krylov && trace.exact_columns <= 36 && trace.corrections <= 1,
            "{what}: {trace:?}"
        );
        assert_matches_exact(&fast, &exact, &base, 32, 1e-6, &what);
        // The planted update does intrude: some c_j is low, so the test is not vacuous.
        let low = spectral::best_matches(&base, &exact)
            .iter()
            .take(10)
            .any(|c| c.0 < 0.5);
        assert!(low, "{what}: no intruder planted");
    }
}

#[test]
fn fast_paths_match_the_svd_on_the_real_minilm_checkpoints() {
    let f = fixtures().join("minilm");
    let base_path = f.join("base.safetensors");
    for side in [Side::Left, Side::Right] {
        // Full fine-tune: Krylov on the dense tuned matrix.
        let full = Inputs::open(
            &base_path,
            &f.join("full-ft.safetensors"),
            &Selection::default(),
        )
        .unwrap();
        // LoRA: the route that never forms W, against the SVD of the merged matrix.
        let lora = Inputs::open(&base_path, &f.join("lora-r8"), &Selection::default()).unwrap();
        // W0, its full decomposition, W and W's exact top 32.
        let exact_of = |inputs: &Inputs, p| {
            let w0 = inputs.base_matrix::<f64>(p).unwrap();
            let base = spectral::decompose(&w0, side, usize::MAX, Par::Seq).unwrap();
            let w = inputs.tuned_matrix::<f64>(p).unwrap();
            let exact = spectral::decompose(&w, side, 32, Par::Seq).unwrap();
            (w0, base, w, exact)
        };
        for p in full.selected() {
            let (_, base, w, exact) = exact_of(&full, p);
            // From a random start, and from the base's vectors as the engine starts.
            for start in [None, Some(&base)] {
                let fast = topk::dense_top(&w, side, 32, start, Par::Seq)
                    .unwrap()
                    .expect("converges");
                assert_matches_cj(
                    &fast,
                    &exact,
                    &base,
                    1e-4,
                    &format!("full {} {side:?} base start {}", p.name, start.is_some()),
                );
            }
        }
        for p in lora.selected() {
            let (w0, base, _, exact) = exact_of(&lora, p);
            let lf = lora.lora_factors(p).unwrap().expect("a LoRA module");
            let (fast, trace) = topk::lora_top_traced(
                &base,
                topk::LoraUpdate {
                    w0: &w0,
                    b: &lf.b,
                    a: &lf.a,
                    scaling: lf.scaling,
                },
                side,
                32,
                Par::Seq,
            )
            .unwrap()
            .expect("converges");
            assert!(
                !trace.krylov && trace.exact_columns <= 36,
                "lora {} {side:?}: {trace:?}",
                p.name
            );
            assert_matches_cj(
                &fast,
                &exact,
                &base,
                1e-4,
                &format!("lora {} {side:?}", p.name),
            );
        }
    }
}

/// Same σ (to 1e-9·σ₁) and c_j against `base` (to `tol_cj`) as the exact SVD, for every kept
/// vector. Real spectra have near-ties, where single vectors are ill-defined: this is all that
/// can be asked of them.
fn assert_matches_cj(
    fast: &Decomposition,
    exact: &Decomposition,
    base: &Decomposition,
    tol_cj: f64,
    what: &str,
) {
    for j in 0..fast.keep {
        let (a, b) = (fast.sigma[j], exact.sigma[j]);
        assert!(
            (a - b).abs() < 1e-9 * exact.sigma[0],
            "{what} σ{j}: {a} vs {b}"
        );
    }
    let (cf, ce) = (
        spectral::best_matches(base, fast),
        spectral::best_matches(base, exact),
    );
    let worst = cf
        .iter()
        .zip(&ce)
        .map(|(a, b)| (a.0 - b.0).abs())
        .fold(0.0, f64::max);
    assert!(worst < tol_cj, "{what}: max |Δc_j| = {worst:e}");
}

#[test]
fn an_untrained_adapter_leaves_the_base_vectors() {
    // B = 0 (PEFT's initialisation): W = W0, so every c_j is 1 and σ are the base's.
    let mut rng = Rng(15);
    let (w0, mut b, a) = planted_lora(&mut rng, 300, 300, 4);
    b.data.iter_mut().for_each(|x| *x = 0.0);
    let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
    let fast = topk::lora_top(
        &base,
        topk::LoraUpdate {
            w0: &w0,
            b: &b,
            a: &a,
            scaling: 2.0,
        },
        Side::Left,
        32,
        Par::Seq,
    )
    .unwrap()
    .expect("converges");
    for (j, (c, i)) in spectral::best_matches(&base, &fast).into_iter().enumerate() {
        assert!((c - 1.0).abs() < 1e-5 && i == j, "c_{j} = {c} at base {i}");
        assert!((fast.sigma[j] - base.sigma[j]).abs() < 1e-9 * base.sigma[0]);
    }
}

#[test]
fn a_non_finite_base_weight_is_reported_at_its_position_whatever_the_update() {
    // The route finds bad weights through X0·Rᵀ rather than a pass over W0: every weight must
    // reach that product, also where the update is zero (∞·0) and on either side.
    let mut rng = Rng(16);
    let (w0, b, a) = planted_lora(&mut rng, 120, 90, 2);
    let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
    let base_r = spectral::decompose(&w0, Side::Right, usize::MAX, Par::Seq).unwrap();
    let zero = |m: &Dense<f64>| Dense {
        data: vec![0.0; m.data.len()],
        ..m.clone()
    };
    for (bad, at) in [
        (f64::NAN, 0),
        (f64::INFINITY, 7 * 90 + 11),
        (f64::NEG_INFINITY, 119 * 90 + 89),
    ] {
        let mut w = w0.clone();
        w.data[at] = bad;
        let want = format!("row {}, column {}", at / 90, at % 90);
        for (side, basis) in [(Side::Left, &base), (Side::Right, &base_r)] {
            for (bb, aa) in [(&b, &a), (&zero(&b), &a), (&b, &zero(&a))] {
                let got = topk::lora_top(
                    basis,
                    topk::LoraUpdate {
                        w0: &w,
                        b: bb,
                        a: aa,
                        scaling: 2.0,
                    },
                    side,
                    16,
                    Par::Seq,
                );
                let msg = got
                    .expect_err("a non-finite weight is an error")
                    .to_string();
                assert!(msg.contains(&want), "{side:?} {bad}: {msg}");
            }
        }
    }
}
