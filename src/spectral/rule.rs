//! The intruder rule, in one place: tuned singular vector j (ranked by σ, j < k) is an intruder
//! iff its largest |cos| with every base singular vector is strictly below ε.

pub const DEFAULT_K: usize = 10;
pub const DEFAULT_EPSILON: f64 = 0.5;

pub fn is_intruder(c: f64, epsilon: f64) -> bool {
    c < epsilon
}

/// The rule for tuned vector j: among the top k, and c_j < ε.
pub fn is_intruder_at(j: usize, c: f64, k: usize, epsilon: f64) -> bool {
    j < k && is_intruder(c, epsilon)
}

/// Intruder indices among the first `k` of `max_cos`.
pub fn intruders(max_cos: &[f64], k: usize, epsilon: f64) -> Vec<usize> {
    max_cos
        .iter()
        .take(k)
        .enumerate()
        .filter(|(_, c)| is_intruder(**c, epsilon))
        .map(|(j, _)| j)
        .collect()
}

pub fn count_intruders(max_cos: &[f64], k: usize, epsilon: f64) -> usize {
    intruders(max_cos, k, epsilon).len()
}

/// ε values of `--sweep`: 0.1, 0.2, …, 0.9.
pub fn sweep_epsilons() -> Vec<f64> {
    (1..=9).map(|i| i as f64 / 10.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_inequality_and_top_k_only() {
        let c = [0.2, 0.5, 0.9, 0.1];
        assert_eq!(intruders(&c, 4, 0.5), [0, 3]); // 0.5 is not < 0.5
        assert_eq!(intruders(&c, 3, 0.5), [0]);
        assert_eq!(count_intruders(&c, 10, 0.95), 4);
        assert_eq!(sweep_epsilons()[4], 0.5);
    }
}
