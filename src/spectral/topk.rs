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
fn dist<T: Element>(a: ColRef<'_, T>, t: f64, b: Option<ColRef<'_, T>>) -> f64 {
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

fn norm<T: Element>(a: ColRef<'_, T>) -> f64 {
    dist(a, 0.0, None)
}

/// An orthonormal basis of the span of `z`'s columns with `k`'s (orthonormal) columns projected
/// out, as wide as `z`: block Gram–Schmidt, then a column-pivoted QR to find the independent
/// part (dependent columns, which appear whenever an invariant subspace is found, would
/// otherwise feed noise or NaN into the Householder QR); the rest of the width is filled with
/// random directions orthogonal to everything before.
fn orthonormalize<T: Element>(k: MatRef<'_, T>, z: Mat<T>, rng: &mut Rng, par: Par) -> Mat<T> {
    orthonormal_block(k, z, None, rng, par).0
}

/// `orthonormalize`, given kᵀ·z where the caller has it (its first Gram–Schmidt pass is then
/// free), also returning R of the projected z = Q·R when that had full rank.
fn orthonormal_block<T: Element>(
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
fn independent<T: Element>(r: MatRef<'_, T>, j: usize, scale: f64) -> bool {
    let rjj: f64 = Into::<f64>::into(r[(j, j)]).abs();
    rjj.is_finite() && rjj > 1e-10 * scale
}

/// z = Q·R by two passes of Cholesky QR (Q₁ = z·R₁⁻¹ with R₁ᵀR₁ = zᵀz, then again on Q₁).
/// `None` unless z is well conditioned: every column `independent` (the Householder route's
/// rank test), and Q₁ already orthonormal to 0.1, which bounds cond(z) well
/// inside the range where the second pass restores orthogonality to rounding.
fn cholesky_qr2<T: Element>(z: MatRef<'_, T>, scale: f64, par: Par) -> Option<(Mat<T>, Mat<T>)> {
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
fn full_rank_qr<T: Element>(z: MatRef<'_, T>, scale: f64, par: Par) -> Option<(Mat<T>, Mat<T>)> {
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
fn rayleigh_ritz<T: Element>(
    k: MatRef<'_, T>,
    sk: MatRef<'_, T>,
    par: Par,
) -> Option<(Vec<f64>, Mat<T>)> {
    sym_eigen_desc(&symmetric_part(&mul(k.transpose(), sk, par)))
}

/// (H + Hᵀ)/2: Kᵀ·S·K is symmetric but for rounding.
fn symmetric_part<T: Element>(h: &Mat<T>) -> Mat<T> {
    let half = T::from_f64(0.5);
    Mat::<T>::from_fn(h.nrows(), h.ncols(), |i, j| (h[(i, j)] + h[(j, i)]) * half)
}

/// Eigenpairs of a symmetric matrix, values descending.
fn sym_eigen_desc<T: Element>(hs: &Mat<T>) -> Option<(Vec<f64>, Mat<T>)> {
    let d = hs.nrows();
    let evd = hs.self_adjoint_eigen(faer::Side::Lower).ok()?;
    let (s, u) = (evd.S(), evd.U());
    let theta: Vec<f64> = (0..d).rev().map(|i| s[i].into()).collect();
    let rot = Mat::<T>::from_fn(d, d, |i, j| u[(i, d - 1 - j)]);
    Some((theta, rot))
}

/// [[h, a], [aᵀ, d]]: a symmetric matrix grown by a block column and its diagonal block.
fn grow<T: Element>(h: &Mat<T>, a: &Mat<T>, d: &Mat<T>) -> Mat<T> {
    let (c, b) = (h.nrows(), d.nrows());
    Mat::<T>::from_fn(c + b, c + b, |i, j| match (i < c, j < c) {
        (true, true) => h[(i, j)],
        (true, false) => a[(i, j - c)],
        (false, true) => a[(j, i - c)],
        (false, false) => d[(i - c, j - c)],
    })
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
struct Krylov<T: Element> {
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
fn residual_estimates<T: Element>(r: MatRef<'_, T>, rot: MatRef<'_, T>, p: usize) -> Vec<f64> {
    let b = r.ncols();
    let tail = rot.subrows(rot.nrows() - b, b);
    (0..p).map(|j| norm((r * tail.col(j)).as_ref())).collect()
}

/// m ← [m, block] within m's capacity.
fn append<T: Element>(m: &mut Mat<T>, block: &Mat<T>) {
    let c = m.ncols();
    m.resize_with(block.nrows(), c + block.ncols(), |i, j| block[(i, j - c)]);
}

fn converged<T: Element>(u: &Mat<T>, su: &Mat<T>, theta: &[f64], p: usize, params: Params) -> bool {
    unconverged(u, su, theta, p, params, &[]).is_empty()
}

/// The pairs among the first `p` that fail the residual test; `err[j]`, where given, bounds the
/// error of su's column j and is added to its residual.
fn unconverged<T: Element>(
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
fn failing(theta: &[f64], residual: &[f64], p: usize, params: Params) -> Vec<usize> {
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
fn side_view<T: Element>(w: &crate::matrix::Dense<T>, side: super::Side) -> MatRef<'_, T> {
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
        vectors: vectors.into(),
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
        let mut y = mul_wide(self.x0.transpose(), u, par);
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
        let mut u = mul_wide(self.x0, y, par);
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
        let mut out = Mat::<f64>::zeros(y.nrows(), y.ncols());
        for j in 0..y.ncols() {
            let col = out.col_as_slice_mut(j);
            match y.col(j).try_as_col_major() {
                Some(yc) => {
                    for ((o, d), v) in col.iter_mut().zip(&self.d).zip(yc.as_slice()) {
                        *o = d * v;
                    }
                }
                None => (0..col.len()).for_each(|i| col[i] = self.d[i] * y[(i, j)]),
            }
        }
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
    w0: &crate::matrix::Dense<f64>,
    b: &crate::matrix::Dense<f64>,
    a: &crate::matrix::Dense<f64>,
    s: f64,
    side: super::Side,
    keep: usize,
    par: Par,
) -> crate::error::Result<Option<super::Decomposition>> {
    Ok(lora_top_traced(base, w0, b, a, s, side, keep, par)?.map(|(d, _)| d))
}

/// How [`lora_top`] got its answer: the work that decides its speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoraTrace {
    /// Columns that W·Wᵀ (through W0) was applied to.
    pub exact_columns: usize,
    /// Correction rounds after the one exact product (0: the mapped-back start passed).
    pub corrections: usize,
    /// Whether the corrections gave up and Krylov refinement finished the job.
    pub krylov: bool,
}

/// [`lora_top`] with its [`LoraTrace`].
#[allow(clippy::too_many_arguments)]
pub fn lora_top_traced(
    base: &super::Decomposition,
    w0: &crate::matrix::Dense<f64>,
    b: &crate::matrix::Dense<f64>,
    a: &crate::matrix::Dense<f64>,
    s: f64,
    side: super::Side,
    keep: usize,
    par: Par,
) -> crate::error::Result<Option<(super::Decomposition, LoraTrace)>> {
    lora_top_with(base, w0, b, a, s, side, keep, MAX_CORRECTIONS, par)
}

/// The LoRA route with at most `rounds` correction rounds before Krylov refinement takes over.
#[allow(clippy::too_many_arguments)]
fn lora_top_with(
    base: &super::Decomposition,
    w0: &crate::matrix::Dense<f64>,
    b: &crate::matrix::Dense<f64>,
    a: &crate::matrix::Dense<f64>,
    s: f64,
    side: super::Side,
    keep: usize,
    rounds: usize,
    par: Par,
) -> crate::error::Result<Option<(super::Decomposition, LoraTrace)>> {
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
    // Products with the cached U0 run in f32, on its stored values: twice the speed of f64 and
    // no copy. What they lose (~1e-6 relative) the refinement's correction step wins back.
    let u0 = base.as_mat();
    let x0rt = mul_wide(x0, r.transpose(), par);
    // Every weight enters X0·Rᵀ, and a NaN or infinite one makes its row non-finite whatever R
    // holds (∞·0 is NaN): so only a non-finite product costs the pass over W0 that names the
    // position (that pass was 4 % of a warm scan). A finite W0 whose product overflowed goes
    // to the dense route.
    if rank == 0 || !x0rt.as_ref().is_all_finite() {
        super::check_finite(w0)?;
        if rank > 0 {
            return Ok(None);
        }
    }
    let no_z2 = Mat::<f64>::zeros(d, 0);
    let u0_only = Basis {
        u0,
        z2: no_z2.as_ref(),
    };
    // U0ᵀ·[L, X0·Rᵀ] in one pass over U0.
    let q_e = u0_only.tmul(hcat(&[l.to_owned(), x0rt.clone()]).as_ref(), par);
    let q = q_e.as_ref().subcols(0, rank).to_owned();
    let u0e = q_e.as_ref().subcols(rank, rank).to_owned();
    // The part of L outside span(U0): empty when U0 is complete (wide or square matrices).
    let mut z2 = Mat::<f64>::zeros(d, 0);
    if base.keep < d {
        let lp = l - u0_only.mul(q.as_ref(), par);
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
    // A few vectors beyond `keep`: the gap after the last kept value, and room for the
    // corrections to stay clear of the rest of the spectrum.
    let want = (keep + REFINE_EXTRA).min(dim);
    let Some(guess) = projected_eigen(&proj, keep, want, &start, par) else {
        return Ok(None);
    };
    let op = LowRankUpdate { x0, l, r, s };
    let basis = Basis {
        u0,
        z2: z2.as_ref(),
    };
    if let Some(e) = refine_projected(&op, &proj, &basis, &guess, keep, rounds, params, par) {
        let trace = LoraTrace {
            exact_columns: e.applications,
            corrections: e.cycles,
            krylov: false,
        };
        return Ok(Some((to_decomposition(&e), trace)));
    }
    // The corrections did not pass the test (a start far off, or an operator they do not
    // model well): Krylov refinement from the start, on the true operator.
    let start_w = basis.mul(guess.as_ref(), par);
    let refine = Params {
        steps: 1,
        extra: 8,
        ..params
    };
    let found = top_eigen(&op, keep, Some(start_w.as_ref()), refine, par);
    Ok(found.map(|e| {
        let trace = LoraTrace {
            exact_columns: guess.ncols() + e.applications,
            corrections: rounds,
            krylov: true,
        };
        (to_decomposition(&e), trace)
    }))
}

/// Vectors refined beyond `keep` on the LoRA route: the gap the corrections need. Four took
/// the same correction rounds as eight on every test case and on the 7B bench model, with a
/// tenth fewer columns in the exact product and the passes over U0.
const REFINE_EXTRA: usize = 4;
/// Correction rounds before the LoRA route falls back to Krylov refinement.
const MAX_CORRECTIONS: usize = 3;

/// Z = [U0, Z2]: the cached base vectors (f32) and the part of the update outside them.
struct Basis<'a> {
    u0: MatRef<'a, f32>,
    z2: MatRef<'a, f64>,
}

impl Basis<'_> {
    /// Z·y. The U0 part in f32: the results feed corrections and error estimates, which need
    /// a few digits, and an f32 product runs at twice the speed with no copy of U0.
    fn mul(&self, y: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let d0 = self.u0.ncols();
        let y32 = y.subrows(0, d0).map(|v| *v as f32);
        let out32 = mul(self.u0, y32.as_ref(), par);
        let mut out = out32.map(|v| *v as f64);
        if self.z2.ncols() > 0 {
            let y2 = y.subrows(d0, self.z2.ncols());
            faer::linalg::matmul::matmul(out.as_mut(), Accum::Add, self.z2, y2, 1.0, par);
        }
        out
    }
    /// Zᵀ·x, the U0 part in f32 as above.
    fn tmul(&self, x: MatRef<'_, f64>, par: Par) -> Mat<f64> {
        let d0 = self.u0.ncols();
        let x32 = x.map(|v| *v as f32);
        let top = mul_wide(self.u0.transpose(), x32.as_ref(), par).map(|v| *v as f64);
        debug_assert_eq!(top.nrows(), d0);
        vcat(top, mul(self.z2.transpose(), x, par))
    }
}

/// [top; bottom].
fn vcat(top: Mat<f64>, bottom: Mat<f64>) -> Mat<f64> {
    if bottom.nrows() == 0 {
        return top;
    }
    let t = top.nrows();
    let mut out = Mat::<f64>::zeros(t + bottom.nrows(), top.ncols());
    out.as_mut().subrows_mut(0, t).copy_from(&top);
    out.as_mut()
        .subrows_mut(t, bottom.nrows())
        .copy_from(&bottom);
    out
}

/// Refines the projected solution `g` (dim × want, orthonormal) into the top `keep` pairs of
/// the true operator S = W·Wᵀ with a single product with W.
///
/// The cached basis is f32, so the mapped-back vectors u = Z·g are off by ~1e-7 in every
/// direction: too far for the residual test where neighbouring values are close, though
/// Rayleigh–Ritz on span(u) with the exact S·u already gets everything inside that span right.
/// What remains lies outside it, where S is well separated from the wanted values, and the
/// projected operator M = Z·P·Zᵀ models S there to ~1e-7·θ₁. So each pair gets a
/// Jacobi–Davidson correction t from the correction equation solved with M (in projected
/// coordinates, O(dim·r) per step), and S·t is taken as M·t: t is ~1e-7 long, so the error of
/// that is ~‖S − M‖·‖t‖ ≈ 1e-14·θ₁. That error is bounded (‖S − M‖ measured on u) and added
/// to every residual before the test, which stays a test on S itself.
#[allow(clippy::too_many_arguments)]
fn refine_projected(
    op: &LowRankUpdate<'_>,
    proj: &Projected,
    z: &Basis<'_>,
    g: &Mat<f64>,
    keep: usize,
    rounds: usize,
    params: Params,
    par: Par,
) -> Option<TopEigen<f64>> {
    let want = g.ncols();
    if want <= keep {
        return None;
    }
    // u = Z·g, and M·u = Z·P·g for a few of them, in one pass; then the one exact product.
    let probe = want.min(8);
    let pg = proj.apply(g.as_ref().subcols(0, probe), par);
    let both = z.mul(hcat(&[g.clone(), pg]).as_ref(), par);
    let u_raw = both.as_ref().subcols(0, want);
    let su_raw = op.apply(u_raw, par);
    // ‖S − M‖ seen on those directions, ×4 for the worst direction (a random matrix's norm is
    // about twice its action on a typical vector; M's error is the f32 basis's, alike in all).
    let mut eta = 0.0f64;
    for j in 0..probe {
        let un = norm(u_raw.col(j));
        let dn = dist(su_raw.col(j), 1.0, Some(both.col(want + j)));
        eta = eta.max(4.0 * dn / un);
    }
    if !eta.is_finite() {
        return None;
    }
    // An orthonormal basis of span(u): u_raw = Q·R, S·Q = S·u_raw·R⁻¹ (R ≈ I).
    let largest = (0..want).map(|j| norm(u_raw.col(j))).fold(0.0, f64::max);
    let (u, ru) = full_rank_qr(u_raw, largest, par)?;
    let rinv = upper_inverse(ru.as_ref())?;
    let su = mul(su_raw.as_ref(), rinv.as_ref(), par);
    let (mut theta, rot) = rayleigh_ritz(u.as_ref(), su.as_ref(), par)?;
    let mut u = mul(u.as_ref(), rot.as_ref(), par);
    let mut su = mul(su.as_ref(), rot.as_ref(), par);
    // Bounds on the error of each column of su (zero while it is exact).
    let mut err = vec![0.0f64; want];
    for round in 0..=rounds {
        let fail = unconverged(&u, &su, &theta, keep, params, &err);
        if fail.is_empty() {
            return Some(TopEigen {
                values: theta[..keep].to_vec(),
                vectors: u.as_ref().subcols(0, keep).to_owned(),
                applications: want,
                cycles: round,
            });
        }
        if round == rounds {
            break;
        }
        let f = fail.len();
        let th: Vec<f64> = fail.iter().map(|&j| theta[j]).collect();
        let res = Mat::<f64>::from_fn(u.nrows(), f, |i, k| {
            su[(i, fail[k])] - th[k] * u[(i, fail[k])]
        });
        // The correction equation (θ_j − S)·t_j = r_j, t_j ⟂ u: with M in Z's span (deflated
        // against g, which spans Zᵀ·u) and with S ≈ 0 outside it (the rows of Wᵀ there are
        // the base's null space): t = Z·(τ − ρ/θ) + r/θ with ρ = Zᵀ·r, (θ − P)·τ = ρ.
        let rho = z.tmul(res.as_ref(), par);
        // Spectrum of S beyond the refined vectors starts below θ_{want−1}.
        let floor: Vec<f64> = th
            .iter()
            .map(|&t| (t - theta[want - 1]).max(1e-3 * t))
            .collect();
        let tau = correction_solve(proj, g.as_ref(), &th, &floor, &rho, par);
        let ptau = proj.apply(tau.as_ref(), par);
        let yt = Mat::<f64>::from_fn(tau.nrows(), f, |i, k| tau[(i, k)] - rho[(i, k)] / th[k]);
        let both = z.mul(hcat(&[yt, ptau]).as_ref(), par);
        let mut t = Mat::<f64>::from_fn(u.nrows(), f, |i, k| both[(i, k)] + res[(i, k)] / th[k]);
        let mut mt = both.as_ref().subcols(f, f).to_owned();
        // S·t ≈ M·t, off by at most eta·‖t‖ per column; then t ⟂ u (t − u·c, whose S-image
        // su·c carries su's own error bounds).
        let mut terr: Vec<f64> = (0..f).map(|k| eta * norm(t.col(k))).collect();
        let c = mul(u.transpose(), t.as_ref(), par);
        faer::linalg::matmul::matmul(t.as_mut(), Accum::Add, u.as_ref(), c.as_ref(), -1.0, par);
        faer::linalg::matmul::matmul(mt.as_mut(), Accum::Add, su.as_ref(), c.as_ref(), -1.0, par);
        for (k, e) in terr.iter_mut().enumerate() {
            *e += (0..want).map(|i| c[(i, k)].abs() * err[i]).sum::<f64>();
        }
        // Orthonormal corrections: t̂ = t·N⁻¹·R⁻¹ with N their lengths.
        let norms: Vec<f64> = (0..f).map(|k| norm(t.col(k))).collect();
        if norms.iter().any(|n| !(n.is_finite() && *n > 0.0)) {
            return None;
        }
        let tn = Mat::<f64>::from_fn(u.nrows(), f, |i, k| t[(i, k)] / norms[k]);
        let (that, tr) = full_rank_qr(tn.as_ref(), 1.0, par)?;
        let trinv = upper_inverse(tr.as_ref())?;
        let scale = Mat::<f64>::from_fn(f, f, |i, k| trinv[(i, k)] / norms[i]);
        let mthat = mul(mt.as_ref(), scale.as_ref(), par);
        let that_err: Vec<f64> = (0..f)
            .map(|k| (0..f).map(|i| scale[(i, k)].abs() * terr[i]).sum())
            .collect();
        // Rayleigh–Ritz on [u, t̂]. The coupling uᵀ·S·t̂ is taken as (S·u)ᵀ·t̂, not uᵀ·(M·t̂):
        // it is of the order of the residuals, and M's error (~1e-7·θ₁ on a unit t̂) would
        // swamp it. Only t̂ᵀ·S·t̂ comes from M, where that error is small against the gap.
        let (nu, nt) = (want, f);
        let huu = mul(u.transpose(), su.as_ref(), par);
        let hut = mul(su.transpose(), that.as_ref(), par);
        let htt = mul(that.transpose(), mthat.as_ref(), par);
        let h = Mat::<f64>::from_fn(nu + nt, nu + nt, |i, j| match (i < nu, j < nu) {
            (true, true) => 0.5 * (huu[(i, j)] + huu[(j, i)]),
            (true, false) => hut[(i, j - nu)],
            (false, true) => hut[(j, i - nu)],
            (false, false) => 0.5 * (htt[(i - nu, j - nu)] + htt[(j - nu, i - nu)]),
        });
        let (th_all, rot) = sym_eigen_desc(&h)?;
        let kb = hcat(&[u, that]);
        let skb = hcat(&[su, mthat]);
        let kerr: Vec<f64> = err.iter().chain(&that_err).copied().collect();
        let top = rot.as_ref().subcols(0, want);
        u = mul(kb.as_ref(), top, par);
        su = mul(skb.as_ref(), top, par);
        err = (0..want)
            .map(|j| (0..kerr.len()).map(|i| top[(i, j)].abs() * kerr[i]).sum())
            .collect();
        theta = th_all[..want].to_vec();
    }
    None
}

/// R⁻¹ for an upper-triangular R, or `None` when it is (nearly) singular.
fn upper_inverse<T: Element>(r: MatRef<'_, T>) -> Option<Mat<T>> {
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

/// Solves (θ_k − P)·τ_k = ρ_k for τ_k ⟂ span(g), column by column, by preconditioned
/// conjugate gradients: on span(g)^⊥ the operator is positive definite (its spectrum lies
/// below the refined values), and P is diagonal plus low rank, so the diagonal preconditioner
/// 1/(θ_k − D) (floored where D reaches the refined values) leaves few distinct eigenvalues.
/// Approximate by design: each digit gained here is a digit of the correction.
fn correction_solve(
    p: &Projected,
    g: MatRef<'_, f64>,
    theta: &[f64],
    floor: &[f64],
    rho: &Mat<f64>,
    par: Par,
) -> Mat<f64> {
    const TOL: f64 = 1e-9;
    const MAX_ITER: usize = 40;
    let (dim, f) = (rho.nrows(), rho.ncols());
    let deflate = |x: &mut Mat<f64>| {
        let c = mul(g.transpose(), x.as_ref(), par);
        faer::linalg::matmul::matmul(x.as_mut(), Accum::Add, g, c.as_ref(), -1.0, par);
    };
    // 1/(θ_k − D), floored where D reaches the refined values.
    let mut inv = Mat::<f64>::zeros(dim, f);
    for k in 0..f {
        let col = inv.col_as_slice_mut(k);
        for (c, d) in col.iter_mut().zip(&p.d) {
            *c = 1.0 / (theta[k] - d).max(floor[k]);
        }
    }
    let precond = |r: &Mat<f64>| {
        let mut z = Mat::<f64>::zeros(dim, f);
        for k in 0..f {
            let (zc, rc, ic) = (
                z.col_as_slice_mut(k),
                r.col_as_slice(k),
                inv.col_as_slice(k),
            );
            for ((z, r), i) in zc.iter_mut().zip(rc).zip(ic) {
                *z = r * i;
            }
        }
        deflate(&mut z);
        z
    };
    let dot = |a: &Mat<f64>, b: &Mat<f64>, k: usize| -> f64 {
        let (a, b) = (a.col_as_slice(k), b.col_as_slice(k));
        let mut acc = [0.0f64; 4];
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            acc[i % 4] += x * y;
        }
        acc.iter().sum()
    };
    let mut r = rho.clone();
    deflate(&mut r);
    let target: Vec<f64> = (0..f).map(|k| TOL * norm(r.col(k))).collect();
    let mut x = Mat::<f64>::zeros(dim, f);
    let mut z = precond(&r);
    let mut dir = z.clone();
    let mut rz: Vec<f64> = (0..f).map(|k| dot(&r, &z, k)).collect();
    let mut active: Vec<bool> = (0..f).map(|k| target[k] > 0.0).collect();
    for _ in 0..MAX_ITER {
        if !active.iter().any(|a| *a) {
            break;
        }
        let mut ad = p.apply(dir.as_ref(), par);
        for (k, t) in theta.iter().enumerate().take(f) {
            let (ac, dc) = (ad.col_as_slice_mut(k), dir.col_as_slice(k));
            for (a, d) in ac.iter_mut().zip(dc) {
                *a = t * d - *a;
            }
        }
        deflate(&mut ad);
        for k in 0..f {
            if !active[k] {
                continue;
            }
            let curv = dot(&dir, &ad, k);
            if curv.is_nan() || curv <= 0.0 {
                active[k] = false; // not positive definite here: keep what we have
                continue;
            }
            let alpha = rz[k] / curv;
            let (dc, ac) = (dir.col_as_slice(k), ad.col_as_slice(k));
            for (x, d) in x.col_as_slice_mut(k).iter_mut().zip(dc) {
                *x += alpha * d;
            }
            for (r, a) in r.col_as_slice_mut(k).iter_mut().zip(ac) {
                *r -= alpha * a;
            }
            if norm(r.col(k)) <= target[k] {
                active[k] = false;
            }
        }
        z = precond(&r);
        for k in 0..f {
            if !active[k] {
                continue;
            }
            let rz_new = dot(&r, &z, k);
            let beta = rz_new / rz[k];
            rz[k] = rz_new;
            for (d, z) in dir.col_as_slice_mut(k).iter_mut().zip(z.col_as_slice(k)) {
                *d = z + beta * *d;
            }
        }
    }
    x
}

/// Top `keep` eigenvectors of the projected operator D + low rank, by Rayleigh–Ritz on
/// span(start, v_j, y_j) with y_j = (θ_j − D)⁻¹·(G − D)·v_j. For an exact pair y_j = v_j, and
/// y_j's error is of the order of θ_j's, itself quadratic in v_j's: a few passes suffice where a
/// polynomial (Krylov) method needs many, because these eigenvectors are rational functions of D.
fn projected_eigen(
    g: &Projected,
    keep: usize,
    want: usize,
    start: &Mat<f64>,
    par: Par,
) -> Option<Mat<f64>> {
    let dim = g.dim();
    let vcols = g.e.ncols() + g.f.ncols();
    // Low ranks take every column of (θ_j − D)⁻¹·[E F] per pair (see `rational_directions`).
    let full = vcols <= 8;
    let per = if full { vcols } else { 1 };
    // Small problems, where the basis below would fill much of R^dim: P itself, densely.
    if 2 * (start.ncols() + keep * (per + 1)) > dim {
        let p = g.apply(Mat::<f64>::identity(dim, dim).as_ref(), par);
        let (_, rot) = sym_eigen_desc(&p)?;
        return Some(rot.as_ref().subcols(0, want.min(dim)).to_owned());
    }
    let mut rng = Rng(0x9a0_1ec7);
    let empty = Mat::<f64>::zeros(dim, 0);
    // The start's part of the basis and its image are the same every pass: only the new
    // directions are orthonormalised (against it) and multiplied, and the basis is rebuilt
    // within its capacity (fresh multi-megabyte matrices cost page faults every pass).
    let q0 = orthonormalize(empty.as_ref(), start.clone(), &mut rng, par);
    let sq0 = g.apply(q0.as_ref(), par);
    let n0 = q0.ncols();
    let cap = n0 + keep * (per + 1);
    let (mut q, mut sq) = (
        Mat::<f64>::with_capacity(dim, cap),
        Mat::<f64>::with_capacity(dim, cap),
    );
    append(&mut q, &q0);
    append(&mut sq, &sq0);
    let mut best = None;
    for pass in 0..10 {
        let (theta, rot) = rayleigh_ritz(q.as_ref(), sq.as_ref(), par)?;
        let keep = keep.min(theta.len());
        let want = want.clamp(keep, theta.len());
        let top = rot.as_ref().subcols(0, want);
        let v = mul(q.as_ref(), top, par);
        let sv = mul(sq.as_ref(), top, par);
        let theta1 = theta[0].abs().max(f64::MIN_POSITIVE);
        let worst = (0..keep)
            .map(|j| dist(sv.col(j), theta[j], Some(v.col(j))))
            .fold(0.0, f64::max);
        best = Some(v.clone());
        // The vectors mapped back through the f32 basis are off by ~1e-7·θ₁ anyway, and the
        // refinement's correction gains about four digits on whatever it starts from.
        if worst <= 1e-6 * theta1 {
            break;
        }
        let y = rational_directions(g, &theta[..keep], &v, &sv, full, 1e-13 * theta1);
        // The first Ritz vectors lie in span(start): adding them would only add random fill.
        let fresh = if pass == 0 {
            y
        } else {
            hcat(&[v.as_ref().subcols(0, keep).to_owned(), y])
        };
        let qn = orthonormalize(q0.as_ref(), fresh, &mut rng, par);
        let sqn = g.apply(qn.as_ref(), par);
        q.truncate(dim, n0);
        sq.truncate(dim, n0);
        append(&mut q, &qn);
        append(&mut sq, &sqn);
    }
    best
}

/// The next directions of [`projected_eigen`], unit columns: for low ranks all of
/// (θ_j − D)⁻¹·[E F] (it holds the exact eigenvector once θ_j is exact, so the error is
/// quadratic); for higher ranks only the combination y_j = (θ_j − D)⁻¹·(P − D)·v_j.
fn rational_directions(
    g: &Projected,
    theta: &[f64],
    v: &Mat<f64>,
    sv: &Mat<f64>,
    full: bool,
    tiny: f64,
) -> Mat<f64> {
    let (dim, ne) = (g.dim(), g.e.ncols());
    let per = if full { ne + g.f.ncols() } else { 1 };
    let mut y = Mat::<f64>::zeros(dim, theta.len() * per);
    for (j, &t) in theta.iter().enumerate() {
        // 1/(θ_j − D), kept away from zero where θ_j meets a diagonal value.
        let inv: Vec<f64> =
            g.d.iter()
                .map(|d| {
                    let den = t - d;
                    1.0 / if den.abs() < tiny {
                        tiny.copysign(den)
                    } else {
                        den
                    }
                })
                .collect();
        for c in 0..per {
            let col = y.col_as_slice_mut(j * per + c);
            if !full {
                let (s, x) = (sv.col_as_slice(j), v.col_as_slice(j));
                for i in 0..dim {
                    col[i] = (s[i] - g.d[i] * x[i]) * inv[i];
                }
            } else {
                let src = if c < ne {
                    g.e.col_as_slice(c)
                } else {
                    g.f.col_as_slice(c - ne)
                };
                for i in 0..dim {
                    col[i] = src[i] * inv[i];
                }
            }
            // Unit columns, so that orthonormalisation judges them on equal terms.
            let n = norm(y.col(j * per + c));
            if n > 0.0 {
                y.col_as_slice_mut(j * per + c)
                    .iter_mut()
                    .for_each(|x| *x /= n);
            }
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no correction rounds allowed, the route hands over to Krylov refinement (its
    /// fallback when corrections stall) and still matches the SVD of the merged matrix.
    #[test]
    fn lora_route_falls_back_to_krylov_and_stays_exact() {
        use crate::matrix::Dense;
        use crate::spectral::{self, Side};
        let mut rng = Rng(21);
        let (m, n, r) = (260, 200, 4);
        let dense = |x: Mat<f64>| Dense {
            rows: x.nrows(),
            cols: x.ncols(),
            data: (0..x.nrows())
                .flat_map(|i| (0..x.ncols()).map(move |j| (i, j)))
                .map(|(i, j)| x[(i, j)])
                .collect(),
        };
        let w0 = rng.gaussian(m, n, 1.0 / (n as f64).sqrt());
        let b = rng.gaussian(m, r, 1.0 / (m as f64).sqrt());
        let a = rng.gaussian(r, n, 1.0 / (n as f64).sqrt());
        let w = &w0 + &b * &a * faer::Scale(2.0);
        let (w0, b, a, w) = (dense(w0), dense(b), dense(a), dense(w));
        let base = spectral::decompose(&w0, Side::Left, usize::MAX, Par::Seq).unwrap();
        let exact = spectral::decompose(&w, Side::Left, 16, Par::Seq).unwrap();
        let (fast, trace) = lora_top_with(&base, &w0, &b, &a, 2.0, Side::Left, 16, 0, Par::Seq)
            .unwrap()
            .expect("converges");
        assert!(trace.krylov, "{trace:?}");
        let (cf, ce) = (
            spectral::best_matches(&base, &fast),
            spectral::best_matches(&base, &exact),
        );
        for j in 0..16 {
            assert!((fast.sigma[j] - exact.sigma[j]).abs() < 1e-9 * exact.sigma[0]);
            assert!(
                (cf[j].0 - ce[j].0).abs() < 1e-6,
                "c_{j}: {} vs {}",
                cf[j].0,
                ce[j].0
            );
        }
        // The default route on the same input needs no fallback.
        let (_, trace) = lora_top_traced(&base, &w0, &b, &a, 2.0, Side::Left, 16, Par::Seq)
            .unwrap()
            .expect("converges");
        assert!(!trace.krylov, "{trace:?}");
    }

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
