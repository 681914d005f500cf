//! How each tuned singular vector sits in the base's basis, from its overlaps
//! c_ij = |⟨u0_i, u_j⟩| with every base vector: the best match (the paper's c_j), how spread
//! the overlaps are (the participation number), and the best match with a cluster of base
//! vectors whose singular values are nearly equal (the degenerate-aware rule's c_j).

use std::ops::Range;

use super::{topk, Decomposition};

/// δ of `--degenerate-tol`: base values within 0.5 % of each other form one cluster.
pub const DEFAULT_DEGENERATE_TOL: f64 = 0.005;

/// Tuned vector j against the base's vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlap {
    /// c_j = max_i c_ij (the paper's), and that i.
    pub max_cos: f64,
    pub best: usize,
    /// PR_j = 1 / Σ_i c_ij⁴: 1 for a vector on one base vector, 2 for an even mix of two,
    /// large for one spread over many (an intruder's flat profile, as one number).
    pub participation: f64,
    /// The largest norm of u_j's projection onto one cluster's span, √(Σ_{i∈C} c_ij²): c_j
    /// where every cluster is a single vector.
    pub cluster_cos: f64,
    /// The base vectors of that cluster.
    pub cluster: Range<usize>,
}

/// Base vectors (σ descending) grouped into maximal runs of consecutive values with
/// σ_i − σ_{i+1} ≤ δ·σ_i: inside such a run the vectors are not individually determined (a
/// small update may rotate them in their span), so the run is matched as a whole.
pub fn degenerate_clusters(sigma: &[f64], tol: f64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..sigma.len() {
        let joins_next = i + 1 < sigma.len() && sigma[i] - sigma[i + 1] <= tol * sigma[i];
        if !joins_next {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out
}

/// [`Overlap`] of each kept tuned vector with every kept base vector, clusters by `tol`. In
/// f32, as the vectors are stored: each product moves c_ij by about 1e-7, far below the 1e-4
/// asked of c_j, and needs no copy.
pub fn overlaps(base: &Decomposition, tuned: &Decomposition, tol: f64) -> Vec<Overlap> {
    assert_eq!(base.dim, tuned.dim, "vectors of different spaces");
    let t = tuned.as_mat();
    let keep = tuned.keep;
    let clusters = degenerate_clusters(&base.sigma[..base.keep.min(base.sigma.len())], tol);
    let mut out = vec![
        Overlap {
            max_cos: 0.0,
            best: 0,
            participation: 0.0,
            cluster_cos: 0.0,
            cluster: 0..0,
        };
        keep
    ];
    let mut fourth = vec![0.0f64; keep];
    // Σ c_ij² over the cluster being summed, per tuned vector; clusters run across blocks.
    let mut in_cluster = vec![0.0f64; keep];
    let mut cluster = clusters.iter().peekable();
    // Base vectors in blocks: the products stay small.
    const BLOCK: usize = 1024;
    for start in (0..base.keep).step_by(BLOCK) {
        let n = BLOCK.min(base.keep - start);
        let block = base.as_mat().subcols(start, n).transpose();
        let c = topk::mul_wide(block, t, faer::get_global_parallelism()); // n × keep
        for i in 0..n {
            let bi = start + i;
            for (j, o) in out.iter_mut().enumerate() {
                let v = c[(i, j)].abs() as f64;
                if v > o.max_cos {
                    (o.max_cos, o.best) = (v, bi);
                }
                let v2 = v * v;
                fourth[j] += v2 * v2;
                in_cluster[j] += v2;
            }
            let Some(cl) = cluster.peek() else { continue };
            if bi + 1 == cl.end {
                for (o, s) in out.iter_mut().zip(in_cluster.iter_mut()) {
                    let norm = s.sqrt();
                    if norm > o.cluster_cos {
                        (o.cluster_cos, o.cluster) = (norm, (*cl).clone());
                    }
                    *s = 0.0;
                }
                cluster.next();
            }
        }
    }
    for (o, f) in out.iter_mut().zip(fourth) {
        o.participation = if f > 0.0 { 1.0 / f } else { 0.0 };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusters_are_maximal_runs_within_the_tolerance() {
        let s = [10.0, 9.99, 9.985, 8.0, 4.0, 3.999, 1.0];
        let c = degenerate_clusters(&s, 0.005);
        assert_eq!(c, vec![0..3, 3..4, 4..6, 6..7]);
        // δ = 0: only exact ties group (zeros of a rank-deficient base among them).
        let c = degenerate_clusters(&[3.0, 3.0, 2.0, 0.0, 0.0], 0.0);
        assert_eq!(c, vec![0..2, 2..3, 3..5]);
        assert!(degenerate_clusters(&[], 0.1).is_empty());
    }
}
