//! The top singular vectors of one side without a full SVD: the top eigenpairs of the symmetric
//! operator S = X·Xᵀ (or any cheaper form of it) by restarted block Krylov iteration with
//! Rayleigh–Ritz.
//!
//! A result is returned only when every pair passes a residual test on S itself, so a slow
//! convergence costs time, never accuracy: ‖S·u − θ·u‖ must be below `ctol` times the gap to the
//! neighbouring Ritz values (the vector's error is at most about residual / gap, Davis–Kahan), or
//! below `atol`·θ₁ for values that are tied to working precision (their vectors are arbitrary
//! within the tie, for an exact SVD too). No convergence within `max_cycles` gives `None`, and the
//! caller falls back to the full SVD.

use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Accum, Mat, MatRef, Par};

use crate::checkpoint::Element;
use crate::demo::Rng;

/// A symmetric positive semi-definite operator on R^dim.
pub trait SymOp<T: Element>: Sync {
    fn dim(&self) -> usize;
    /// S·x for a block x (dim × b).
    fn apply(&self, x: MatRef<'_, T>, par: Par) -> Mat<T>;
}

/// S = X·Xᵀ for a dense X (d × e) in any layout.
pub struct Gram<'a, T: Element> {
    pub x: MatRef<'a, T>,
}

impl<T: Element> SymOp<T> for Gram<'_, T> {
    fn dim(&self) -> usize {
        self.x.nrows()
    }
    fn apply(&self, v: MatRef<'_, T>, par: Par) -> Mat<T> {
        let y = mul(self.x.transpose(), v, par);
        mul(self.x, y.as_ref(), par)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Extra Ritz vectors kept beyond the wanted ones: they speed up convergence of the last
    /// wanted pairs and give the gap to the next value.
    pub extra: usize,
    /// Krylov blocks added per cycle before the restart.
    pub steps: usize,
    pub max_cycles: usize,
    /// Accept a pair when residual ≤ ctol · gap …
    pub ctol: f64,
    /// … or residual ≤ atol · θ₁.
    pub atol: f64,
}

impl Params {
    pub fn for_precision<T: Element>() -> Params {
        let eps = if std::mem::size_of::<T>() == 4 {
            f32::EPSILON as f64
        } else {
            f64::EPSILON
        };
        Params {
            extra: 12,
            // Long Krylov runs between restarts: flat (noise-like) spectra need them.
            steps: 8,
            max_cycles: 40,
            // c_j moves by at most about residual/gap: 1e-5, ten times below the 1e-4 asked of it.
            ctol: 1e-5_f64.max(100.0 * eps),
            atol: 1e-12_f64.max(100.0 * eps),
        }
    }
}

/// The top `p` eigenpairs, θ descending; vectors orthonormal, dim × p.
#[derive(Debug, Clone)]
pub struct TopEigen<T: Element> {
    pub values: Vec<f64>,
    pub vectors: Mat<T>,
    /// Columns S was applied to, in all (the cost, in units of one matrix–vector product).
    pub applications: usize,
    pub cycles: usize,
}

pub fn mul<T: Element>(a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par) -> Mat<T> {
    let mut out = Mat::<T>::zeros(a.nrows(), b.ncols());
    faer::linalg::matmul::matmul(out.as_mut(), Accum::Replace, a, b, T::from_f64(1.0), par);
    out
}

/// An orthonormal basis of the span of `z`'s columns with `k`'s (orthonormal) columns projected
/// out, as wide as `z`: two passes of block Gram–Schmidt, then a column-pivoted QR to find the
/// independent part (dependent columns, which appear whenever an invariant subspace is found,
/// would otherwise feed noise or NaN into the Householder QR); the rest of the width is filled
/// with random directions orthogonal to everything before.
fn orthonormalize<T: Element>(k: MatRef<'_, T>, mut z: Mat<T>, rng: &mut Rng, par: Par) -> Mat<T> {
    let project = |z: &mut Mat<T>, k: MatRef<'_, T>| {
        if k.ncols() > 0 {
            for _ in 0..2 {
                let c = mul(k.transpose(), z.as_ref(), par);
                faer::linalg::matmul::matmul(
                    z.as_mut(),
                    Accum::Add,
                    k,
                    c.as_ref(),
                    T::from_f64(-1.0),
                    par,
                );
            }
        }
    };
    let (n, m) = (z.nrows(), z.ncols());
    let scale: f64 = (0..m)
        .map(|j| Into::<f64>::into(z.col(j).norm_l2()))
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    project(&mut z, k);
    // The common case, full rank: a blocked Householder QR, several times faster than the
    // pivoted one. Its diagonal tells whether the case holds.
    let plain = z.qr();
    let r = plain.thin_R();
    let full_rank = (0..r.nrows().min(m)).all(|j| {
        let rjj: f64 = Into::<f64>::into(r[(j, j)]).abs();
        rjj.is_finite() && rjj > 1e-10 * scale
    });
    if full_rank && r.nrows() >= m {
        return plain.compute_thin_Q();
    }
    let piv = z.col_piv_qr();
    let r = piv.thin_R();
    let rank = (0..r.nrows().min(m))
        .take_while(|&j| {
            let rjj: f64 = Into::<f64>::into(r[(j, j)]).abs();
            rjj.is_finite() && rjj > 1e-10 * scale
        })
        .count();
    let (order, _) = piv.P().arrays();
    let chosen = Mat::<T>::from_fn(n, rank, |i, j| z[(i, order[j])]);
    let q = chosen.qr().compute_thin_Q();
    if rank == m {
        return q;
    }
    let mut extra = Mat::<T>::from_fn(n, m - rank, |_, _| T::from_f64(rng.normal()));
    let before = hcat(&[k.to_owned(), q.clone()]);
    project(&mut extra, before.as_ref());
    let eq = extra.qr().compute_thin_Q();
    hcat(&[q, eq])
}

/// Ritz pairs of S on span(k) given sk = S·k: (θ descending, rotation D×D descending).
fn rayleigh_ritz<T: Element>(
    k: MatRef<'_, T>,
    sk: MatRef<'_, T>,
    par: Par,
) -> Option<(Vec<f64>, Mat<T>)> {
    let h = mul(k.transpose(), sk, par);
    let d = h.nrows();
    let half = T::from_f64(0.5);
    let hs = Mat::<T>::from_fn(d, d, |i, j| (h[(i, j)] + h[(j, i)]) * half);
    let evd = hs.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let (s, u) = (evd.S(), evd.U());
    let theta: Vec<f64> = (0..d).rev().map(|i| s[i].into()).collect();
    let rot = Mat::<T>::from_fn(d, d, |i, j| u[(i, d - 1 - j)]);
    Some((theta, rot))
}

fn hcat<T: Element>(blocks: &[Mat<T>]) -> Mat<T> {
    let rows = blocks[0].nrows();
    let cols: usize = blocks.iter().map(|b| b.ncols()).sum();
    let mut out = Mat::<T>::zeros(rows, cols);
    let mut at = 0;
    for b in blocks {
        out.as_mut().subcols_mut(at, b.ncols()).copy_from(b);
        at += b.ncols();
    }
    out
}

/// Top `p` eigenpairs of `op`, starting from `start` (its columns are the first guesses; the
/// rest of the block is random). `None` when `p` is not small against the dimension or the
/// iteration did not pass its residual test in time.
pub fn top_eigen<T: Element>(
    op: &dyn SymOp<T>,
    p: usize,
    start: Option<MatRef<'_, T>>,
    params: Params,
    par: Par,
) -> Option<TopEigen<T>> {
    let n = op.dim();
    let b = (p + params.extra).min(n);
    // The Krylov space must stay well inside R^n; fewer steps per cycle where it would not.
    let steps = params.steps.min((n / b.max(1)).saturating_sub(1));
    if p == 0 || steps == 0 {
        return None;
    }
    let mut rng = Rng(0x5eed_1a2c_0de5_0001 ^ n as u64);
    let mut u0 = Mat::<T>::zeros(n, b);
    let given = start.map_or(0, |s| s.ncols().min(b));
    if let Some(s) = start {
        u0.as_mut()
            .subcols_mut(0, given)
            .copy_from(s.subcols(0, given));
    }
    for j in given..b {
        for i in 0..n {
            u0[(i, j)] = T::from_f64(rng.normal());
        }
    }
    let empty = Mat::<T>::zeros(n, 0);
    let mut u = orthonormalize(empty.as_ref(), u0, &mut rng, par);
    let mut su = op.apply(u.as_ref(), par);
    let mut applications = b;
    for cycle in 0..=params.max_cycles {
        // Ritz pairs in span(u), and the test.
        let (theta, rot) = rayleigh_ritz(u.as_ref(), su.as_ref(), par)?;
        u = mul(u.as_ref(), rot.as_ref(), par);
        su = mul(su.as_ref(), rot.as_ref(), par);
        if converged(&u, &su, &theta, p, params) {
            return Some(TopEigen {
                values: theta[..p].to_vec(),
                vectors: u.as_ref().subcols(0, p).to_owned(),
                applications,
                cycles: cycle,
            });
        }
        if cycle == params.max_cycles {
            break;
        }
        // Expand: K = [u, S·u, S²·u, …] orthonormalised, with S·K kept alongside.
        let mut ks = vec![u.clone()];
        let mut sks = vec![su.clone()];
        for _ in 0..steps {
            let k = hcat(&ks);
            let q = orthonormalize(k.as_ref(), sks.last().unwrap().clone(), &mut rng, par);
            let sq = op.apply(q.as_ref(), par);
            applications += q.ncols();
            ks.push(q);
            sks.push(sq);
        }
        let (k, sk) = (hcat(&ks), hcat(&sks));
        let (_, rot) = rayleigh_ritz(k.as_ref(), sk.as_ref(), par)?;
        let top = rot.as_ref().subcols(0, b);
        u = mul(k.as_ref(), top, par);
        su = mul(sk.as_ref(), top, par);
    }
    None
}

fn converged<T: Element>(u: &Mat<T>, su: &Mat<T>, theta: &[f64], p: usize, params: Params) -> bool {
    let top = theta[0].max(0.0);
    if top == 0.0 {
        return true; // S = 0 on this span; every vector is an eigenvector.
    }
    (0..p).all(|j| {
        let r = (0..u.nrows())
            .map(|i| {
                let d: f64 =
                    Into::<f64>::into(su[(i, j)]) - theta[j] * Into::<f64>::into(u[(i, j)]);
                d * d
            })
            .sum::<f64>()
            .sqrt();
        let gap = theta
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != j)
            .map(|(_, t)| (t - theta[j]).abs())
            .fold(f64::INFINITY, f64::min);
        r <= params.ctol * gap || r <= params.atol * top
    })
}

/// Top `keep` singular values and vectors of one side of a dense matrix, starting from the
/// base's top vectors when given (a fine-tune moves them little, so the start is close). `None`
/// when the iteration declines or does not converge; callers then use the full SVD.
pub fn dense_top<T: Element>(
    w: &crate::checkpoint::Dense<T>,
    side: super::Side,
    keep: usize,
    base: Option<&super::Decomposition>,
    par: Par,
) -> crate::error::Result<Option<super::Decomposition>> {
    super::check_finite(w)?;
    let x = side_view(w, side);
    let keep = keep.min(x.nrows().min(x.ncols()));
    let params = Params::for_precision::<T>();
    let start = base.filter(|b| b.dim == x.nrows()).map(|b| {
        let n = (keep + params.extra).min(b.keep);
        b.as_mat().subcols(0, n).map(|v| T::from_f64(*v as f64))
    });
    let op = Gram { x };
    let found = top_eigen(&op, keep, start.as_ref().map(|s| s.as_ref()), params, par);
    Ok(found.map(|e| to_decomposition(&e)))
}

/// X with the wanted vectors as its left singular vectors: W (left) or Wᵀ (right), zero-copy.
fn side_view<T: Element>(w: &crate::checkpoint::Dense<T>, side: super::Side) -> MatRef<'_, T> {
    match side {
        super::Side::Left => MatRef::from_row_major_slice(&w.data, w.rows, w.cols),
        super::Side::Right => MatRef::from_column_major_slice(&w.data, w.cols, w.rows),
    }
}

fn to_decomposition<T: Element>(e: &TopEigen<T>) -> super::Decomposition {
    let (dim, keep) = (e.vectors.nrows(), e.vectors.ncols());
    let mut vectors = Vec::with_capacity(dim * keep);
    for j in 0..keep {
        vectors.extend((0..dim).map(|i| Into::<f64>::into(e.vectors[(i, j)]) as f32));
    }
    super::Decomposition {
        sigma: e.values.iter().map(|t| t.max(0.0).sqrt()).collect(),
        vectors,
        dim,
        keep,
    }
}

/// W·Wᵀ for W = X0 + s·L·R, applied without forming W.
struct LowRankUpdate<'a> {
    x0: MatRef<'a, f64>,
    l: MatRef<'a, f64>,
    r: MatRef<'a, f64>,
    s: f64,
}

impl LowRankUpdate<'_> {
    fn wt(&self, u: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let mut y = mul(self.x0.transpose(), u, par);
        let lu = mul(self.l.transpose(), u, par);
        faer::linalg::matmul::matmul(
            y.as_mut(),
            Accum::Add,
            self.r.transpose(),
            lu.as_ref(),
            self.s,
            par,
        );
        y
    }
    fn w(&self, y: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let mut u = mul(self.x0, y, par);
        let ry = mul(self.r, y, par);
        faer::linalg::matmul::matmul(u.as_mut(), Accum::Add, self.l, ry.as_ref(), self.s, par);
        u
    }
}

impl SymOp<f64> for LowRankUpdate<'_> {
    fn dim(&self) -> usize {
        self.x0.nrows()
    }
    fn apply(&self, x: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let y = self.wt(x, par);
        self.w(y.as_ref(), par)
    }
}

/// The same operator in the basis Z = [U0, Z2] of the base's vectors (plus the part of L outside
/// them, for tall matrices): Zᵀ·W·Wᵀ·Z = D + s·(E·Fᵀ + F·Eᵀ) + F·C·Fᵀ with D = diag(σ0²),
/// E = Zᵀ·X0·Rᵀ, F = Zᵀ·L, C = s²·R·Rᵀ. A product costs O(dim·r) instead of O(rows·cols).
/// Exact only as far as the cached U0 is, so its answer is a start, refined on the true operator.
struct Projected {
    d: Vec<f64>,
    e: Mat<f64>,
    f: Mat<f64>,
    c: Mat<f64>,
    s: f64,
}

impl SymOp<f64> for Projected {
    fn dim(&self) -> usize {
        self.d.len()
    }
    fn apply(&self, y: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let mut out = Mat::<f64>::from_fn(y.nrows(), y.ncols(), |i, j| self.d[i] * y[(i, j)]);
        let fy = mul(self.f.transpose(), y, par);
        let ey = mul(self.e.transpose(), y, par);
        let cfy = mul(self.c.as_ref(), fy.as_ref(), par);
        let acc = |out: &mut Mat<f64>, a: &Mat<f64>, b: &Mat<f64>, s: f64| {
            faer::linalg::matmul::matmul(out.as_mut(), Accum::Add, a.as_ref(), b.as_ref(), s, par)
        };
        acc(&mut out, &self.e, &fy, self.s);
        acc(&mut out, &self.f, &ey, self.s);
        acc(&mut out, &self.f, &cfy, 1.0);
        out
    }
}

/// Above this adapter rank [`lora_top`] declines.
pub const MAX_PROJECTED_RANK: usize = 32;

/// Top `keep` singular values and vectors of one side of W = W0 + s·B·A (B out×r, A r×in, both
/// in the analysed layout) without forming W: solved first in the cached base's basis, then
/// refined and verified on W·Wᵀ applied through W0, B and A.
#[allow(clippy::too_many_arguments)]
pub fn lora_top(
    base: &super::Decomposition,
    w0: &crate::checkpoint::Dense<f64>,
    b: &crate::checkpoint::Dense<f64>,
    a: &crate::checkpoint::Dense<f64>,
    s: f64,
    side: super::Side,
    keep: usize,
    par: Par,
) -> crate::error::Result<Option<super::Decomposition>> {
    super::check_finite(w0)?;
    let bm = MatRef::from_row_major_slice(&b.data, b.rows, b.cols);
    let am = MatRef::from_row_major_slice(&a.data, a.rows, a.cols);
    // X = W (left) or Wᵀ (right); the update is s·L·R in that orientation.
    let (x0, l, r) = match side {
        super::Side::Left => (side_view(w0, side), bm, am),
        super::Side::Right => (side_view(w0, side), am.transpose(), bm.transpose()),
    };
    let (d, rank) = (x0.nrows(), l.ncols());
    // High ranks: the update's span is too wide for a cheap start; the dense route is faster.
    if rank > MAX_PROJECTED_RANK {
        return Ok(None);
    }
    if base.dim != d || base.keep != base.sigma.len() || base.keep == 0 {
        return Ok(None); // needs the base's complete set of vectors
    }
    let keep = keep.min(d.min(x0.ncols()));
    let params = Params::for_precision::<f64>();
    // Products with the cached (f32) U0 run in f64, so the start is as exact as U0 itself: f32
    // products made it 16× worse on LLaMA shapes and cost a refinement cycle.
    let u0 = base.as_mat();
    let x0rt = mul(x0, r.transpose(), par);
    // U0ᵀ·[L, X0·Rᵀ] in one pass over U0.
    let q_e = u0t_mul(u0, hcat(&[l.to_owned(), x0rt.clone()]).as_ref(), par);
    let q = q_e.as_ref().subcols(0, rank).to_owned();
    let u0e = q_e.as_ref().subcols(rank, rank).to_owned();
    // The part of L outside span(U0): empty when U0 is complete (wide or square matrices).
    let mut z2 = Mat::<f64>::zeros(d, 0);
    if base.keep < d {
        let mut lp = l.to_owned();
        u0_mul_add(u0, q.as_ref(), -1.0, lp.as_mut(), par);
        let lnorm: f64 = l.norm_l2();
        let qr = lp.qr();
        let rr = qr.thin_R();
        let cols: Vec<usize> = (0..rr.nrows().min(rr.ncols()))
            .filter(|&i| rr[(i, i)].abs() > 1e-8 * lnorm)
            .collect();
        let qq = qr.compute_thin_Q();
        z2 = Mat::<f64>::from_fn(d, cols.len(), |i, j| qq[(i, cols[j])]);
    }
    // Z = [U0, Z2] is kept in its two parts: a copy of U0 would cost as much memory as W0.
    let d0 = u0.ncols();
    let vcat = |top: Mat<f64>, bottom: Mat<f64>| {
        let t = top.nrows();
        Mat::<f64>::from_fn(t + bottom.nrows(), top.ncols(), |i, j| {
            if i < t {
                top[(i, j)]
            } else {
                bottom[(i - t, j)]
            }
        })
    };
    let proj = Projected {
        d: (0..d0 + z2.ncols())
            .map(|i| base.sigma.get(i).map_or(0.0, |s| s * s))
            .collect(),
        e: vcat(u0e, mul(z2.transpose(), x0rt.as_ref(), par)),
        f: vcat(q, mul(z2.transpose(), l, par)),
        c: mul(r, r.transpose(), par) * faer::Scale(s * s),
        s,
    };
    // Start in the projected problem from the top base directions plus the update's span
    // (sketched down to `keep` directions for high ranks).
    let dim = proj.dim();
    let lead = (keep + params.extra).min(dim);
    let width = rank.min(keep);
    let (fs, es) = if width < rank {
        let mut rng = Rng(0x10a4_57a7);
        let omega = Mat::<f64>::from_fn(rank, width, |_, _| rng.normal());
        (
            mul(proj.f.as_ref(), omega.as_ref(), par),
            mul(proj.e.as_ref(), omega.as_ref(), par),
        )
    } else {
        (proj.f.clone(), proj.e.clone())
    };
    let mut start = Mat::<f64>::zeros(dim, lead + 2 * width);
    for i in 0..lead {
        start[(i, i)] = 1.0;
    }
    start.as_mut().subcols_mut(lead, width).copy_from(&fs);
    start
        .as_mut()
        .subcols_mut(lead + width, width)
        .copy_from(&es);
    let Some(guess) = projected_eigen(&proj, keep, &start, par) else {
        return Ok(None);
    };
    let mut start_w = Mat::<f64>::zeros(d, guess.ncols());
    u0_mul_add(
        u0,
        guess.as_ref().subrows(0, d0),
        1.0,
        start_w.as_mut(),
        par,
    );
    if z2.ncols() > 0 {
        faer::linalg::matmul::matmul(
            start_w.as_mut(),
            Accum::Add,
            z2.as_ref(),
            guess.as_ref().subrows(d0, z2.ncols()),
            1.0,
            par,
        );
    }
    let op = LowRankUpdate { x0, l, r, s };
    // The start is close: one Krylov block per cycle, so that a start that passes the test or
    // nearly does costs one or two products with W, not three.
    let refine = Params {
        steps: 1,
        extra: 8,
        ..params
    };
    let found = top_eigen(&op, keep, Some(start_w.as_ref()), refine, par);
    Ok(found.map(|e| to_decomposition(&e)))
}

/// Calls `f(first column, block)` over the cached U0 in blocks of columns converted to f64:
/// the conversion's buffer stays small where a whole f64 copy would be twice the matrix.
fn for_u0_blocks(u0: MatRef<'_, f32>, mut f: impl FnMut(usize, MatRef<'_, f64>)) {
    const BLOCK: usize = 256;
    let mut blk = Mat::<f64>::zeros(u0.nrows(), BLOCK);
    for start in (0..u0.ncols()).step_by(BLOCK) {
        let n = BLOCK.min(u0.ncols() - start);
        let mut b = blk.as_mut().subcols_mut(0, n);
        b.copy_from(u0.subcols(start, n).map(|x| *x as f64));
        f(start, b.rb());
    }
}

/// U0ᵀ·x in f64.
fn u0t_mul(u0: MatRef<'_, f32>, x: MatRef<'_, f64>, par: Par) -> Mat<f64> {
    let mut out = Mat::<f64>::zeros(u0.ncols(), x.ncols());
    for_u0_blocks(u0, |start, b| {
        let o = out.as_mut().subrows_mut(start, b.ncols());
        faer::linalg::matmul::matmul(o, Accum::Replace, b.transpose(), x, 1.0, par);
    });
    out
}

/// out += alpha·U0·y in f64.
fn u0_mul_add(
    u0: MatRef<'_, f32>,
    y: MatRef<'_, f64>,
    alpha: f64,
    mut out: faer::MatMut<'_, f64>,
    par: Par,
) {
    for_u0_blocks(u0, |start, b| {
        let ys = y.subrows(start, b.ncols());
        faer::linalg::matmul::matmul(out.rb_mut(), Accum::Add, b, ys, alpha, par);
    });
}

/// Top `keep` eigenvectors of the projected operator D + low rank, by Rayleigh–Ritz on
/// span(start, v_j, y_j) with y_j = (θ_j − D)⁻¹·(G − D)·v_j. For an exact pair y_j = v_j, and
/// y_j's error is of the order of θ_j's, itself quadratic in v_j's: a few passes suffice where a
/// polynomial (Krylov) method needs many, because these eigenvectors are rational functions of D.
fn projected_eigen(g: &Projected, keep: usize, start: &Mat<f64>, par: Par) -> Option<Mat<f64>> {
    let dim = g.dim();
    let mut rng = Rng(0x9a0_1ec7);
    let empty = Mat::<f64>::zeros(dim, 0);
    let mut q = orthonormalize(empty.as_ref(), start.clone(), &mut rng, par);
    let mut best = None;
    for pass in 0..10 {
        let sq = g.apply(q.as_ref(), par);
        let (theta, rot) = rayleigh_ritz(q.as_ref(), sq.as_ref(), par)?;
        let keep = keep.min(theta.len());
        let top = rot.as_ref().subcols(0, keep);
        let v = mul(q.as_ref(), top, par);
        let sv = mul(sq.as_ref(), top, par);
        let theta1 = theta[0].abs().max(f64::MIN_POSITIVE);
        let tiny = 1e-13 * theta1;
        let mut worst = 0.0f64;
        // For low ranks, all of (θ_j − D)⁻¹·[E F] (it holds the exact eigenvector once θ_j is
        // exact, so the error is quadratic); for higher ranks only the combination y_j.
        let vcols = g.e.ncols() + g.f.ncols();
        let full = vcols <= 8;
        let per = if full { vcols } else { 1 };
        let mut y = Mat::<f64>::zeros(dim, keep * per);
        for j in 0..keep {
            let mut r2 = 0.0;
            for i in 0..dim {
                let res = sv[(i, j)] - theta[j] * v[(i, j)];
                r2 += res * res;
            }
            worst = worst.max(r2.sqrt());
            for c in 0..per {
                let mut n2 = 0.0;
                for i in 0..dim {
                    let den = theta[j] - g.d[i];
                    let den = if den.abs() < tiny {
                        tiny.copysign(den)
                    } else {
                        den
                    };
                    let num = if !full {
                        sv[(i, j)] - g.d[i] * v[(i, j)]
                    } else if c < g.e.ncols() {
                        g.e[(i, c)]
                    } else {
                        g.f[(i, c - g.e.ncols())]
                    };
                    let yi = num / den;
                    y[(i, j * per + c)] = yi;
                    n2 += yi * yi;
                }
                // Unit columns, so that orthonormalisation judges them on equal terms.
                let n = n2.sqrt();
                if n > 0.0 {
                    for i in 0..dim {
                        y[(i, j * per + c)] /= n;
                    }
                }
            }
        }
        best = Some(v.clone());
        // Below the error that the cached f32 basis leaves (~3e-8·θ₁); the refinement sees to
        // the rest.
        if worst <= 1e-8 * theta1 {
            break;
        }
        // The first Ritz vectors lie in span(start): adding them would only add random fill.
        let basis = if pass == 0 {
            hcat(&[start.clone(), y])
        } else {
            hcat(&[start.clone(), v, y])
        };
        q = orthonormalize(empty.as_ref(), basis, &mut rng, par);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthonormalize_keeps_the_span_and_width_with_dependent_and_zero_columns() {
        let mut rng = Rng(5);
        let n = 200;
        let k = orthonormalize(
            Mat::<f64>::zeros(n, 0).as_ref(),
            Mat::<f64>::from_fn(n, 10, |_, _| rng.normal()),
            &mut rng,
            Par::Seq,
        );
        let mut z = Mat::<f64>::from_fn(n, 40, |_, _| rng.normal());
        for i in 0..n {
            z[(i, 5)] = 2.0 * z[(i, 0)]; // dependent
            z[(i, 6)] = 0.0; // zero
            z[(i, 7)] = k[(i, 3)]; // inside span(k)
        }
        let q = orthonormalize(k.as_ref(), z.clone(), &mut rng, Par::Seq);
        assert_eq!(q.ncols(), 40);
        let qq = q.transpose() * &q - Mat::<f64>::identity(40, 40);
        assert!(qq.norm_max() < 1e-12, "not orthonormal: {}", qq.norm_max());
        assert!(
            (k.transpose() * &q).norm_max() < 1e-12,
            "not orthogonal to k"
        );
        // Every column of z lies in span(k, q).
        let kq = hcat(&[k.clone(), q]);
        let rem = &z - &kq * (kq.transpose() * &z);
        assert!(rem.norm_max() < 1e-10, "span lost: {}", rem.norm_max());
    }
}
