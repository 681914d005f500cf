//! The intruder rule, in one place: tuned singular vector j (ranked by σ, j < k) is an intruder
//! iff its largest |cos| with every base singular vector is strictly below ε (the paper's), or,
//! with [`RuleKind::DegenerateAware`], with every cluster of base vectors whose singular values
//! are nearly equal ([`super::overlap`]). A [`Rule`] is validated once, where it is parsed;
//! everything downstream takes one.

pub const DEFAULT_K: usize = 10;
pub const DEFAULT_EPSILON: f64 = 0.5;
/// The largest k (and the most tuned vectors a matrix keeps).
pub const MAX_K: usize = 1024;

/// ε values of a sweep (`scan --sweep`, reports, the explorer's overview): 0.1, 0.2, …, 0.9.
pub const SWEEP: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// Which best match c_j a rule compares with ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuleKind {
    /// The paper's: the best single base vector.
    #[default]
    Paper,
    /// An extension: the best span of a cluster of base vectors with nearly equal σ, so that a
    /// rotation inside a near-degenerate subspace is not counted as an intruder.
    DegenerateAware,
}

impl RuleKind {
    /// As `--rule` spells it and the JSON outputs name it.
    pub fn name(self) -> &'static str {
        match self {
            RuleKind::Paper => "paper",
            RuleKind::DegenerateAware => "degenerate-aware",
        }
    }
}

/// How many top tuned vectors are tested (k), below which |cos| one is an intruder (ε), and
/// which |cos| ([`RuleKind`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    k: usize,
    epsilon: f64,
    kind: RuleKind,
}

impl Default for Rule {
    /// The paper's: k = 10, ε = 0.5.
    fn default() -> Rule {
        Rule {
            k: DEFAULT_K,
            epsilon: DEFAULT_EPSILON,
            kind: RuleKind::Paper,
        }
    }
}

impl Rule {
    /// The paper's rule with k in 1 … [`MAX_K`], ε in (0, 1]; the message says which is wrong.
    pub fn new(k: usize, epsilon: f64) -> Result<Rule, String> {
        if !(1..=MAX_K).contains(&k) {
            return Err(format!("k must be between 1 and {MAX_K}, got {k}"));
        }
        if !(epsilon > 0.0 && epsilon <= 1.0) {
            return Err(format!("ε (epsilon) must be in (0, 1], got {epsilon}"));
        }
        Ok(Rule {
            k,
            epsilon,
            kind: RuleKind::Paper,
        })
    }

    /// The same k and ε, comparing another c_j.
    pub fn with_kind(self, kind: RuleKind) -> Rule {
        Rule { kind, ..self }
    }

    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// The c_j this rule compares with ε, of a vector whose best single match is `max_cos` and
    /// best cluster match `cluster_cos`.
    pub fn c(&self, max_cos: f64, cluster_cos: f64) -> f64 {
        match self.kind {
            RuleKind::Paper => max_cos,
            RuleKind::DegenerateAware => cluster_cos,
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// The same k at another ε (checked as [`Rule::new`] checks it).
    pub fn with_epsilon(self, epsilon: f64) -> Result<Rule, String> {
        Ok(Rule::new(self.k, epsilon)?.with_kind(self.kind))
    }

    /// The same ε at another k.
    pub fn with_k(self, k: usize) -> Result<Rule, String> {
        Ok(Rule::new(k, self.epsilon)?.with_kind(self.kind))
    }

    /// The verdict on tuned vector j with best match c: among the top k, and c < ε.
    pub fn is_intruder_at(&self, j: usize, c: f64) -> bool {
        j < self.k && c < self.epsilon
    }

    /// Intruder indices among the first k of `max_cos` (c_0, c_1, … as this rule reads them:
    /// see [`Rule::c`]), ascending.
    pub fn intruders(&self, max_cos: &[f64]) -> Vec<usize> {
        (0..max_cos.len().min(self.k))
            .filter(|&j| self.is_intruder_at(j, max_cos[j]))
            .collect()
    }

    pub fn count(&self, max_cos: &[f64]) -> usize {
        self.intruders(max_cos).len()
    }

    /// This k at each ε of [`SWEEP`].
    pub fn sweep(&self) -> impl Iterator<Item = Rule> + '_ {
        SWEEP.iter().map(|&epsilon| Rule { epsilon, ..*self })
    }
}

/// How many of the leading tuned vectors can be tested at all. A singular vector whose σ is at
/// the rounding level of its matrix — σ_j ≤ σ₁·max(m, n)·ε_f32, NumPy's `matrix_rank` rule at
/// the precision weights are stored in — spans part of a null space: any orthonormal basis of
/// it is as valid, so its c_j is arbitrary and would read as an intruder. With a zero,
/// subnormal or non-finite σ₁ on either side there is no spectrum to compare: nothing is
/// testable. `tuned_sigma` is descending; the answer is a prefix length.
pub fn testable(tuned_sigma: &[f64], base_sigma1: f64, (m, n): (usize, usize)) -> usize {
    let usable = |s: f64| s.is_finite() && s >= f32::MIN_POSITIVE as f64;
    let s1 = tuned_sigma.first().copied().unwrap_or(0.0);
    if !usable(s1) || !usable(base_sigma1) {
        return 0;
    }
    let tol = s1 * m.max(n) as f64 * f32::EPSILON as f64;
    tuned_sigma.iter().take_while(|&&s| s > tol).count()
}

/// Counts summed per block (`…layer.N`, from `checkpoint::block_of`), in the order blocks first
/// appear; matrices outside blocks (`None`) under "(other)". The one per-layer aggregation:
/// scans, reports and the explorer.
pub fn per_block<'a>(
    counts: impl IntoIterator<Item = (Option<&'a str>, usize)>,
) -> Vec<(String, usize)> {
    let mut out: Vec<(String, usize)> = Vec::new();
    // Each block's place in `out`: a checkpoint may have as many blocks as tensors.
    let mut at: std::collections::HashMap<&'a str, usize> = Default::default();
    for (block, n) in counts {
        let block = block.unwrap_or("(other)");
        match at.get(block) {
            Some(&i) => out[i].1 += n,
            None => {
                at.insert(block, out.len());
                out.push((block.to_string(), n));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_inequality_and_top_k_only() {
        let c = [0.2, 0.5, 0.9, 0.1];
        let rule = |k, e| Rule::new(k, e).unwrap();
        assert_eq!(rule(4, 0.5).intruders(&c), [0, 3]); // 0.5 is not < 0.5
        assert_eq!(rule(3, 0.5).intruders(&c), [0]);
        assert_eq!(rule(10, 0.95).count(&c), 4);
        assert!(!rule(3, 0.5).is_intruder_at(3, 0.1));
        let sweep: Vec<f64> = rule(10, 0.5).sweep().map(|r| r.epsilon()).collect();
        assert_eq!(sweep, SWEEP);
        assert_eq!(Rule::default(), rule(10, 0.5));
    }

    #[test]
    fn the_rule_is_checked_once_where_it_is_made() {
        assert!(Rule::new(0, 0.5)
            .unwrap_err()
            .contains("k must be between 1 and 1024"));
        assert!(Rule::new(1025, 0.5).is_err());
        for e in [0.0, -0.1, 1.5, f64::NAN] {
            let m = Rule::new(10, e).unwrap_err();
            assert!(m.contains("must be in (0, 1]"), "{e}: {m}");
        }
        assert_eq!(Rule::new(10, 1.0).unwrap().epsilon(), 1.0);
        assert!(Rule::default().with_epsilon(0.0).is_err());
        assert_eq!(Rule::default().with_k(3).unwrap().k(), 3);
    }

    #[test]
    fn vectors_at_rounding_level_or_without_a_spectrum_are_not_testable() {
        let shape = (100, 50); // σ₁ = 2: tolerance 2·100·ε_f32 ≈ 2.38e-5
        assert_eq!(
            testable(&[2.0, 1.0, 3e-5, 2.4e-5, 2e-5, 0.0], 1.0, shape),
            4
        );
        assert_eq!(testable(&[2.0, 1.0, 2.3e-5, 0.0], 1.0, shape), 2);
        assert_eq!(testable(&[1.0; 10], 1.0, shape), 10);
        assert_eq!(testable(&[0.0; 10], 1.0, shape), 0, "zero tuned matrix");
        assert_eq!(testable(&[1.0; 10], 0.0, shape), 0, "zero base");
        assert_eq!(testable(&[1.0; 10], 1e-40, shape), 0, "subnormal base");
        assert_eq!(testable(&[1e-40; 10], 1.0, shape), 0, "subnormal tuned");
        assert_eq!(testable(&[1.0; 10], f64::NAN, shape), 0);
        assert_eq!(testable(&[f64::INFINITY, 1.0], 1.0, shape), 0);
        assert_eq!(testable(&[], 1.0, shape), 0);
    }

    #[test]
    fn counts_add_up_per_block_in_order() {
        let counts = [
            (Some("model.layers.1"), 2),
            (Some("model.layers.0"), 1),
            (Some("model.layers.1"), 3),
            (None, 4),
        ];
        assert_eq!(
            per_block(counts),
            [
                ("model.layers.1".to_string(), 5),
                ("model.layers.0".to_string(), 1),
                ("(other)".to_string(), 4)
            ]
        );
    }
}
