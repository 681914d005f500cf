use std::io::IsTerminal;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lorascope::cache::Cache;
use lorascope::engine::{Engine, Scan};
use lorascope::report;
use lorascope::spectral::Rule;
use lorascope::Error;

use super::{print_warnings, CacheArgs, ScanArgs, ScanFormat};

pub fn open_cache(c: &CacheArgs) -> Cache {
    if c.no_cache {
        return Cache::disabled();
    }
    match c.cache_dir.clone().or_else(lorascope::cache::default_dir) {
        Some(d) => Cache::open(&d),
        None => Cache::disabled(),
    }
}

/// Progress on stderr when it is a terminal, nothing in pipes.
pub fn progress_bar(total: usize) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let pb = ProgressBar::with_draw_target(Some(total as u64), target);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} matrices  eta {eta}  {wide_msg}")
            .unwrap(),
    );
    pb
}

pub fn run_scan(engine: &Engine, jobs: usize) -> Scan {
    run_scan_with(engine, jobs, &|_, _| {})
}

/// [`run_scan`], handing each report and tuned decomposition to `each`.
pub fn run_scan_with(
    engine: &Engine,
    jobs: usize,
    each: &(dyn Fn(&lorascope::engine::MatrixReport, lorascope::spectral::Decomposition) + Sync),
) -> Scan {
    let pb = progress_bar(engine.matrices().len());
    let scan = engine.scan_with(
        jobs,
        &|done, _, name| {
            pb.set_position(done as u64);
            pb.set_message(name.to_string());
        },
        each,
    );
    pb.finish_and_clear();
    scan
}

pub fn run(a: ScanArgs) -> Result<ExitCode, Error> {
    let engine = a.analysis.engine()?;
    let scan = run_scan(&engine, a.analysis.jobs_for(&engine, default_jobs()));
    print_warnings(&engine.cache.take_warnings());
    let user = super::user_state(&engine, &scan, a.analysis.ignore_flags);
    let rule = a.analysis.rule()?;
    print_scan(&engine, &scan, &a, rule, &user);
    let total = scan.total_with(&user, &rule);
    if scan.failed() > 0 {
        eprintln!(
            "error: {} could not be analysed (see their rows)",
            report::count(scan.failed(), "matrix", "matrices")
        );
        return Ok(ExitCode::from(3));
    }
    if a.fail_above.is_some_and(|n| total > n) {
        eprintln!(
            "{} exceed --fail-above {}",
            report::count(total, "intruder", "intruders"),
            a.fail_above.unwrap()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Counts follow the explorer's flags (`user`) where set; each output says where they did.
fn print_scan(
    engine: &Engine,
    scan: &Scan,
    a: &ScanArgs,
    rule: Rule,
    user: &lorascope::flags::UserState,
) {
    let (k, eps) = (rule.k(), rule.epsilon());
    let counted =
        |m: &lorascope::engine::MatrixReport| user.intruders(&m.name, &m.max_cos(), &rule);
    let flags_of = |name: &str| -> String {
        user.flags
            .get(name)
            .into_iter()
            .flatten()
            .map(|(j, v)| format!("{j}:{v}"))
            .collect::<Vec<_>>()
            .join(";")
    };
    match a.format {
        ScanFormat::Json => {
            let v = report::scan_json(&engine.inputs, scan, &engine.opts, &rule, user);
            outln!("{}", serde_json::to_string_pretty(&v).unwrap());
        }
        ScanFormat::Csv => {
            let mut cols: Vec<String> = (0..k).map(|j| format!("c_{j}")).collect();
            // --sweep: the count at each ε of the grid, one column each.
            let sweep: Vec<Rule> = if a.sweep {
                rule.sweep().collect()
            } else {
                vec![]
            };
            cols.extend(
                sweep
                    .iter()
                    .map(|r| format!("intruders_eps_{:.1}", r.epsilon())),
            );
            // The rule's own count and the flags that override it (`j:verdict;…`).
            cols.extend(["rule_intruders".to_string(), "user_flags".to_string()]);
            outln!(
                "name,rows,cols,intruders,min_cos,delta_rel_norm,delta_effective_rank,error,{}",
                cols.join(",")
            );
            for (name, r) in &scan.results {
                match r {
                    Ok(m) => {
                        let mut values: Vec<String> = m
                            .max_cos()
                            .iter()
                            .take(k)
                            .map(|c| format!("{c:.6}"))
                            .collect();
                        // A matrix of rank below k has fewer vectors: its row keeps its width.
                        values.resize(k, String::new());
                        values.extend(sweep.iter().map(|r| m.intruders(r).len().to_string()));
                        values.push(m.intruders(&rule).len().to_string());
                        values.push(flags_of(name));
                        outln!(
                            "{},{},{},{},{:.6},{:.6},{},,{}",
                            report::csv_field(name),
                            m.shape[0],
                            m.shape[1],
                            counted(m).len(),
                            m.min_cos(k),
                            m.delta_rel_norm,
                            m.delta_effective_rank
                                .map_or(String::new(), |x| format!("{x:.3}")),
                            values.join(",")
                        )
                    }
                    Err(e) => outln!(
                        "{},,,,,,,{}{}",
                        report::csv_field(name),
                        report::csv_field(e),
                        ",".repeat(k + sweep.len() + 2)
                    ),
                }
            }
        }
        ScanFormat::Table => {
            // Names as shown: escaped, and no wider than 80 columns (a width from data is not
            // to be trusted: a 70,000-character name once panicked the formatter).
            const NAME_MAX: usize = 80;
            let name_of = |n: &str| report::shown_name(n, Some(NAME_MAX));
            let w = scan
                .results
                .iter()
                .map(|(n, _)| name_of(n).chars().count())
                .max()
                .unwrap_or(6)
                .max(6);
            let sweep = if a.sweep {
                rule.sweep()
                    .map(|r| format!(" ε={:.1}", r.epsilon()))
                    .collect::<String>()
            } else {
                String::new()
            };
            outln!(
                "{:<w$}  {:>10}  {:>9}  {:>7}  {:>8}  {:>7}{sweep}",
                "matrix",
                "shape",
                "intruders",
                "min c_j",
                "σ1 ratio",
                "|ΔW|/|W|"
            );
            for (name, r) in &scan.results {
                match r {
                    Ok(m) => {
                        let ratio = m.sigma_tuned[0] / m.sigma_base[0];
                        // `*`: the user's flags changed this matrix's verdicts.
                        let n = counted(m).len();
                        let count = if user.flags.contains_key(name) {
                            format!("{n}*")
                        } else {
                            n.to_string()
                        };
                        let mut line = format!(
                            "{:<w$}  {:>10}  {:>9}  {:>7.3}  {:>8.3}  {:>7.4}",
                            name_of(name),
                            format!("{}×{}", m.shape[0], m.shape[1]),
                            count,
                            m.min_cos(k),
                            ratio,
                            m.delta_rel_norm
                        );
                        if a.sweep {
                            for r in rule.sweep() {
                                line += &format!(" {:>5}", m.intruders(&r).len());
                            }
                        }
                        outln!("{line}");
                    }
                    Err(e) => outln!(
                        "{:<w$}  FAILED: {}",
                        name_of(name),
                        report::shown_name(e, None)
                    ),
                }
            }
            outln!("");
            outln!("intruders per layer (k={k}, ε={eps}):");
            for (b, n) in scan.per_layer_with(user, &rule) {
                outln!("  {:<w2$} {n}", name_of(&b), w2 = w.min(40));
            }
            if a.sweep {
                outln!("");
                outln!("total by ε (k={k}):");
                for (e, n) in scan.sweep(&rule) {
                    outln!("  ε={e:.1}  {n}");
                }
            }
            outln!("");
            outln!(
                "total intruders (k={k}, ε={eps}): {} in {}{}",
                scan.total_with(user, &rule),
                report::count(scan.results.len(), "matrix", "matrices"),
                if scan.failed() > 0 {
                    format!(", {} failed", scan.failed())
                } else {
                    String::new()
                }
            );
            if user.overrides() > 0 {
                outln!(
                    "(* explorer flags: the rule alone finds {}; --ignore-flags for it)",
                    scan.total(&rule)
                );
            }
        }
    }
}
