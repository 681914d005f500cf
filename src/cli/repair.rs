use std::collections::BTreeMap;
use std::process::ExitCode;

use lorascope::repair::{Chosen, Scope, Settings, Target};
use lorascope::report::count;
use lorascope::Error;

use super::scan::{default_jobs, progress_bar, run_scan, run_scan_with};
use super::{print_warnings, RepairArgs};

pub fn run(a: RepairArgs) -> Result<ExitCode, Error> {
    lorascope::repair::check_lambda(a.lambda, a.allow_amplify)?;
    let engine = a.analysis.engine()?;
    // Before any work: a bad output costs no scan.
    let target = Target::new(&engine.inputs, &a.output, a.format.map(Into::into))?;
    lorascope::repair::check_output(&engine.inputs, &target, a.force)?;
    let rule = a.analysis.rule()?;
    let scope: Scope = a.scope.into();
    // The flags file is read once; each matrix's flags apply to its weights.
    let stored = super::stored_flags(&engine, a.analysis.opts.ignore_flags);
    // The scan keeps the tuned vectors of what it will scale: without a cache they would
    // otherwise be computed again.
    let chosen = std::sync::Mutex::new(BTreeMap::new());
    let scan = run_scan_with(
        &engine,
        a.analysis.jobs_for(&engine, default_jobs()),
        &|r, tuned| {
            let user = stored.user_for([(r.name.as_str(), r.weights)]);
            let pick = lorascope::repair::pick(r, &user, &rule, scope);
            if !pick.is_empty() {
                let c = Chosen::new(r, &pick, tuned, a.lambda, &user);
                chosen.lock().unwrap().insert(r.name.clone(), c);
            }
        },
    )?;
    let chosen = chosen.into_inner().unwrap();
    print_warnings(&engine.cache.take_warnings());
    // Said as scan and report say it (the same file, read again).
    let user = super::apply_flags(&stored, &super::analysed(&scan));
    if scan.failed() > 0 {
        for (name, r) in &scan.results {
            if let Err(e) = r {
                eprintln!("{name}: {e}");
            }
        }
        eprintln!(
            "error: {} could not be analysed; nothing written",
            count(scan.failed(), "matrix", "matrices")
        );
        return Ok(ExitCode::from(3));
    }
    let pb = progress_bar(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes}  eta {eta}  writing",
        )
        .unwrap(),
    );
    let settings = Settings {
        lambda: a.lambda,
        scope,
        rule,
        max_shard: a.max_shard_size,
    };
    let (prov, notes) = lorascope::repair::write(
        &engine,
        &chosen,
        &settings,
        &target,
        a.force,
        &|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        },
    )?;
    pb.finish_and_clear();
    for n in notes {
        eprintln!("note: {n}");
    }
    for (name, vectors) in &prov.matrices {
        let v: Vec<String> = vectors
            .iter()
            .map(|s| format!("u{} σ {:.4} → {:.4}", s.j, s.sigma_before, s.sigma_after))
            .collect();
        outln!(
            "{}  {}",
            lorascope::report::shown_name(name, None),
            v.join(", ")
        );
    }
    eprintln!(
        "wrote {} ({}): {} scaled by λ = {} in {} of {}",
        a.output.display(),
        match (target.format, target.file) {
            (lorascope::repair::Format::Adapter, _) => "PEFT adapter",
            (_, true) => "merged weights",
            _ => "merged model",
        },
        count(prov.count(), "intruder", "intruders"),
        a.lambda,
        prov.matrices.len(),
        count(engine.matrices().len(), "matrix", "matrices")
    );
    if !a.verify {
        return Ok(ExitCode::SUCCESS);
    }
    // Before: the counts the repair acted on (flags applied), per matrix.
    let before = lorascope::repair::Verification::counts_before(&scan, &user, &rule);
    verify(&a, &engine.inputs.base.path, &before, rule)
}

/// Scans the output against the base and prints intruders before and after; exit 1 where a
/// matrix gained any (mitigation can move intruders elsewhere).
fn verify(
    a: &RepairArgs,
    base: &std::path::Path,
    before: &BTreeMap<String, usize>,
    rule: lorascope::spectral::Rule,
) -> Result<ExitCode, Error> {
    let mut args = a.analysis.clone();
    args.base = base.to_path_buf();
    args.tuned = Some(a.output.clone());
    let engine = args.engine()?;
    let scan = run_scan(&engine, args.jobs_for(&engine, default_jobs()))?;
    print_warnings(&engine.cache.take_warnings());
    let v = lorascope::repair::Verification::new(before, &scan, &rule);
    let name = |n: &str| lorascope::report::shown_name(n, Some(80));
    let w = v
        .shown()
        .map(|r| name(&r.name).chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!("");
    outln!(
        "{:<w$}  {:>6}  {:>5}   (k={}, ε={}, rule only after)",
        "matrix",
        "before",
        "after",
        rule.k(),
        rule.epsilon()
    );
    for r in v.shown() {
        let shown = name(&r.name);
        let b = r.before;
        match &r.after {
            Ok(n) => {
                let mark = if *n > b { "  more" } else { "" };
                outln!("{shown:<w$}  {b:>6}  {n:>5}{mark}");
            }
            Err(e) => outln!(
                "{shown:<w$}  {b:>6}  FAILED: {}",
                lorascope::report::shown_name(e, None)
            ),
        }
    }
    let (tb, ta) = v.totals();
    outln!("{:<w$}  {tb:>6}  {ta:>5}", "total");
    let quiet = v.rows.len() - v.shown().count();
    if quiet > 0 {
        outln!(
            "({} with none before or after not listed)",
            count(quiet, "matrix", "matrices")
        );
    }
    if v.failed() > 0 {
        eprintln!(
            "error: {} could not be checked in the output",
            count(v.failed(), "matrix", "matrices")
        );
        return Ok(ExitCode::from(3));
    }
    if v.worse() > 0 {
        eprintln!(
            "verify: {} more intruders after the repair than before",
            count(v.worse(), "matrix has", "matrices have")
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
