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

pub fn run_scan(engine: &Engine, jobs: usize) -> Result<Scan, Error> {
    run_scan_with(engine, jobs, &|_, _| {})
}

/// [`run_scan`], handing each report and tuned decomposition to `each`. An input file that
/// changed during the scan fails the whole scan (exit 2): its matrices' results mix old and
/// new bytes, or were never read.
pub fn run_scan_with(
    engine: &Engine,
    jobs: usize,
    each: &(dyn Fn(&lorascope::engine::MatrixReport, lorascope::spectral::Decomposition) + Sync),
) -> Result<Scan, Error> {
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
    engine.inputs.check_intact()?;
    Ok(scan)
}

pub fn run(a: ScanArgs) -> Result<ExitCode, Error> {
    let engine = a.analysis.engine()?;
    let scan = run_scan(&engine, a.analysis.jobs_for(&engine, default_jobs()))?;
    print_warnings(&engine.cache.take_warnings());
    if engine.decompositions() > 0 {
        super::warn_if_cache_large(&engine.cache);
    }
    let user = super::user_state(&engine, &scan, a.analysis.opts.ignore_flags);
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
    let results = report::Results::new(engine, scan, user, &rule, scan.results.len());
    let text = match a.format {
        ScanFormat::Json => serde_json::to_string_pretty(&report::json::results(&results)).unwrap(),
        ScanFormat::Csv => report::table::csv(&results, a.sweep),
        ScanFormat::Table => report::table::table(&results, a.sweep),
    };
    outln!("{}", text.trim_end_matches('\n'));
    // The table says it under the total; machine formats keep stdout for data.
    if !matches!(a.format, ScanFormat::Table) {
        if let Some(note) = report::table::untestable_note(&results) {
            eprintln!("warning: {note}");
        }
        if let Some(note) = results.cluster_note() {
            eprintln!("warning: {note}");
        }
    }
}
