//! The decomposition and the intruder rule against independent math: orthonormality, the
//! defining relation Wᵀu = σv, planted intruders, the 1/√m lower bound and sign invariance.

use crate::common::Rng;
use faer::Par;
use lorascope::checkpoint::Dense;
use lorascope::spectral::{self, rule, Decomposition, Side};

fn gaussian(rng: &mut Rng, rows: usize, cols: usize) -> Dense<f64> {
    rng.dense(rows, cols)
}

fn dot(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum()
}

#[test]
fn left_vectors_are_orthonormal_and_satisfy_the_svd() {
    let mut rng = Rng(1);
    for (m, n) in [(40, 40), (60, 25), (25, 60)] {
        let w = gaussian(&mut rng, m, n);
        let d = spectral::decompose(&w, Side::Left, usize::MAX, Par::Seq).unwrap();
        let p = m.min(n);
        assert_eq!((d.dim, d.keep, d.sigma.len()), (m, p, p));
        assert!(d.sigma.windows(2).all(|s| s[0] >= s[1]));
        for i in 0..p {
            for j in 0..p {
                let c: f64 = d
                    .column(i)
                    .iter()
                    .zip(d.column(j))
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((c - want).abs() < 1e-6, "({i},{j}) {c}");
            }
        }
        // ‖Wᵀ u_j‖ = σ_j for every left singular vector.
        for j in 0..p {
            let u = d.column(j);
            let norm = (0..n)
                .map(|c| {
                    (0..m)
                        .map(|r| w.data[r * n + c] * u[r] as f64)
                        .sum::<f64>()
                        .powi(2)
                })
                .sum::<f64>()
                .sqrt();
            assert!(
                (norm - d.sigma[j]).abs() < 1e-6 * d.sigma[0],
                "{m}×{n} j={j}"
            );
        }
        // Singular values agree with the values-only routine and with the transpose's.
        let s = spectral::singular_values(&w, Par::Seq).unwrap();
        let st = spectral::singular_values(&w.transpose(), Par::Seq).unwrap();
        for j in 0..p {
            assert!((s[j] - d.sigma[j]).abs() < 1e-10 && (st[j] - s[j]).abs() < 1e-10);
        }
    }
}

#[test]
fn right_vectors_of_w_are_left_vectors_of_its_transpose() {
    let mut rng = Rng(2);
    let w = gaussian(&mut rng, 30, 20);
    let r = spectral::decompose(&w, Side::Right, 5, Par::Seq).unwrap();
    let l = spectral::decompose(&w.transpose(), Side::Left, 5, Par::Seq).unwrap();
    assert_eq!(r.dim, 20);
    for j in 0..5 {
        let c: f64 = r
            .column(j)
            .iter()
            .zip(l.column(j))
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!((c.abs() - 1.0).abs() < 1e-6);
    }
}

/// [P] App. A.2: W0 + λ·v·vᵀ with v random and λ > σ_max(W0) makes v's direction the top
/// tuned vector, and it matches no base vector.
#[test]
fn planted_intruder_is_found() {
    let mut rng = Rng(3);
    let n = 512;
    let w0 = gaussian(&mut rng, n, n);
    let s0 = spectral::singular_values(&w0, Par::Seq).unwrap()[0];
    let v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let v: Vec<f64> = v.iter().map(|x| x / norm).collect();
    let lambda = 3.0 * s0;
    let mut w = w0.clone();
    for i in 0..n {
        for j in 0..n {
            w.data[i * n + j] += lambda * v[i] * v[j];
        }
    }
    let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
    let tuned = spectral::decompose(&w, Side::Left, 10, Par::Seq).unwrap();
    assert!(
        dot(tuned.column(0), &v).abs() > 0.9,
        "top tuned vector is the planted one"
    );
    let m = spectral::best_matches(&base, &tuned);
    let c: Vec<f64> = m.iter().map(|x| x.0).collect();
    assert!(c[0] < 0.2, "c_0 = {}", c[0]);
    assert_eq!(
        rule::Rule::new(10, 0.5).unwrap().intruders(&c),
        [0],
        "{c:?}"
    );
}

#[test]
fn identical_matrices_have_no_intruders_even_at_eps_099() {
    let mut rng = Rng(4);
    let w = gaussian(&mut rng, 80, 50);
    let d = spectral::decompose(&w, Side::Left, usize::MAX, Par::Seq).unwrap();
    let m = spectral::best_matches(&d, &d);
    assert!(m.iter().all(|(c, _)| *c > 0.999_999));
    assert_eq!(
        m.iter().enumerate().filter(|(j, (_, i))| j != i).count(),
        0,
        "each matches itself"
    );
    let c: Vec<f64> = m.iter().map(|x| x.0).collect();
    assert_eq!(rule::Rule::new(50, 0.99).unwrap().count(&c), 0);
}

#[test]
fn best_cos_is_at_least_one_over_sqrt_m_when_base_vectors_span_the_space() {
    let mut rng = Rng(5);
    for (m, n) in [(64, 64), (48, 96)] {
        let w0 = gaussian(&mut rng, m, n);
        let w = gaussian(&mut rng, m, n); // unrelated "fine-tune": a worst case
        let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
        let tuned = spectral::decompose(&w, Side::Left, usize::MAX, Par::Seq).unwrap();
        let bound = 1.0 / (m as f64).sqrt();
        for (j, (c, _)) in spectral::best_matches(&base, &tuned).iter().enumerate() {
            assert!(*c >= bound - 1e-9, "{m}×{n}: c_{j} = {c} < {bound}");
        }
    }
}

#[test]
fn sign_flips_of_singular_vectors_do_not_change_anything() {
    let mut rng = Rng(6);
    let w0 = gaussian(&mut rng, 40, 40);
    let w = gaussian(&mut rng, 40, 40);
    let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
    let tuned = spectral::decompose(&w, Side::Left, 10, Par::Seq).unwrap();
    let flip = |d: &Decomposition, every: usize| Decomposition {
        vectors: d
            .vectors
            .chunks(d.dim)
            .enumerate()
            .flat_map(|(j, col)| {
                col.iter()
                    .map(move |x| if j % every == 0 { -x } else { *x })
            })
            .collect(),
        ..d.clone()
    };
    assert_eq!(
        spectral::best_matches(&base, &tuned),
        spectral::best_matches(&flip(&base, 2), &flip(&tuned, 3))
    );
    // −W has the same singular vectors up to sign.
    let neg = Dense {
        data: w.data.iter().map(|x| -x).collect(),
        ..w.clone()
    };
    let tn = spectral::decompose(&neg, Side::Left, 10, Par::Seq).unwrap();
    let (a, b) = (
        spectral::best_matches(&base, &tuned),
        spectral::best_matches(&base, &tn),
    );
    for (x, y) in a.iter().zip(&b) {
        assert!((x.0 - y.0).abs() < 1e-9 && x.1 == y.1);
    }
}

#[test]
fn low_rank_route_matches_the_dense_singular_values() {
    let mut rng = Rng(7);
    let b = gaussian(&mut rng, 70, 5);
    let a = gaussian(&mut rng, 5, 40);
    let s = 2.5;
    let dense = Dense {
        rows: 70,
        cols: 40,
        data: (0..70)
            .flat_map(|i| (0..40).map(move |j| (i, j)))
            .map(|(i, j)| {
                s * (0..5)
                    .map(|k| b.data[i * 5 + k] * a.data[k * 40 + j])
                    .sum::<f64>()
            })
            .collect(),
    };
    let want = spectral::singular_values(&dense, Par::Seq).unwrap();
    let got = spectral::low_rank_singular_values(s, &b, &a).unwrap();
    assert_eq!(got.len(), 5);
    for k in 0..5 {
        assert!((got[k] - want[k]).abs() < 1e-10 * want[0]);
    }
    assert!(want[5] < 1e-10 * want[0], "rank 5");
}

#[test]
fn effective_rank_of_known_spectra() {
    assert!((spectral::effective_rank(&[1.0; 8]) - 8.0).abs() < 1e-12);
    assert!((spectral::effective_rank(&[3.0, 0.0, 0.0]) - 1.0).abs() < 1e-12);
    assert_eq!(spectral::effective_rank(&[0.0, 0.0]), 0.0);
    let e = spectral::effective_rank(&[0.5, 0.5, 1e-9]);
    assert!(e > 1.99 && e < 2.01);
}

#[test]
fn non_finite_weights_are_an_error_naming_the_position() {
    let mut w = Dense {
        rows: 2,
        cols: 3,
        data: vec![1.0f64; 6],
    };
    w.data[4] = f64::NAN;
    let e = spectral::decompose(&w, Side::Left, 2, Par::Seq)
        .unwrap_err()
        .to_string();
    assert!(e.contains("row 1, column 1"), "{e}");
}

#[test]
fn gram_route_matches_the_svd_and_declines_where_it_would_be_inaccurate() {
    let mut rng = Rng(8);
    for (m, n, side) in [
        (60, 60, Side::Left),
        (40, 90, Side::Left),
        (90, 40, Side::Right),
        // Tall on the vectors' side: U = A·V·Σ⁻¹ from the smaller Gram matrix.
        (90, 40, Side::Left),
        (40, 90, Side::Right),
        // More vectors than one block of U's columns (128): the second block is right too.
        (300, 140, Side::Left),
    ] {
        let w0 = gaussian(&mut rng, m, n);
        let mut w = w0.clone();
        w.data
            .iter_mut()
            .for_each(|x| *x += 0.05 * rng.normal() / (n as f64).sqrt());
        let svd = spectral::decompose(&w0, side, usize::MAX, Par::Seq).unwrap();
        let gram = spectral::decompose_gram(&w0, side, usize::MAX, Par::Seq)
            .unwrap()
            .expect("well conditioned");
        assert_eq!((gram.dim, gram.keep), (svd.dim, svd.keep));
        for (a, b) in gram.sigma.iter().zip(&svd.sigma) {
            assert!((a - b).abs() < 1e-10 * svd.sigma[0], "{a} vs {b}");
        }
        // The same unit vectors up to sign (Gaussian spectra have no ties).
        for j in 0..svd.keep {
            let dot: f64 = gram
                .column(j)
                .iter()
                .zip(svd.column(j))
                .map(|(x, y)| *x as f64 * *y as f64)
                .sum();
            assert!(
                (dot.abs() - 1.0).abs() < 1e-6,
                "{m}×{n} {side:?} u_{j}: {dot}"
            );
        }
        // Same c_j and best matches for a fine-tune of it.
        let tuned = spectral::decompose(&w, side, 10, Par::Seq).unwrap();
        let (a, b) = (
            spectral::best_matches(&svd, &tuned),
            spectral::best_matches(&gram, &tuned),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x.0 - y.0).abs() < 1e-6 && x.1 == y.1, "{x:?} vs {y:?}");
        }
    }
    // Nearly rank-deficient (σ_min/σ_max = 1e-9): declined, the SVD is used instead.
    let u = gaussian(&mut rng, 30, 1);
    let v = gaussian(&mut rng, 1, 30);
    let mut w = gaussian(&mut rng, 30, 30);
    w.data.iter_mut().for_each(|x| *x *= 1e-9);
    for i in 0..30 {
        for j in 0..30 {
            w.data[i * 30 + j] += u.data[i] * v.data[j];
        }
    }
    assert!(
        spectral::decompose_gram(&w, Side::Left, usize::MAX, Par::Seq)
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_empty_matrix_is_an_error_not_a_panic() {
    let w = Dense {
        rows: 0,
        cols: 5,
        data: Vec::<f64>::new(),
    };
    let e = spectral::decompose(&w, Side::Left, 10, Par::Seq)
        .unwrap_err()
        .to_string();
    assert!(e.contains("empty matrix (0×5)"), "{e}");
    assert!(spectral::decompose_gram(&w, Side::Left, 10, Par::Seq).is_err());
    assert!(spectral::singular_values(&w, Par::Seq).is_err());
}

#[test]
fn gram_singular_values_match_the_svd_where_it_matters() {
    let mut rng = Rng(11);
    // Square, wide and tall; full rank, and rank 6 plus noise 1e-6 (a full fine-tune's ΔW has
    // a fast-decaying spectrum with a long tail).
    for (m, n) in [(80, 80), (50, 120), (130, 40)] {
        let full = gaussian(&mut rng, m, n);
        let (b, a) = (gaussian(&mut rng, m, 6), gaussian(&mut rng, 6, n));
        let noise = gaussian(&mut rng, m, n);
        let mut low = Dense {
            rows: m,
            cols: n,
            data: vec![0.0; m * n],
        };
        for i in 0..m {
            for j in 0..n {
                let ba: f64 = (0..6).map(|t| b.data[i * 6 + t] * a.data[t * n + j]).sum();
                low.data[i * n + j] = ba + 1e-6 * noise.data[i * n + j];
            }
        }
        for w in [&full, &low] {
            let svd = spectral::singular_values(w, Par::Seq).unwrap();
            let gram = spectral::gram_singular_values(w, Par::Seq).unwrap();
            assert_eq!(gram.len(), m.min(n));
            assert!(gram.windows(2).all(|s| s[0] >= s[1]));
            let s1 = svd[0];
            for (g, s) in gram.iter().zip(&svd) {
                assert!((g - s).abs() <= 1e-7 * s1, "{m}×{n}: {g} vs {s}");
            }
            // Values above the floor keep their relative digits.
            for (g, s) in gram.iter().zip(&svd).filter(|(_, s)| **s > 1e-4 * s1) {
                assert!((g - s).abs() <= 1e-9 * s, "{m}×{n}: {g} vs {s}");
            }
            let (er_g, er_s) = (
                spectral::effective_rank(&gram),
                spectral::effective_rank(&svd),
            );
            assert!((er_g - er_s).abs() <= 1e-6 * er_s, "{er_g} vs {er_s}");
            let fro2: f64 = w.data.iter().map(|x| x * x).sum();
            let s2: f64 = gram.iter().map(|s| s * s).sum();
            assert!((s2 - fro2).abs() <= 1e-12 * fro2);
        }
    }
    let zero = Dense {
        rows: 3,
        cols: 4,
        data: vec![0.0; 12],
    };
    assert_eq!(
        spectral::gram_singular_values(&zero, Par::Seq).unwrap(),
        [0.0; 3]
    );
}

/// W = Σ σ_i u_i v_iᵀ from unit columns `u` (column-major n × p) and `v` (n × p).
fn synthesize(u: &[Vec<f64>], sigma: &[f64], v: &[Vec<f64>]) -> Dense<f64> {
    let n = u[0].len();
    let mut w = Dense {
        rows: n,
        cols: n,
        data: vec![0.0; n * n],
    };
    for ((ui, s), vi) in u.iter().zip(sigma).zip(v) {
        for (row, x) in w.data.chunks_mut(n).zip(ui) {
            row.iter_mut().zip(vi).for_each(|(w, y)| *w += s * x * y);
        }
    }
    w
}

/// The columns of a random orthogonal n × n matrix.
fn orthonormal(rng: &mut Rng, n: usize) -> Vec<Vec<f64>> {
    let q = rng.gaussian(n, n, 1.0).qr().compute_thin_Q();
    (0..n)
        .map(|j| (0..n).map(|i| q[(i, j)]).collect())
        .collect()
}

#[test]
fn a_rotation_inside_a_repeated_base_value_is_no_intruder_for_the_degenerate_aware_rule() {
    use spectral::overlap::overlaps;
    use spectral::rule::RuleKind;
    let n = 40;
    let mut rng = Rng(24);
    let (q1, q2) = (orthonormal(&mut rng, n), orthonormal(&mut rng, n));
    // σ0 with an exactly repeated value at 1 and 2; the rest well apart.
    let sigma0: Vec<f64> = (0..n)
        .map(|i| match i {
            0 => 10.0,
            1 | 2 => 8.0,
            _ => 6.0 * 0.93f64.powi(i as i32),
        })
        .collect();
    let base =
        spectral::decompose(&synthesize(&q1, &sigma0, &q2), Side::Left, n, Par::Seq).unwrap();
    // Whatever basis the SVD chose in the repeated plane, the tuned vectors sit at 45° in it:
    // each has |cos| 1/√2 with both base vectors there, and the tuned values split the tie.
    let b = |j: usize| -> Vec<f64> { base.column(j).iter().map(|x| *x as f64).collect() };
    let mut u: Vec<Vec<f64>> = (0..n).map(b).collect();
    let (b1, b2) = (b(1), b(2));
    let h = std::f64::consts::FRAC_1_SQRT_2;
    u[1] = b1.iter().zip(&b2).map(|(x, y)| h * (x + y)).collect();
    u[2] = b1.iter().zip(&b2).map(|(x, y)| h * (x - y)).collect();
    let mut sigma = sigma0.clone();
    (sigma[1], sigma[2]) = (8.3, 8.1);
    let tuned =
        spectral::decompose(&synthesize(&u, &sigma, &q2), Side::Left, 10, Par::Seq).unwrap();
    let o = overlaps(&base, &tuned, 0.005);
    for j in [1, 2] {
        assert!((o[j].max_cos - h).abs() < 1e-5, "c_{j} = {}", o[j].max_cos);
        assert!(
            (o[j].participation - 2.0).abs() < 1e-4,
            "PR_{j} = {}",
            o[j].participation
        );
        assert!(
            o[j].cluster_cos > 1.0 - 1e-6,
            "cluster c_{j} = {}",
            o[j].cluster_cos
        );
        assert_eq!(o[j].cluster, 1..3);
    }
    // The other vectors are their base vectors: c = cluster c = 1, PR = 1, clusters of one.
    for j in [0, 3, 9] {
        assert!(o[j].max_cos > 1.0 - 1e-6 && (o[j].participation - 1.0).abs() < 1e-5);
        assert_eq!((o[j].cluster_cos, o[j].cluster.len()), (o[j].max_cos, 1));
    }
    let paper = rule::Rule::new(10, 0.75).unwrap();
    let aware = paper.with_kind(RuleKind::DegenerateAware);
    let cs =
        |r: &rule::Rule| -> Vec<f64> { o.iter().map(|x| r.c(x.max_cos, x.cluster_cos)).collect() };
    assert_eq!(paper.intruders(&cs(&paper)), [1, 2]);
    assert!(aware.intruders(&cs(&aware)).is_empty());
    // The SVD's two 8s differ in their last bits at most: a δ of 1e-9 still groups them.
    assert_eq!(overlaps(&base, &tuned, 1e-9)[1].cluster, 1..3);
}

#[test]
fn a_planted_intruder_is_spread_over_the_base_and_both_rules_agree() {
    use spectral::overlap::overlaps;
    use spectral::rule::RuleKind;
    let n = 60;
    let mut rng = Rng(25);
    let w0 = gaussian(&mut rng, n, n);
    let v: Vec<f64> = {
        let x: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let norm = x.iter().map(|a| a * a).sum::<f64>().sqrt();
        x.into_iter().map(|a| a / norm).collect()
    };
    let mut w = w0.clone();
    for i in 0..n {
        for j in 0..n {
            w.data[i * n + j] += 6.0 * v[i] * v[j];
        }
    }
    let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
    let tuned = spectral::decompose(&w, Side::Left, 10, Par::Seq).unwrap();
    let o = overlaps(&base, &tuned, 0.005);
    assert!(o[0].max_cos < 0.5, "c_0 = {}", o[0].max_cos);
    // A random direction spreads over all n base vectors: PR near n/3 (E Σ c⁴ = 3/(n+2)).
    assert!(o[0].participation > 8.0, "PR_0 = {}", o[0].participation);
    let paper = rule::Rule::new(10, 0.5).unwrap();
    let aware = paper.with_kind(RuleKind::DegenerateAware);
    let cs =
        |r: &rule::Rule| -> Vec<f64> { o.iter().map(|x| r.c(x.max_cos, x.cluster_cos)).collect() };
    assert_eq!(paper.intruders(&cs(&paper)), [0]);
    assert_eq!(aware.intruders(&cs(&aware)), [0]);
    // PR_j is 1/Σ c_ij⁴ of the same overlaps c_j is the largest of.
    let c: Vec<f64> = (0..n)
        .map(|i| {
            dot(
                base.column(i),
                &tuned
                    .column(0)
                    .iter()
                    .map(|x| *x as f64)
                    .collect::<Vec<_>>(),
            )
            .abs()
        })
        .collect();
    let pr = 1.0 / c.iter().map(|x| x.powi(4)).sum::<f64>();
    assert!(
        (o[0].participation - pr).abs() < 1e-4 * pr,
        "{} vs {pr}",
        o[0].participation
    );
}
