//! The SVD and the intruder rule of Shuttleworth et al. (Definition 3.1 / Algorithm 1).
//!
//! Matrices arrive row-major (out, in). A row-major buffer read column-major is Wᵀ, so every
//! decomposition here runs on that zero-copy view: U of W is V of Wᵀ.

pub mod overlap;
pub mod rule;
pub mod topk;

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::svd::{self, ComputeSvdVectors};
use faer::{Mat, MatMut, MatRef, Par};

use crate::error::{Error, Result};
use crate::matrix::{Dense, Element};

pub use rule::{Rule, DEFAULT_EPSILON, DEFAULT_K};

/// Which singular vectors the rule compares: left (U, output space; the paper's choice) or
/// right (V, input space; an extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
}

/// Singular values (all, descending) and the first `vectors.ncols()` singular vectors of one
/// side, as unit columns.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub sigma: Vec<f64>,
    /// Column-major, `dim` rows × `keep` columns.
    pub vectors: Vectors,
    pub dim: usize,
    pub keep: usize,
}

/// f32 values, owned or borrowed from shared bytes (a mapped cache entry), read as a slice.
/// Cached base vectors are as large as the matrix: copying them out of their mapping cost page
/// zeroing and a pass over memory per matrix, and counted them twice in memory.
#[derive(Clone, Default)]
pub struct Vectors(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<f32>),
    Shared {
        bytes: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    },
}

impl Default for Repr {
    fn default() -> Self {
        Repr::Owned(Vec::new())
    }
}

impl Vectors {
    /// `len` little-endian f32 at `offset` in `bytes`, without a copy where the platform allows
    /// (little-endian and 4-aligned), else copied. `None` if the range is outside `bytes`.
    pub fn from_le_bytes(
        bytes: std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
        len: usize,
    ) -> Option<Vectors> {
        let raw = (*bytes)
            .as_ref()
            .get(offset..offset.checked_add(len.checked_mul(4)?)?)?;
        if cfg!(target_endian = "little") && raw.as_ptr().align_offset(4) == 0 {
            return Some(Vectors(Repr::Shared { bytes, offset, len }));
        }
        let mut v = crate::matrix::zeroed::<f32>(len);
        for (o, c) in v.iter_mut().zip(raw.chunks_exact(4)) {
            *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        Some(Vectors(Repr::Owned(v)))
    }

    /// Whether the values live in shared bytes rather than an owned buffer.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }
}

impl std::ops::Deref for Vectors {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { bytes, offset, len } => {
                let raw = &(**bytes).as_ref()[*offset..*offset + 4 * *len];
                // SAFETY: checked in-bounds, 4-aligned and little-endian in `from_le_bytes`;
                // every bit pattern is a valid f32; `bytes` is immutable and kept alive by self.
                unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<f32>(), *len) }
            }
        }
    }
}

impl From<Vec<f32>> for Vectors {
    fn from(v: Vec<f32>) -> Self {
        Vectors(Repr::Owned(v))
    }
}

impl FromIterator<f32> for Vectors {
    fn from_iter<I: IntoIterator<Item = f32>>(iter: I) -> Self {
        Vectors(Repr::Owned(iter.into_iter().collect()))
    }
}

impl PartialEq for Vectors {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Vectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl Decomposition {
    /// Singular values without vectors (spectra and ΔW's statistics, cached alike).
    pub fn values_only(sigma: Vec<f64>) -> Decomposition {
        Decomposition {
            sigma,
            vectors: Default::default(),
            dim: 0,
            keep: 0,
        }
    }
    pub fn column(&self, j: usize) -> &[f32] {
        &self.vectors[j * self.dim..(j + 1) * self.dim]
    }
    pub fn as_mat(&self) -> MatRef<'_, f32> {
        MatRef::from_column_major_slice(&self.vectors, self.dim, self.keep)
    }
}

pub(crate) fn check_finite<T: Element>(w: &Dense<T>) -> Result<()> {
    if w.rows == 0 || w.cols == 0 {
        return Err(Error::Compute(format!(
            "empty matrix ({}×{})",
            w.rows, w.cols
        )));
    }
    // Chunk by chunk with a test that vectorises: a plain `position` ran one element at a time
    // and was 6 % of a warm LoRA scan. Only a failing chunk is searched for the position.
    const CHUNK: usize = 4096;
    let finite = |x: &T| Into::<f64>::into(*x).is_finite();
    let bad = w
        .data
        .chunks(CHUNK)
        .position(|c| !c.iter().fold(true, |ok, x| ok & finite(x)))
        .and_then(|i| {
            let at = i * CHUNK;
            w.data[at..].iter().position(|x| !finite(x)).map(|p| at + p)
        });
    if let Some(pos) = bad {
        return Err(Error::Compute(format!(
            "non-finite weight (NaN or Inf) at row {}, column {}",
            pos / w.cols,
            pos % w.cols
        )));
    }
    Ok(())
}

/// Thin SVD of `w` keeping the first `keep` singular vectors of `side` (all σ always).
pub fn decompose<T: Element>(
    w: &Dense<T>,
    side: Side,
    keep: usize,
    par: Par,
) -> Result<Decomposition> {
    check_finite(w)?;
    let (m, n) = (w.rows, w.cols);
    let p = m.min(n);
    let keep = keep.min(p);
    // wt is Wᵀ (n × m); left vectors of W are wt's right vectors and vice versa.
    let wt = MatRef::from_column_major_slice(&w.data, n, m);
    let dim = match side {
        Side::Left => m,
        Side::Right => n,
    };
    let mut s = Diag::<T>::zeros(p);
    let mut vecs = Mat::<T>::zeros(dim, p);
    let (cu, cv) = match side {
        Side::Left => (ComputeSvdVectors::No, ComputeSvdVectors::Thin),
        Side::Right => (ComputeSvdVectors::Thin, ComputeSvdVectors::No),
    };
    let mut mem = MemBuffer::new(svd::svd_scratch::<T>(n, m, cu, cv, par, Default::default()));
    let (u, v) = match side {
        Side::Left => (None, Some(vecs.as_mut())),
        Side::Right => (Some(vecs.as_mut()), None),
    };
    svd::svd(
        wt,
        s.as_mut(),
        u,
        v,
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Compute(format!("SVD failed: {e:?}")))?;
    let sigma: Vec<f64> = (0..p).map(|i| s[i].into()).collect();
    let mut vectors = Vec::with_capacity(dim * keep);
    for j in 0..keep {
        vectors.extend((0..dim).map(|i| Into::<f64>::into(vecs[(i, j)]) as f32));
    }
    Ok(Decomposition {
        sigma,
        vectors: vectors.into(),
        dim,
        keep,
    })
}

/// Singular values only, descending.
pub fn singular_values<T: Element>(w: &Dense<T>, par: Par) -> Result<Vec<f64>> {
    check_finite(w)?;
    let (m, n) = (w.rows, w.cols);
    let wt = MatRef::from_column_major_slice(&w.data, n, m);
    let mut s = Diag::<T>::zeros(m.min(n));
    let mut mem = MemBuffer::new(svd::svd_scratch::<T>(
        n,
        m,
        ComputeSvdVectors::No,
        ComputeSvdVectors::No,
        par,
        Default::default(),
    ));
    svd::svd(
        wt,
        s.as_mut(),
        None,
        None,
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Compute(format!("SVD failed: {e:?}")))?;
    Ok((0..m.min(n)).map(|i| s[i].into()).collect())
}

/// Singular values only, descending, from the eigenvalues of the smaller Gram matrix (W·Wᵀ or
/// WᵀW, lower half). Reducing a symmetric matrix to tridiagonal form moves half the memory
/// that bidiagonalising W does: 13 s against 34 s for a 4096² f64 matrix. Each σ² is exact to
/// about ε·σ₁², so σ below ~1e-8·σ₁ reads as ~1e-8·σ₁: sums over the spectrum (the effective
/// rank, ‖W‖_F) keep their digits, single tiny values do not.
pub fn gram_singular_values(w: &Dense<f64>, par: Par) -> Result<Vec<f64>> {
    use faer::linalg::matmul::triangular::{matmul, BlockStructure};
    check_finite(w)?;
    // X = Wᵀ, column-major over the stored rows; G = XᵀX = W·Wᵀ or X·Xᵀ = WᵀW.
    let x = MatRef::from_column_major_slice(&w.data, w.cols, w.rows);
    let (lhs, rhs) = if w.rows <= w.cols {
        (x.transpose(), x)
    } else {
        (x, x.transpose())
    };
    let p = w.rows.min(w.cols);
    let mut gram = Mat::<f64>::zeros(p, p);
    matmul(
        gram.as_mut(),
        BlockStructure::TriangularLower,
        faer::Accum::Replace,
        lhs,
        BlockStructure::Rectangular,
        rhs,
        BlockStructure::Rectangular,
        1.0,
        par,
    );
    use faer::linalg::evd::{self_adjoint_evd, self_adjoint_evd_scratch, ComputeEigenvectors};
    let mut vals = Diag::<f64>::zeros(p);
    let mut mem = MemBuffer::new(self_adjoint_evd_scratch::<f64>(
        p,
        ComputeEigenvectors::No,
        par,
        Default::default(),
    ));
    self_adjoint_evd(
        gram.as_ref(),
        vals.as_mut(),
        None,
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Compute(format!("eigenvalues failed: {e:?}")))?;
    // Ascending → descending; rounding can leave the smallest slightly negative.
    Ok((0..p).rev().map(|i| vals[i].max(0.0).sqrt()).collect())
}

/// Singular values of s·B·A (B out×r, A r×in) from the r×r core: B = Qb·Rb, Aᵀ = Qa·Ra, so
/// s·B·A = Qb·(s·Rb·Raᵀ)·Qaᵀ has the singular values of the core. O((out+in)·r²).
pub fn low_rank_singular_values(scaling: f64, b: &Dense<f64>, a: &Dense<f64>) -> Result<Vec<f64>> {
    let bm = MatRef::from_row_major_slice(&b.data, b.rows, b.cols);
    let at = MatRef::from_column_major_slice(&a.data, a.cols, a.rows); // Aᵀ, in × r
    let rb = bm.qr().thin_R().to_owned();
    let ra = at.qr().thin_R().to_owned();
    let core = rb * ra.transpose() * faer::Scale(scaling);
    let core = Dense {
        rows: core.nrows(),
        cols: core.ncols(),
        data: (0..core.nrows())
            .flat_map(|i| (0..core.ncols()).map(move |j| (i, j)))
            .map(|(i, j)| core[(i, j)])
            .collect(),
    };
    singular_values(&core, Par::Seq)
}

/// Effective rank (Roy & Vetterli 2007): exp of the entropy of σ / Σσ. 0 for a zero matrix.
pub fn effective_rank(sigma: &[f64]) -> f64 {
    let total: f64 = sigma.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let h: f64 = sigma
        .iter()
        .filter(|s| **s > 0.0)
        .map(|s| {
            let p = s / total;
            -p * p.ln()
        })
        .sum();
    h.exp()
}

/// Best match of each tuned vector among all base vectors: for j < tuned.keep,
/// c_j = max_i |⟨base_i, tuned_j⟩| and its argmax i ([`overlap::overlaps`] without clusters).
pub fn best_matches(base: &Decomposition, tuned: &Decomposition) -> Vec<(f64, usize)> {
    overlap::overlaps(base, tuned, 0.0)
        .into_iter()
        .map(|o| (o.max_cos, o.best))
        .collect()
}

/// |cos| between base vectors `0..rows` (y) and tuned vectors `0..cols` (x), row-major
/// rows × cols: the paper's similarity-matrix heatmap.
pub fn similarity(
    base: &Decomposition,
    tuned: &Decomposition,
    rows: usize,
    cols: usize,
) -> Vec<f32> {
    let rows = rows.min(base.keep);
    let cols = cols.min(tuned.keep);
    let b = base.as_mat().subcols(0, rows).to_owned().map(|x| *x as f64);
    let t = tuned
        .as_mat()
        .subcols(0, cols)
        .to_owned()
        .map(|x| *x as f64);
    let c = b.transpose() * &t;
    (0..rows)
        .flat_map(|i| (0..cols).map(move |j| (i, j)))
        .map(|(i, j)| c[(i, j)].abs() as f32)
        .collect()
}

/// Gram route for every vector of one side, about half the work of an SVD. With A = W (left)
/// or Wᵀ (right) of shape d×e:
/// - d ≤ e: A·Aᵀ = U·Σ²·Uᵀ, so U comes straight from a symmetric eigensolver;
/// - d > e (tall): Aᵀ·A = V·Σ²·Vᵀ, then U = A·V·Σ⁻¹ (the thin U, e columns).
///
/// Squaring the condition number costs accuracy for small σ (eigenvector errors of about
/// ε·(σ_max/σ_i)², also what the division by σ_i amplifies), so the route declines (None) when
/// σ_min/σ_max is below [`gram_min_ratio`] for this precision; callers then use [`decompose`].
pub fn decompose_gram<T: Element>(
    w: &Dense<T>,
    side: Side,
    keep: usize,
    par: Par,
) -> Result<Option<Decomposition>> {
    check_finite(w)?;
    // A (d × e) as a view of the stored rows: no copy (a 11008×4096 f64 copy is 360 MB of the
    // peak; the products pack their operands anyway).
    let a = match side {
        Side::Left => MatRef::from_row_major_slice(&w.data, w.rows, w.cols),
        Side::Right => MatRef::from_column_major_slice(&w.data, w.cols, w.rows),
    };
    let (d, e) = (a.nrows(), a.ncols());
    let tall = d > e;
    let p = d.min(e);
    let (vals, vecs) = symmetric_eigen(gram_lower(a, par), par)?;
    // Ascending → descending.
    let sigma: Vec<f64> = (0..p)
        .rev()
        .map(|i| Into::<f64>::into(vals[i]).max(0.0).sqrt())
        .collect();
    let (smax, smin) = (sigma[0], sigma[p - 1]);
    if smax == 0.0 || smin / smax < gram_min_ratio::<T>() {
        return Ok(None);
    }
    let keep = keep.min(p);
    // Eigenvectors for the `keep` largest values, descending: a view, not a copy.
    let top = vecs.reverse_cols().subcols(0, keep);
    let mut vectors = Vec::with_capacity(d * keep);
    if tall {
        // U = A·V·Σ⁻¹, a block of columns at a time straight into f32: the whole of U in T
        // would be another d×p matrix at the peak.
        const BLOCK: usize = 512;
        let mut u = Mat::<T>::zeros(d, BLOCK.min(keep));
        for j0 in (0..keep).step_by(BLOCK) {
            let nb = BLOCK.min(keep - j0);
            let mut ub = u.as_mut().subcols_mut(0, nb);
            faer::linalg::matmul::matmul(
                ub.as_mut(),
                faer::Accum::Replace,
                a,
                top.subcols(j0, nb),
                T::from_f64(1.0),
                par,
            );
            for j in 0..nb {
                let inv = 1.0 / sigma[j0 + j];
                vectors.extend((0..d).map(|i| (Into::<f64>::into(ub[(i, j)]) * inv) as f32));
            }
        }
    } else {
        for j in 0..keep {
            vectors.extend((0..d).map(|i| Into::<f64>::into(top[(i, j)]) as f32));
        }
    }
    Ok(Some(Decomposition {
        sigma,
        vectors: vectors.into(),
        dim: d,
        keep,
    }))
}

/// The lower half of A·Aᵀ (A wide or square) or AᵀA (A tall), the smaller Gram matrix: what the
/// eigensolver reads, and half the product's work.
pub fn gram_lower<T: Element>(a: MatRef<'_, T>, par: Par) -> Mat<T> {
    let (d, e) = (a.nrows(), a.ncols());
    let p = d.min(e);
    let mut gram = Mat::<T>::zeros(p, p);
    let lower = |gram: MatMut<'_, T>, accum, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>| {
        use faer::linalg::matmul::triangular::{matmul, BlockStructure};
        matmul(
            gram,
            BlockStructure::TriangularLower,
            accum,
            lhs,
            BlockStructure::Rectangular,
            rhs,
            BlockStructure::Rectangular,
            T::from_f64(1.0),
            par,
        );
    };
    if d > e {
        // AᵀA over blocks of A's rows, each copied column-major: the product then runs along
        // contiguous memory, as on the whole copy this replaces (a few MB instead of A again).
        const ROWS: usize = 256;
        for r0 in (0..d).step_by(ROWS) {
            let nr = ROWS.min(d - r0);
            let block = a.subrows(r0, nr).to_owned();
            let accum = if r0 == 0 {
                faer::Accum::Replace
            } else {
                faer::Accum::Add
            };
            lower(gram.as_mut(), accum, block.transpose(), block.as_ref());
        }
    } else {
        // Rows of A are contiguous: both operands already run along k.
        lower(gram.as_mut(), faer::Accum::Replace, a, a.transpose());
    }
    gram
}

/// Eigenvalues (ascending) and eigenvectors of a symmetric matrix from its lower half, with
/// `par` (faer's `self_adjoint_eigen` takes the global setting instead). The matrix is consumed,
/// so that it and the solver's workspace are freed before the caller works with the vectors.
pub fn symmetric_eigen<T: Element>(a: Mat<T>, par: Par) -> Result<(Vec<T>, Mat<T>)> {
    use faer::linalg::evd::{self_adjoint_evd, self_adjoint_evd_scratch, ComputeEigenvectors};
    let n = a.nrows();
    let mut vals = Diag::<T>::zeros(n);
    let mut vecs = Mat::<T>::zeros(n, n);
    let mut mem = MemBuffer::new(self_adjoint_evd_scratch::<T>(
        n,
        ComputeEigenvectors::Yes,
        par,
        Default::default(),
    ));
    self_adjoint_evd(
        a.as_ref(),
        vals.as_mut(),
        Some(vecs.as_mut()),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    )
    .map_err(|e| Error::Compute(format!("eigendecomposition failed: {e:?}")))?;
    drop(a);
    Ok(((0..n).map(|i| vals[i]).collect(), vecs))
}

/// Below this σ_min/σ_max the Gram route's eigenvectors for the smallest σ are not trusted:
/// eigenvalue errors of order ε·σ_max² then rival σ_min².
pub fn gram_min_ratio<T: Element>() -> f64 {
    let eps = if std::mem::size_of::<T>() == 4 {
        f32::EPSILON as f64
    } else {
        f64::EPSILON
    };
    1e3 * eps.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn non_finite_weights_are_found_at_their_position_in_any_chunk() {
        let (rows, cols) = (7, 1500); // 10 500 values: two whole chunks and a partial one
        let mut w = Dense {
            rows,
            cols,
            data: vec![0.5f32; rows * cols],
        };
        assert!(check_finite(&w).is_ok());
        for (at, bad) in [
            (0, f32::NAN),
            (4095, f32::INFINITY),
            (4096, -f32::NAN),
            (10_499, f32::NEG_INFINITY),
        ] {
            let mut v = w.clone();
            v.data[at] = bad;
            v.data[10_499.min(at + 3)] = f32::NAN; // a later one must not be reported instead
            let msg = check_finite(&v).unwrap_err().to_string();
            let want = format!("row {}, column {}", at / cols, at % cols);
            assert!(msg.contains(&want), "{msg} should name {want}");
        }
        w.data[10_499] = f32::MAX; // large but finite
        assert!(check_finite(&w).is_ok());
    }

    #[test]
    fn vectors_borrow_aligned_bytes_and_copy_unaligned_ones() {
        let values = [1.5f32, -2.25, 3.0e-7, f32::MAX];
        let mut paths = (0, 0);
        for skip in 0..4 {
            // `skip` + 8 header bytes, then the values: every alignment.
            let mut raw = vec![0u8; 8 + skip];
            raw.extend(values.iter().flat_map(|x| x.to_le_bytes()));
            let at = raw[8 + skip..].as_ptr().align_offset(4) == 0;
            let bytes: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(raw);
            let v = Vectors::from_le_bytes(bytes.clone(), 8 + skip, values.len()).unwrap();
            assert_eq!(&*v, &values, "skip {skip}");
            assert_eq!(v.is_shared(), cfg!(target_endian = "little") && at);
            if v.is_shared() {
                paths.0 += 1
            } else {
                paths.1 += 1
            }
            assert!(Vectors::from_le_bytes(bytes.clone(), 9 + skip, values.len()).is_none());
            assert!(Vectors::from_le_bytes(bytes, usize::MAX, 1).is_none());
        }
        if cfg!(target_endian = "little") {
            assert_eq!(paths, (1, 3), "both paths taken");
        }
    }
}
