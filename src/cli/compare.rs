use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lorascope::compare::{self, Comparison, Show};
use lorascope::Error;

use super::scan::{default_jobs, progress_bar};
use super::{print_warnings, AnalysisOpts, CompareArgs, ScanFormat};

/// A run and its engine, or why it could not be opened.
pub type OpenedRun = (compare::RunSpec, Result<lorascope::engine::Engine, Error>);

/// The RUN arguments as runs (Trainer folders expanded), each opened against the base — headers
/// only — or with the error that stopped it; the comparison and the explorer start here.
pub fn open_runs(
    base: &Path,
    run_args: &[PathBuf],
    labels: &[String],
    opts: &AnalysisOpts,
) -> Result<Vec<OpenedRun>, Error> {
    let base = lorascope::checkpoint::locate::resolve(
        base,
        &lorascope::checkpoint::locate::HubCache::from_env(),
    )?;
    let specs = compare::expand(run_args, labels)?;
    if specs.is_empty() {
        return Err(Error::Usage(
            "no runs (a Trainer folder without checkpoints?)".into(),
        ));
    }
    Ok(specs
        .into_iter()
        .map(|s| {
            let e = opts.engine_for(&base, &s.path);
            (s, e)
        })
        .collect())
}

/// The runs opened (a run that cannot be opened keeps its error) and compared, with one
/// progress bar over every run's matrices.
pub fn compare_runs(
    base: &Path,
    run_args: &[PathBuf],
    labels: &[String],
    reference: Option<&str>,
    opts: &AnalysisOpts,
    show: Show,
) -> Result<Comparison, Error> {
    let mut opts = opts.clone();
    // Whole spectra are asked for to count over fractions of them: every vector is matched.
    if opts.full_svd {
        opts.keep = opts.keep.max(lorascope::engine::MAX_KEEP);
    }
    opts.check()?;
    let rule = opts.rule()?;
    let runs: Vec<_> = open_runs(base, run_args, labels, &opts)?
        .into_iter()
        .map(|(s, e)| (s, e.map_err(|e| e.to_string())))
        .collect();
    let specs: Vec<_> = runs.iter().map(|(s, _)| s.clone()).collect();
    let reference = compare::reference_of(&specs, reference)?;
    let total: usize = runs
        .iter()
        .filter_map(|(_, e)| e.as_ref().ok())
        .map(|e| e.matrices().len())
        .sum();
    let pb = progress_bar(total);
    let settings = compare::Settings {
        rule,
        reference,
        keep: opts.keep.max(rule.k()),
        show,
    };
    let c = compare::compare(
        runs,
        settings,
        &|e| opts.jobs_for(e, default_jobs()),
        &|done, label| {
            pb.set_message(label.to_string());
            pb.set_position(done as u64);
        },
        &|e| print_warnings(&e.cache.take_warnings()),
    )?;
    pb.finish_and_clear();
    Ok(c)
}

/// Exit 3, naming each run, when some run could not be scanned whole.
pub fn exit_code(c: &Comparison) -> ExitCode {
    if c.failed() == 0 {
        return ExitCode::SUCCESS;
    }
    for r in &c.runs {
        if let Err(e) = &r.results {
            eprintln!("{}: {e}", r.spec.label);
        }
    }
    eprintln!(
        "error: {} could not be scanned whole (see their rows)",
        lorascope::report::count(c.failed(), "run", "runs")
    );
    ExitCode::from(3)
}

pub fn run(a: CompareArgs) -> Result<ExitCode, Error> {
    let c = compare_runs(
        &a.base,
        &a.runs,
        &a.labels,
        a.reference.as_deref(),
        &a.opts,
        Show::None,
    )?;
    let text = match a.format {
        ScanFormat::Table => c.table(),
        ScanFormat::Csv => c.csv(),
        ScanFormat::Json => serde_json::to_string_pretty(&c.json()).unwrap(),
    };
    outln!("{}", text.trim_end_matches('\n'));
    Ok(exit_code(&c))
}
