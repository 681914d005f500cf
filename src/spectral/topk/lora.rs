//! The LoRA route: the top singular vectors of one side of W = W0 + s·B·A without forming W,
//! solved first in the cached base's basis, then refined and verified on W·Wᵀ applied through
//! W0, B and A (see [`lora_top`]).

use faer::{Accum, Mat, MatRef, Par};

use super::krylov::*;
use crate::matrix::Dense;
use crate::rng::Rng;
use crate::spectral::{Decomposition, Side};

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

/// W = W0 + s·B·A as an adapter gives it: B out×r, A r×in, all in the analysed layout.
#[derive(Clone, Copy)]
pub struct LoraUpdate<'a> {
    pub w0: &'a Dense<f64>,
    pub b: &'a Dense<f64>,
    pub a: &'a Dense<f64>,
    /// s: α/r, or α/√r for rsLoRA.
    pub scaling: f64,
}

/// Top `keep` singular values and vectors of one side of W = W0 + s·B·A without forming W:
/// solved first in the cached base's basis, then refined and verified on W·Wᵀ applied through
/// W0, B and A.
pub fn lora_top(
    base: &Decomposition,
    w: LoraUpdate<'_>,
    side: Side,
    keep: usize,
    par: Par,
) -> crate::error::Result<Option<Decomposition>> {
    Ok(lora_top_traced(base, w, side, keep, par)?.map(|(d, _)| d))
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
pub fn lora_top_traced(
    base: &Decomposition,
    w: LoraUpdate<'_>,
    side: Side,
    keep: usize,
    par: Par,
) -> crate::error::Result<Option<(Decomposition, LoraTrace)>> {
    lora_top_with(base, w, side, keep, MAX_CORRECTIONS, par)
}

/// The LoRA route with at most `rounds` correction rounds before Krylov refinement takes over.
fn lora_top_with(
    base: &Decomposition,
    w: LoraUpdate<'_>,
    side: Side,
    keep: usize,
    rounds: usize,
    par: Par,
) -> crate::error::Result<Option<(Decomposition, LoraTrace)>> {
    let LoraUpdate {
        w0,
        b,
        a,
        scaling: s,
    } = w;
    let bm = MatRef::from_row_major_slice(&b.data, b.rows, b.cols);
    let am = MatRef::from_row_major_slice(&a.data, a.rows, a.cols);
    // X = W (left) or Wᵀ (right); the update is s·L·R in that orientation.
    let (x0, l, r) = match side {
        crate::spectral::Side::Left => (side_view(w0, side), bm, am),
        crate::spectral::Side::Right => (side_view(w0, side), am.transpose(), bm.transpose()),
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
        crate::spectral::check_finite(w0)?;
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
    let goal = Goal { keep, rounds };
    if let Some(e) = refine_projected(&op, &proj, &basis, &guess, goal, params, par) {
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

/// What a refinement must deliver: the top `keep` pairs, within `rounds` correction rounds.
#[derive(Clone, Copy)]
struct Goal {
    keep: usize,
    rounds: usize,
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
fn refine_projected(
    op: &LowRankUpdate<'_>,
    proj: &Projected,
    z: &Basis<'_>,
    g: &Mat<f64>,
    goal: Goal,
    params: Params,
    par: Par,
) -> Option<TopEigen<f64>> {
    let Goal { keep, rounds } = goal;
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
        let (fast, trace) = lora_top_with(
            &base,
            LoraUpdate {
                w0: &w0,
                b: &b,
                a: &a,
                scaling: 2.0,
            },
            Side::Left,
            16,
            0,
            Par::Seq,
        )
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
        let (_, trace) = lora_top_traced(
            &base,
            LoraUpdate {
                w0: &w0,
                b: &b,
                a: &a,
                scaling: 2.0,
            },
            Side::Left,
            16,
            Par::Seq,
        )
        .unwrap()
        .expect("converges");
        assert!(!trace.krylov, "{trace:?}");
    }
}
