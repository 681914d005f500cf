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

use faer::{Accum, ColRef, Mat, MatRef, Par};

use crate::matrix::Element;
use crate::rng::Rng;

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
        let y = mul_wide(self.x.transpose(), v, par);
        mul_wide(self.x, y.as_ref(), par)
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
    /// Within a cycle, test the Ritz pairs of the whole Krylov space every this many steps, so
    /// that a run stops soon after it converges rather than at the end of its cycle.
    pub check_every: usize,
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
            // Long Krylov runs between restarts: flat (noise-like) spectra need them. Tested
            // every other block, a run stops about when it converges: on a 4096² full
            // fine-tune, 660 columns instead of 1100 (8 steps, tested per cycle).
            steps: 12,
            check_every: 2,
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

/// a·b for a large a and a narrow b. Where a is stored by rows (W as checkpoints store it, or
/// the transpose of a column-major matrix), faer's kernels run 1.2–2× faster on the transposed
/// problem (bᵀ·aᵀ)ᵀ, whose large operand is then column-major.
pub fn mul_wide<T: Element>(a: MatRef<'_, T>, b: MatRef<'_, T>, par: Par) -> Mat<T> {
    if a.col_stride() != 1 || a.row_stride() == 1 {
        return mul(a, b, par);
    }
    let mut ut = Mat::<T>::zeros(b.ncols(), a.nrows());
    faer::linalg::matmul::matmul(
        ut.as_mut(),
        Accum::Replace,
        b.transpose(),
        a.transpose(),
        T::from_f64(1.0),
        par,
    );
    ut.transpose().to_owned()
}

/// ‖a − t·b‖₂ of two columns (b may be `None` for ‖a‖₂). faer's `norm_l2` scales against
/// overflow and took about 50 µs per 4096-vector here against 1 µs for a plain sum of squares
/// (which these near-unit vectors cannot overflow); a sum that over- or underflows falls back
/// to it.
pub(super) fn dist<T: Element>(a: ColRef<'_, T>, t: f64, b: Option<ColRef<'_, T>>) -> f64 {
    let f = |x: &T| -> f64 { (*x).into() };
    let mut acc = [0.0f64; 8];
    let mut add = |i: usize, d: f64| acc[i % 8] += d * d;
    match (a.try_as_col_major(), b.map(|b| b.try_as_col_major())) {
        (Some(a), None) => a
            .as_slice()
            .iter()
            .enumerate()
            .for_each(|(i, x)| add(i, f(x))),
        (Some(a), Some(Some(b))) => {
            let (a, b) = (a.as_slice(), b.as_slice());
            a.iter()
                .zip(b)
                .enumerate()
                .for_each(|(i, (x, y))| add(i, f(x) - t * f(y)));
        }
        _ => (0..a.nrows()).for_each(|i| add(i, f(&a[i]) - b.map_or(0.0, |b| t * f(&b[i])))),
    }
    let sum: f64 = acc.iter().sum();
    if sum.is_finite() && sum >= f64::MIN_POSITIVE / f64::EPSILON {
        return sum.sqrt();
    }
    match b {
        None => a.norm_l2().into(),
        Some(b) => {
            let d = Mat::<f64>::from_fn(a.nrows(), 1, |i, _| f(&a[i]) - t * f(&b[i]));
            d.col(0).norm_l2()
        }
    }
}

pub(super) fn norm<T: Element>(a: ColRef<'_, T>) -> f64 {
    dist(a, 0.0, None)
}

/// An orthonormal basis of the span of `z`'s columns with `k`'s (orthonormal) columns projected
/// out, as wide as `z`: block Gram–Schmidt, then a column-pivoted QR to find the independent
/// part (dependent columns, which appear whenever an invariant subspace is found, would
/// otherwise feed noise or NaN into the Householder QR); the rest of the width is filled with
/// random directions orthogonal to everything before.
pub(super) fn orthonormalize<T: Element>(
    k: MatRef<'_, T>,
    z: Mat<T>,
    rng: &mut Rng,
    par: Par,
) -> Mat<T> {
    orthonormal_block(k, z, None, rng, par).0
}

/// `orthonormalize`, given kᵀ·z where the caller has it (its first Gram–Schmidt pass is then
/// free), also returning R of the projected z = Q·R when that had full rank.
pub(super) fn orthonormal_block<T: Element>(
    k: MatRef<'_, T>,
    mut z: Mat<T>,
    kt_z: Option<MatRef<'_, T>>,
    rng: &mut Rng,
    par: Par,
) -> (Mat<T>, Option<Mat<T>>) {
    let project = |z: &mut Mat<T>, k: MatRef<'_, T>, c: MatRef<'_, T>| {
        faer::linalg::matmul::matmul(z.as_mut(), Accum::Add, k, c, T::from_f64(-1.0), par);
    };
    let (n, m) = (z.nrows(), z.ncols());
    let norms = |z: &Mat<T>| -> Vec<f64> { (0..m).map(|j| norm(z.col(j))).collect() };
    let before = norms(&z);
    let scale = before
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    if k.ncols() > 0 {
        match kt_z {
            Some(c) => project(&mut z, k, c),
            None => {
                let c = mul(k.transpose(), z.as_ref(), par);
                project(&mut z, k, c.as_ref())
            }
        }
        // One classical pass leaves z off k by about ε·‖z before‖/‖z after‖: a second pass
        // only where a column lost more than 95% of its length ("twice is enough").
        let cancelled = before
            .iter()
            .zip(norms(&z))
            .any(|(b, a)| a.is_nan() || a < 0.05 * b);
        if cancelled {
            let c = mul(k.transpose(), z.as_ref(), par);
            project(&mut z, k, c.as_ref());
        }
    }
    if let Some((q, r)) = full_rank_qr(z.as_ref(), scale, par) {
        return (q, Some(r));
    }
    let piv = z.col_piv_qr();
    let r = piv.thin_R();
    let rank = (0..r.nrows().min(m))
        .take_while(|&j| independent(r, j, scale))
        .count();
    let (order, _) = piv.P().arrays();
    let chosen = Mat::<T>::from_fn(n, rank, |i, j| z[(i, order[j])]);
    let q = chosen.qr().compute_thin_Q();
    if rank == m {
        return (q, None);
    }
    let mut extra = Mat::<T>::from_fn(n, m - rank, |_, _| T::from_f64(rng.normal()));
    let prior = hcat(&[k.to_owned(), q.clone()]);
    for _ in 0..2 {
        let c = mul(prior.transpose(), extra.as_ref(), par);
        project(&mut extra, prior.as_ref(), c.as_ref());
    }
    let eq = extra.qr().compute_thin_Q();
    (hcat(&[q, eq]), None)
}

/// Whether column j of a QR factorisation adds a direction: |R_jj| above 1e-10 of the block's
/// largest column norm, and finite.
pub(super) fn independent<T: Element>(r: MatRef<'_, T>, j: usize, scale: f64) -> bool {
    let rjj: f64 = Into::<f64>::into(r[(j, j)]).abs();
    rjj.is_finite() && rjj > 1e-10 * scale
}

/// z = Q·R by two passes of Cholesky QR (Q₁ = z·R₁⁻¹ with R₁ᵀR₁ = zᵀz, then again on Q₁).
/// `None` unless z is well conditioned: every column `independent` (the Householder route's
/// rank test), and Q₁ already orthonormal to 0.1, which bounds cond(z) well
/// inside the range where the second pass restores orthogonality to rounding.
pub(super) fn cholesky_qr2<T: Element>(
    z: MatRef<'_, T>,
    scale: f64,
    par: Par,
) -> Option<(Mat<T>, Mat<T>)> {
    let m = z.ncols();
    if z.nrows() < m {
        return None;
    }
    let pass = |x: MatRef<'_, T>, g: Mat<T>| -> Option<(Mat<T>, Mat<T>)> {
        let r = g.llt(faer::Side::Lower).ok()?.L().transpose().to_owned();
        // Q = x·R⁻¹ by a product with the small inverse: faster than a triangular solve on
        // the tall side, and what it loses in pass one (cond(R)·ε) pass two restores.
        let rinv = upper_inverse(r.as_ref())?;
        Some((mul(x, rinv.as_ref(), par), r))
    };
    let (q1, r1) = pass(z, mul(z.transpose(), z, par))?;
    if !(0..m).all(|j| independent(r1.as_ref(), j, scale)) {
        return None;
    }
    let g1 = mul(q1.transpose(), q1.as_ref(), par);
    let off: f64 = (0..m)
        .flat_map(|i| (0..m).map(move |j| (i, j)))
        .map(|(i, j)| {
            let e: f64 = g1[(i, j)].into();
            let d = (e - if i == j { 1.0 } else { 0.0 }).abs();
            if d.is_nan() {
                f64::INFINITY
            } else {
                d
            }
        })
        .fold(0.0, f64::max);
    if off > 0.1 {
        return None;
    }
    let (q, r2) = pass(q1.as_ref(), g1)?;
    Some((q, mul(r2.as_ref(), r1.as_ref(), par)))
}

/// z = Q·R, thin, when every column of z is `independent` (against `scale`, the largest column
/// norm of the block z came from); `None` otherwise.
pub(super) fn full_rank_qr<T: Element>(
    z: MatRef<'_, T>,
    scale: f64,
    par: Par,
) -> Option<(Mat<T>, Mat<T>)> {
    // The common case, well conditioned: Cholesky QR twice, about 2.5× faster than Householder
    // on a tall block (2048×44: 1.5 against 4 ms) and as orthogonal once the second pass starts
    // from near-orthonormal columns.
    if let Some(qr) = cholesky_qr2(z, scale, par) {
        return Some(qr);
    }
    // Full rank but worse conditioned: a blocked Householder QR, several times faster than the
    // pivoted one. Its diagonal tells whether the case holds.
    let m = z.ncols();
    let plain = z.qr();
    let r = plain.thin_R();
    let full_rank = r.nrows() >= m && (0..m).all(|j| independent(r, j, scale));
    full_rank.then(|| (plain.compute_thin_Q(), r.to_owned()))
}

/// Ritz pairs of S on span(k) given sk = S·k: (θ descending, rotation D×D descending).
pub(super) fn rayleigh_ritz<T: Element>(
    k: MatRef<'_, T>,
    sk: MatRef<'_, T>,
    par: Par,
) -> Option<(Vec<f64>, Mat<T>)> {
    sym_eigen_desc(&symmetric_part(&mul(k.transpose(), sk, par)))
}

/// (H + Hᵀ)/2: Kᵀ·S·K is symmetric but for rounding.
pub(super) fn symmetric_part<T: Element>(h: &Mat<T>) -> Mat<T> {
    let half = T::from_f64(0.5);
    Mat::<T>::from_fn(h.nrows(), h.ncols(), |i, j| (h[(i, j)] + h[(j, i)]) * half)
}

/// Eigenpairs of a symmetric matrix, values descending.
pub(super) fn sym_eigen_desc<T: Element>(hs: &Mat<T>) -> Option<(Vec<f64>, Mat<T>)> {
    let d = hs.nrows();
    let evd = hs.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let (s, u) = (evd.S(), evd.U());
    let theta: Vec<f64> = (0..d).rev().map(|i| s[i].into()).collect();
    let rot = Mat::<T>::from_fn(d, d, |i, j| u[(i, d - 1 - j)]);
    Some((theta, rot))
}

/// [[h, a], [aᵀ, d]]: a symmetric matrix grown by a block column and its diagonal block.
pub(super) fn grow<T: Element>(h: &Mat<T>, a: &Mat<T>, d: &Mat<T>) -> Mat<T> {
    let (c, b) = (h.nrows(), d.nrows());
    Mat::<T>::from_fn(c + b, c + b, |i, j| match (i < c, j < c) {
        (true, true) => h[(i, j)],
        (true, false) => a[(i, j - c)],
        (false, true) => a[(j, i - c)],
        (false, false) => d[(i - c, j - c)],
    })
}

pub(super) fn hcat<T: Element>(blocks: &[Mat<T>]) -> Mat<T> {
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
    let mut krylov = Krylov::with_capacity(n, b, steps + 1);
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
        // Expand: K = [u, S·u, S²·u, …] orthonormalised, with H = Kᵀ·S·K grown block by block.
        // The next block's R gives every Ritz pair's residual, so a mid-cycle test costs an
        // eigensolve of H but no product with K; a set that passes it is confirmed on S itself
        // before it is returned.
        krylov.restart(&u, &su, par);
        let mut next = krylov.next_block(&mut rng, par);
        for step in 1..=steps {
            let (q, _) = next;
            let sq = op.apply(q.as_ref(), par);
            applications += b;
            krylov.push(&q, &sq, par);
            let last = step == steps;
            if last {
                // Restart from the top b Ritz vectors; the next cycle tests them.
                let (_, rot) = sym_eigen_desc(&symmetric_part(&krylov.h))?;
                (u, su) = krylov.ritz_vectors(rot.as_ref().subcols(0, b), par);
                break;
            }
            next = krylov.next_block(&mut rng, par);
            if step % params.check_every != 0 {
                continue;
            }
            let (theta, rot) = sym_eigen_desc(&symmetric_part(&krylov.h))?;
            if let Some(r) = &next.1 {
                let est = residual_estimates(r.as_ref(), rot.as_ref(), p);
                if !failing(&theta, &est, p, params).is_empty() {
                    continue;
                }
            }
            let (cu, csu) = krylov.ritz_vectors(rot.as_ref().subcols(0, b), par);
            if converged(&cu, &csu, &theta, p, params) {
                return Some(TopEigen {
                    values: theta[..p].to_vec(),
                    vectors: cu.as_ref().subcols(0, p).to_owned(),
                    applications,
                    cycles: cycle + 1,
                });
            }
        }
    }
    None
}

/// A cycle's Krylov space: K = [u, q₁, q₂, …] (orthonormal blocks of equal width), S·K beside
/// it, and H = Kᵀ·S·K, grown in place block by block within their capacity (only what a run
/// uses is ever touched).
pub(super) struct Krylov<T: Element> {
    k: Mat<T>,
    sk: Mat<T>,
    h: Mat<T>,
    /// The width of every block.
    b: usize,
}

impl<T: Element> Krylov<T> {
    fn with_capacity(n: usize, b: usize, blocks: usize) -> Self {
        Krylov {
            k: Mat::with_capacity(n, b * blocks),
            sk: Mat::with_capacity(n, b * blocks),
            h: Mat::zeros(0, 0),
            b,
        }
    }

    /// K = [u], from a cycle's start block and S·u.
    fn restart(&mut self, u: &Mat<T>, su: &Mat<T>, par: Par) {
        self.k.truncate(0, 0);
        self.sk.truncate(0, 0);
        append(&mut self.k, u);
        append(&mut self.sk, su);
        self.h = mul(u.transpose(), su.as_ref(), par);
    }

    /// K ← [K, q] given S·q. S is symmetric: qᵀ·S·K is the transpose of Kᵀ·S·q.
    fn push(&mut self, q: &Mat<T>, sq: &Mat<T>, par: Par) {
        let kt_sq = mul(self.k.transpose(), sq.as_ref(), par);
        let q_sq = mul(q.transpose(), sq.as_ref(), par);
        self.h = grow(&self.h, &kt_sq, &q_sq);
        append(&mut self.k, q);
        append(&mut self.sk, sq);
    }

    /// The next block: S·(K's last block) with K projected out, and its R where it had full
    /// rank. The first Gram–Schmidt pass's coefficients Kᵀ·S·q are H's last block column.
    fn next_block(&self, rng: &mut Rng, par: Par) -> (Mat<T>, Option<Mat<T>>) {
        let last = self.k.ncols() - self.b;
        let z = self.sk.as_ref().subcols(last, self.b).to_owned();
        let c = self.h.as_ref().subcols(last, self.b);
        orthonormal_block(self.k.as_ref(), z, Some(c), rng, par)
    }

    /// K·y and S·K·y for Ritz coordinates y.
    fn ritz_vectors(&self, y: MatRef<'_, T>, par: Par) -> (Mat<T>, Mat<T>) {
        (mul(self.k.as_ref(), y, par), mul(self.sk.as_ref(), y, par))
    }
}

/// ‖S·K·y_j − θ_j·K·y_j‖ for the first `p` Ritz coordinates (columns of `rot`) without forming
/// the vectors: (I − K·Kᵀ)·S·K vanishes but for its last block, which is q_next·R, so the
/// residual is ‖R·y_last‖ with y_last the rows of y for K's last block (block Lanczos).
pub(super) fn residual_estimates<T: Element>(
    r: MatRef<'_, T>,
    rot: MatRef<'_, T>,
    p: usize,
) -> Vec<f64> {
    let b = r.ncols();
    let tail = rot.subrows(rot.nrows() - b, b);
    (0..p).map(|j| norm((r * tail.col(j)).as_ref())).collect()
}

/// m ← [m, block] within m's capacity.
pub(super) fn append<T: Element>(m: &mut Mat<T>, block: &Mat<T>) {
    let c = m.ncols();
    m.resize_with(block.nrows(), c + block.ncols(), |i, j| block[(i, j - c)]);
}

pub(super) fn converged<T: Element>(
    u: &Mat<T>,
    su: &Mat<T>,
    theta: &[f64],
    p: usize,
    params: Params,
) -> bool {
    unconverged(u, su, theta, p, params, &[]).is_empty()
}

/// The pairs among the first `p` that fail the residual test; `err[j]`, where given, bounds the
/// error of su's column j and is added to its residual.
pub(super) fn unconverged<T: Element>(
    u: &Mat<T>,
    su: &Mat<T>,
    theta: &[f64],
    p: usize,
    params: Params,
    err: &[f64],
) -> Vec<usize> {
    let residual: Vec<f64> = (0..p)
        .map(|j| dist(su.col(j), theta[j], Some(u.col(j))) + err.get(j).copied().unwrap_or(0.0))
        .collect();
    failing(theta, &residual, p, params)
}

/// The pairs among the first `p` whose residual fails the test against their gap.
pub(super) fn failing(theta: &[f64], residual: &[f64], p: usize, params: Params) -> Vec<usize> {
    let top = theta[0].max(0.0);
    if top == 0.0 {
        return Vec::new(); // S = 0 on this span; every vector is an eigenvector.
    }
    (0..p)
        .filter(|&j| {
            let r = residual[j];
            let gap = theta
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != j)
                .map(|(_, t)| (t - theta[j]).abs())
                .fold(f64::INFINITY, f64::min);
            !(r <= params.ctol * gap || r <= params.atol * top)
        })
        .collect()
}

/// Top `keep` singular values and vectors of one side of a dense matrix, starting from the
/// base's top vectors when given (a fine-tune moves them little, so the start is close). `None`
/// when the iteration declines or does not converge; callers then use the full SVD.
pub fn dense_top<T: Element>(
    w: &crate::matrix::Dense<T>,
    side: crate::spectral::Side,
    keep: usize,
    base: Option<&crate::spectral::Decomposition>,
    par: Par,
) -> crate::error::Result<Option<crate::spectral::Decomposition>> {
    crate::spectral::check_finite(w)?;
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
pub(super) fn side_view<T: Element>(
    w: &crate::matrix::Dense<T>,
    side: crate::spectral::Side,
) -> MatRef<'_, T> {
    match side {
        crate::spectral::Side::Left => MatRef::from_row_major_slice(&w.data, w.rows, w.cols),
        crate::spectral::Side::Right => MatRef::from_column_major_slice(&w.data, w.cols, w.rows),
    }
}

pub(super) fn to_decomposition<T: Element>(e: &TopEigen<T>) -> crate::spectral::Decomposition {
    let (dim, keep) = (e.vectors.nrows(), e.vectors.ncols());
    let mut vectors = Vec::with_capacity(dim * keep);
    for j in 0..keep {
        vectors.extend((0..dim).map(|i| Into::<f64>::into(e.vectors[(i, j)]) as f32));
    }
    crate::spectral::Decomposition {
        sigma: e.values.iter().map(|t| t.max(0.0).sqrt()).collect(),
        vectors: vectors.into(),
        dim,
        keep,
    }
}

/// R⁻¹ for an upper-triangular R, or `None` when it is (nearly) singular.
pub(super) fn upper_inverse<T: Element>(r: MatRef<'_, T>) -> Option<Mat<T>> {
    let n = r.ncols();
    if r.nrows() < n {
        return None;
    }
    let diag = |i: usize| -> f64 { Into::<f64>::into(r[(i, i)]).abs() };
    let big = (0..n).map(diag).fold(0.0, f64::max);
    if (0..n).any(|i| diag(i).is_nan() || diag(i) <= 1e-8 * big) {
        return None;
    }
    let mut x = Mat::<T>::identity(n, n);
    faer::linalg::triangular_solve::solve_upper_triangular_in_place(
        r.subrows(0, n),
        x.as_mut(),
        Par::Seq,
    );
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tested mid-cycle, a run stops within its first cycle when that suffices, with the same
    /// answer as one tested only at restarts.
    #[test]
    fn a_run_stops_mid_cycle_once_it_passes() {
        let mut rng = Rng(9);
        let n = 400;
        // X = Q·diag(σ) with known σ: S = X·Xᵀ has eigenvalues σ².
        let q = Mat::<f64>::from_fn(n, n, |_, _| rng.normal())
            .qr()
            .compute_thin_Q();
        let sigma: Vec<f64> = (0..n).map(|i| 1.0 / (1.0 + 0.05 * i as f64)).collect();
        let x = Mat::<f64>::from_fn(n, n, |i, j| q[(i, j)] * sigma[j]);
        let op = Gram { x: x.as_ref() };
        let (p, base) = (8, Params::for_precision::<f64>());
        let b = p + base.extra;
        let per_cycle = base.steps * b;
        let every = top_eigen(&op, p, None, base, Par::Seq).unwrap();
        let at_restarts = Params {
            check_every: usize::MAX,
            ..base
        };
        let once = top_eigen(&op, p, None, at_restarts, Par::Seq).unwrap();
        assert!(
            every.applications < once.applications,
            "{} vs {}",
            every.applications,
            once.applications
        );
        assert!(
            every.applications <= b + per_cycle - b,
            "stopped inside cycle 1"
        );
        for (j, run) in [&every, &once].into_iter().enumerate() {
            for (t, s) in run.values.iter().zip(&sigma) {
                assert!((t - s * s).abs() <= 1e-10, "run {j}: {t} vs {}", s * s);
            }
        }
    }

    /// Cholesky QR: z = Q·R with Q orthonormal where z is well conditioned; it declines where
    /// it would lose orthogonality (cond 1e9), and the block is still orthonormal by Householder.
    #[test]
    fn cholesky_qr_factors_well_conditioned_blocks_and_declines_the_rest() {
        let mut rng = Rng(21);
        let (n, m) = (300, 20);
        let z = Mat::<f64>::from_fn(n, m, |_, _| rng.normal());
        let (q, r) = cholesky_qr2(z.as_ref(), 1.0, Par::Seq).expect("well conditioned");
        let qq = q.transpose() * &q - Mat::<f64>::identity(m, m);
        assert!(qq.norm_max() < 1e-14, "not orthonormal: {}", qq.norm_max());
        assert!((&q * &r - &z).norm_max() < 1e-12, "Q·R ≠ z");
        assert!(
            (0..m).all(|i| (0..i).all(|j| r[(i, j)] == 0.0)),
            "R not upper"
        );
        // Singular values from 1 to 1e-9 on mixed directions: cond 1e9.
        let basis = z.qr().compute_thin_Q();
        let mix = Mat::<f64>::from_fn(m, m, |_, _| rng.normal())
            .qr()
            .compute_thin_Q();
        let scaled = Mat::<f64>::from_fn(n, m, |i, j| {
            basis[(i, j)] * 10f64.powf(-9.0 * j as f64 / (m - 1) as f64)
        });
        let bad = &scaled * mix.transpose();
        assert!(cholesky_qr2(bad.as_ref(), 1.0, Par::Seq).is_none());
        let (q, r) = orthonormal_block(
            Mat::<f64>::zeros(n, 0).as_ref(),
            bad.clone(),
            None,
            &mut rng,
            Par::Seq,
        );
        let qq = q.transpose() * &q - Mat::<f64>::identity(m, m);
        assert!(
            qq.norm_max() < 1e-14,
            "Householder route: {}",
            qq.norm_max()
        );
        let r = r.expect("full rank");
        assert!((&q * &r - &bad).norm_max() < 1e-14, "Q·R ≠ z");
    }

    /// The mid-cycle test's residuals from R of the next block (block Lanczos) are the true
    /// residuals ‖S·K·y − θ·K·y‖ of the Ritz pairs.
    #[test]
    fn residuals_from_the_next_block_equal_the_true_ones() {
        let mut rng = Rng(22);
        let (n, b) = (300, 12);
        let x = Mat::<f64>::from_fn(n, n, |_, _| rng.normal());
        let op = Gram { x: x.as_ref() };
        let u = Mat::<f64>::from_fn(n, b, |_, _| rng.normal())
            .qr()
            .compute_thin_Q();
        let mut krylov = Krylov::with_capacity(n, b, 3);
        krylov.restart(&u, &op.apply(u.as_ref(), Par::Seq), Par::Seq);
        for _ in 0..2 {
            let (q, _) = krylov.next_block(&mut rng, Par::Seq);
            krylov.push(&q, &op.apply(q.as_ref(), Par::Seq), Par::Seq);
        }
        let (_, r) = krylov.next_block(&mut rng, Par::Seq);
        let r = r.expect("full rank");
        let (theta, rot) = sym_eigen_desc(&symmetric_part(&krylov.h)).unwrap();
        let est = residual_estimates(r.as_ref(), rot.as_ref(), b);
        let (v, sv) = krylov.ritz_vectors(rot.as_ref(), Par::Seq);
        for j in 0..b {
            let true_r = (sv.col(j) - theta[j] * v.col(j)).norm_l2();
            assert!(
                (est[j] - true_r).abs() <= 1e-9 * theta[0],
                "pair {j}: {} vs {true_r}",
                est[j]
            );
            assert!(
                true_r > 1e-6 * theta[0],
                "pair {j} converged already: nothing tested"
            );
        }
    }

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
