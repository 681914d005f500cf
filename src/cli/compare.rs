use std::process::ExitCode;

use lorascope::compare::{self, Comparison, RunResult};
use lorascope::flags::UserState;
use lorascope::report::Results;
use lorascope::Error;

use super::scan::{default_jobs, progress_bar};
use super::{print_warnings, CompareArgs, ScanFormat};

/// Each run scanned against the base in turn (one progress bar for all), counted by the rule:
/// runs are compared by the same rule, without the explorer's per-run flags.
pub fn run(mut a: CompareArgs) -> Result<ExitCode, Error> {
    // Whole spectra are asked for to count over fractions of them: every vector is matched.
    if a.opts.full_svd {
        a.opts.keep = a.opts.keep.max(lorascope::engine::MAX_KEEP);
    }
    a.opts.check()?;
    let rule = a.opts.rule()?;
    let base = lorascope::checkpoint::locate::resolve(
        &a.base,
        &lorascope::checkpoint::locate::HubCache::from_env(),
    )?;
    let specs = compare::expand(&a.runs, &a.labels)?;
    // Opening reads headers only: every run is opened first, for one bar over all matrices.
    let engines: Vec<_> = specs
        .iter()
        .map(|s| a.opts.engine_for(&base, &s.path).map_err(|e| e.to_string()))
        .collect();
    let total: usize = engines.iter().flatten().map(|e| e.matrices().len()).sum();
    let pb = progress_bar(total);
    let mut offset = 0;
    let mut runs = Vec::new();
    for (spec, engine) in specs.into_iter().zip(&engines) {
        let results = engine.as_ref().map_err(Clone::clone).map(|engine| {
            pb.set_message(spec.label.clone());
            let scan = engine.scan(a.opts.jobs_for(engine, default_jobs()), &|done, _, _| {
                pb.set_position((offset + done) as u64)
            });
            offset += engine.matrices().len();
            print_warnings(&engine.cache.take_warnings());
            let n = engine.matrices().len();
            Results::new(engine, &scan, &UserState::default(), &rule, n)
        });
        runs.push(RunResult { spec, results });
    }
    pb.finish_and_clear();
    let reference = match &a.reference {
        Some(l) => runs
            .iter()
            .position(|r| &r.spec.label == l)
            .ok_or_else(|| Error::Usage(format!("--reference {l}: no run has that label")))?,
        None => runs.len() - 1,
    };
    // The reference's intruders through every run (decompositions from the cache).
    let tracks = compare::track(
        &engines.iter().map(|e| e.as_ref().ok()).collect::<Vec<_>>(),
        &runs
            .iter()
            .map(|r| r.results.as_ref().ok())
            .collect::<Vec<_>>(),
        reference,
        a.opts.keep.max(rule.k()),
    )?;
    let c = Comparison {
        rule,
        runs,
        reference,
        tracks,
    };
    let text = match a.format {
        ScanFormat::Table => c.table(),
        ScanFormat::Csv => c.csv(),
        ScanFormat::Json => serde_json::to_string_pretty(&c.json()).unwrap(),
    };
    outln!("{}", text.trim_end_matches('\n'));
    if c.failed() > 0 {
        for r in &c.runs {
            if let Err(e) = &r.results {
                eprintln!("{}: {e}", r.spec.label);
            }
        }
        eprintln!(
            "error: {} could not be scanned whole (see their rows)",
            lorascope::report::count(c.failed(), "run", "runs")
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
