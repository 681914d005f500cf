//! Splitting work between the workers of a job array: which worker takes which item, balanced
//! by estimated cost. A leaf: the engine gives the costs, the command line picks the worker.
//!
//! Every worker computes the same assignment from the same list, so no coordinator is needed:
//! items are taken largest first (ties by name), each by the worker with the least cost so far
//! (ties by index) — the "longest processing time first" rule, whose largest load is within
//! 4/3 of the best possible.

use std::fmt;

/// Worker `index` of `count`, counted from 0 as `JOB_COMPLETION_INDEX` and Slurm's
/// `--array=0-(N-1)` count (`--shard 0/8` … `--shard 7/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard, String> {
        if count == 0 {
            return Err("the number of shards must be at least 1".into());
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count}: the index counts from 0, so it must be below {count}"
            ));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`, e.g. `3/16`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("not a shard: `{s}` (write I/N, e.g. 0/8)"))?;
        let num = |x: &str| {
            x.trim()
                .parse::<usize>()
                .map_err(|_| format!("not a shard: `{s}` (write I/N, e.g. 0/8)"))
        };
        Shard::new(num(i)?, num(n)?)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The worker of each item (`items`: name and estimated cost), for `count` workers.
pub fn assign(items: &[(&str, f64)], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        items[b]
            .1
            .total_cmp(&items[a].1)
            .then_with(|| items[a].0.cmp(items[b].0))
    });
    let mut load = vec![0.0f64; count];
    let mut worker = vec![0; items.len()];
    for i in order {
        // The least loaded; the first of equals.
        let w = (0..count)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap();
        load[w] += items[i].1.max(0.0);
        worker[i] = w;
    }
    worker
}

/// Which of `items` this worker takes: indices into `items`, in their order.
pub fn select(items: &[(&str, f64)], shard: Shard) -> Vec<usize> {
    assign(items, shard.count)
        .into_iter()
        .enumerate()
        .filter(|&(_, w)| w == shard.index)
        .map(|(i, _)| i)
        .collect()
}

/// The shard a job array's scheduler gives this process, from its environment (`get`), if
/// any: Slurm's `SLURM_ARRAY_TASK_ID` counted from `SLURM_ARRAY_TASK_MIN` in steps of
/// `SLURM_ARRAY_TASK_STEP`, of `SLURM_ARRAY_TASK_COUNT`; or Kubernetes' `JOB_COMPLETION_INDEX`
/// of `count` (an indexed Job does not tell its size; `--shards N`).
pub fn from_env(
    get: &dyn Fn(&str) -> Option<String>,
    count: Option<usize>,
) -> Result<Option<Shard>, String> {
    let num = |k: &str| -> Result<Option<usize>, String> {
        match get(k).filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| format!("{k}={v} is not a number")),
        }
    };
    if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        let n = match (count, num("SLURM_ARRAY_TASK_COUNT")?) {
            (Some(n), _) | (None, Some(n)) => n,
            (None, None) => {
                return Err(
                    "SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT; \
                            give --shards N"
                        .into(),
                )
            }
        };
        let index = id.checked_sub(min).ok_or_else(|| {
            format!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}")
        })? / step;
        return Shard::new(index, n)
            .map(Some)
            .map_err(|e| format!("from Slurm's variables: {e}"));
    }
    if let Some(index) = num("JOB_COMPLETION_INDEX")? {
        let n = count.ok_or(
            "JOB_COMPLETION_INDEX is set: give --shards N, the Job's completions".to_string(),
        )?;
        return Shard::new(index, n)
            .map(Some)
            .map_err(|e| format!("from JOB_COMPLETION_INDEX: {e}"));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Vec<(String, f64)> {
        // A 7B-like mix: per block four square matrices and three 2.7× as costly.
        let mut v = Vec::new();
        for b in 0..6 {
            for (m, c) in [("q", 1.0), ("k", 1.0), ("v", 1.0), ("o", 1.0)] {
                v.push((format!("layers.{b}.{m}"), c));
            }
            for m in ["gate", "up", "down"] {
                v.push((format!("layers.{b}.{m}"), 2.7));
            }
        }
        v
    }

    fn refs(v: &[(String, f64)]) -> Vec<(&str, f64)> {
        v.iter().map(|(n, c)| (n.as_str(), *c)).collect()
    }

    #[test]
    fn shards_are_disjoint_covering_deterministic_and_balanced() {
        let owned = items();
        let items = refs(&owned);
        let total: f64 = items.iter().map(|i| i.1).sum();
        for n in 1..=9 {
            let a = assign(&items, n);
            assert_eq!(a, assign(&items, n), "not deterministic");
            // Independent of the order the list comes in.
            let mut rev = items.clone();
            rev.reverse();
            let b: Vec<usize> = assign(&rev, n).into_iter().rev().collect();
            assert_eq!(a, b, "depends on the list's order");
            let mut seen = vec![0; items.len()];
            let mut loads = vec![0.0; n];
            for (i, load) in loads.iter_mut().enumerate() {
                for j in select(&items, Shard::new(i, n).unwrap()) {
                    seen[j] += 1;
                    *load += items[j].1;
                }
            }
            assert!(seen.iter().all(|&s| s == 1), "n={n}: {seen:?}");
            let max = loads.iter().cloned().fold(0.0, f64::max);
            // Within the largest item of the fair share (LPT's bound is tighter).
            assert!(max <= total / n as f64 + 2.7 + 1e-9, "n={n}: {loads:?}");
        }
        // 42 items, 4 workers: 4 × 6 + 2.7 × 18 = 72.6, fair 18.15; LPT reaches 18.8 at most.
        let loads: Vec<f64> = (0..4)
            .map(|i| {
                select(&items, Shard::new(i, 4).unwrap())
                    .iter()
                    .map(|&j| items[j].1)
                    .sum()
            })
            .collect();
        assert!(
            loads.iter().all(|&l| (17.0..=19.0).contains(&l)),
            "{loads:?}"
        );
    }

    #[test]
    fn shards_parse_and_come_from_the_schedulers_variables() {
        assert_eq!(
            Shard::parse("3/16"),
            Ok(Shard {
                index: 3,
                count: 16
            })
        );
        assert!(Shard::parse("16/16").unwrap_err().contains("below 16"));
        assert!(Shard::parse("1/0").is_err());
        assert!(Shard::parse("3").is_err());
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = env(&[]);
        assert_eq!(from_env(&none, None), Ok(None));
        let slurm = env(&[
            ("SLURM_ARRAY_TASK_ID", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(from_env(&slurm, None), Ok(Some(Shard::new(5, 8).unwrap())));
        // --array=1-8 and --array=0-14:2 count from their first task.
        let from1 = env(&[
            ("SLURM_ARRAY_TASK_ID", "8"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(from_env(&from1, None), Ok(Some(Shard::new(7, 8).unwrap())));
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "6"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "8"),
        ]);
        assert_eq!(
            from_env(&stepped, None),
            Ok(Some(Shard::new(3, 8).unwrap()))
        );
        let k8s = env(&[("JOB_COMPLETION_INDEX", "2")]);
        assert!(from_env(&k8s, None).unwrap_err().contains("--shards"));
        assert_eq!(from_env(&k8s, Some(4)), Ok(Some(Shard::new(2, 4).unwrap())));
        assert!(from_env(&k8s, Some(2)).unwrap_err().contains("below 2"));
        let bad = env(&[("JOB_COMPLETION_INDEX", "x")]);
        assert!(from_env(&bad, Some(2))
            .unwrap_err()
            .contains("not a number"));
    }
}
