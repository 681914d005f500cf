//! After a repair: intruders per matrix before (as the repair counted them, flags applied) and
//! after (the output scanned against the base, by the rule). Mitigation can move intruders
//! elsewhere, so a matrix that gains some is called out.

use std::collections::BTreeMap;

use crate::engine::Scan;
use crate::spectral::Rule;

#[derive(Debug, Clone, PartialEq)]
pub struct VerifyRow {
    pub name: String,
    pub before: usize,
    /// Err: the matrix failed, or is missing from the output.
    pub after: Result<usize, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    pub rule: Rule,
    /// Every matrix counted before, in name order.
    pub rows: Vec<VerifyRow>,
}

impl Verification {
    /// Intruders per analysed matrix before a repair, as it counted them (flags applied).
    pub fn counts_before(
        scan: &Scan,
        user: &crate::flags::UserState,
        rule: &Rule,
    ) -> BTreeMap<String, usize> {
        scan.reports()
            .map(|r| {
                (
                    r.name.clone(),
                    user.intruders(&r.name, &r.cos(rule), rule).len(),
                )
            })
            .collect()
    }

    pub fn new(before: &BTreeMap<String, usize>, after: &Scan, rule: &Rule) -> Verification {
        let found: BTreeMap<&str, Result<usize, String>> = after
            .results
            .iter()
            .map(|(n, r)| {
                let r = match r {
                    Ok(m) => Ok(m.intruders(rule).len()),
                    Err(e) => Err(e.clone()),
                };
                (n.as_str(), r)
            })
            .collect();
        let rows = before
            .iter()
            .map(|(name, b)| VerifyRow {
                name: name.clone(),
                before: *b,
                after: found
                    .get(name.as_str())
                    .cloned()
                    .unwrap_or_else(|| Err("missing from the output".into())),
            })
            .collect();
        Verification { rule: *rule, rows }
    }

    /// Totals before and after over the matrices checked.
    pub fn totals(&self) -> (usize, usize) {
        self.rows
            .iter()
            .filter_map(|r| r.after.as_ref().ok().map(|a| (r.before, *a)))
            .fold((0, 0), |(b, a), (x, y)| (b + x, a + y))
    }

    /// Matrices with more intruders after than before.
    pub fn worse(&self) -> usize {
        self.rows
            .iter()
            .filter(|r| r.after.as_ref().is_ok_and(|a| *a > r.before))
            .count()
    }

    /// Matrices that could not be checked.
    pub fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.after.is_err()).count()
    }

    /// The rows worth showing: some intruders before or after, or a failure.
    pub fn shown(&self) -> impl Iterator<Item = &VerifyRow> {
        self.rows
            .iter()
            .filter(|r| r.before > 0 || r.after.as_ref().map_or(true, |a| *a > 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{MatrixReport, VectorMatch};

    fn report(name: &str, max_cos: &[f64]) -> MatrixReport {
        MatrixReport {
            name: name.into(),
            shape: [4, 4],
            sigma_base: vec![1.0; 4],
            sigma_tuned: vec![1.0; 4],
            vectors: max_cos
                .iter()
                .map(|c| VectorMatch {
                    sigma: 1.0,
                    sigma_ratio: 1.0,
                    max_cos: *c,
                    best_base_index: 0,
                    best_base_sigma: 1.0,
                    participation: 1.0 / c.powi(4),
                    cluster_cos: *c,
                    cluster_size: 1,
                })
                .collect(),
            testable: max_cos.len(),
            delta_rel_norm: 0.1,
            delta_effective_rank: None,
            weights: 0,
        }
    }

    #[test]
    fn before_and_after_per_matrix_with_gains_and_failures_called_out() {
        let rule = Rule::default();
        let before: BTreeMap<String, usize> = [("a", 2), ("b", 0), ("c", 1), ("d", 0), ("e", 1)]
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        let after = Scan {
            results: vec![
                ("a".into(), Ok(report("a", &[0.9, 0.2]))),
                ("b".into(), Ok(report("b", &[0.1, 0.3]))),
                ("c".into(), Ok(report("c", &[0.9]))),
                ("d".into(), Ok(report("d", &[0.9]))),
                ("e".into(), Err("NaN".into())),
            ],
        };
        let v = Verification::new(&before, &after, &rule);
        let got: Vec<(&str, usize, Result<usize, String>)> = v
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.before, r.after.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", 2, Ok(1)),
                ("b", 0, Ok(2)),
                ("c", 1, Ok(0)),
                ("d", 0, Ok(0)),
                ("e", 1, Err("NaN".into()))
            ]
        );
        assert_eq!(v.totals(), (3, 3));
        assert_eq!((v.worse(), v.failed()), (1, 1));
        let shown: Vec<&str> = v.shown().map(|r| r.name.as_str()).collect();
        assert_eq!(shown, ["a", "b", "c", "e"]);
    }
}
