use std::collections::BTreeMap;
use std::process::ExitCode;

use lorascope::Error;

use super::scan::{default_jobs, progress_bar, run_scan_with};
use super::{print_warnings, RepairArgs};

pub fn run(a: RepairArgs) -> Result<ExitCode, Error> {
    if !(a.lambda.is_finite() && a.lambda >= 0.0) {
        return Err(Error::Usage(format!(
            "--lambda must be a number ≥ 0 (0 removes, 1 keeps), got {}",
            a.lambda
        )));
    }
    let engine = a.analysis.engine()?;
    // Before any work: a bad output path should not cost a scan.
    lorascope::repair::check_output(&engine.inputs, &a.output)?;
    let rule = a.analysis.rule()?;
    let (k, epsilon) = (rule.k(), rule.epsilon());
    // The flags file is read once; each matrix's flags apply to its weights.
    let stored = super::stored_flags(&engine, a.analysis.ignore_flags);
    // The scan keeps the tuned vectors of what it will scale: without a cache they would
    // otherwise be computed again.
    let chosen = std::sync::Mutex::new(BTreeMap::new());
    let scan = run_scan_with(
        &engine,
        a.analysis.jobs_for(&engine, default_jobs()),
        &|r, tuned| {
            let user = stored.user_for([(r.name.as_str(), r.weights)]);
            let intruders = user.intruders(&r.name, &r.max_cos(), &rule);
            let pick = lorascope::repair::Scope::from(a.scope).choose(&intruders);
            if !pick.is_empty() {
                chosen.lock().unwrap().insert(r.name.clone(), (pick, tuned));
            }
        },
    );
    let chosen = chosen.into_inner().unwrap();
    print_warnings(&engine.cache.take_warnings());
    // Said as scan and report say it (the same file, read again).
    super::apply_flags(&stored, &super::analysed(&scan));
    if scan.failed() > 0 {
        for (name, r) in &scan.results {
            if let Err(e) = r {
                eprintln!("{name}: {e}");
            }
        }
        eprintln!(
            "error: {} could not be analysed; nothing written",
            lorascope::report::count(scan.failed(), "matrix", "matrices")
        );
        return Ok(ExitCode::from(3));
    }
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    meta.insert(
        "lorascope_repair".into(),
        format!(
            "lorascope {} repair: lambda={} scope={} k={k} epsilon={epsilon}",
            env!("CARGO_PKG_VERSION"),
            a.lambda,
            match a.scope.into() {
                lorascope::repair::Scope::Top => "top",
                lorascope::repair::Scope::All => "all",
            }
        )
        .into(),
    );
    let pb = progress_bar(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes}  eta {eta}  writing",
        )
        .unwrap(),
    );
    let scaled = lorascope::repair::write_model(
        &engine,
        &chosen,
        a.lambda,
        meta,
        &a.output,
        &|done, total| {
            pb.set_length(total);
            pb.set_position(done);
        },
    )?;
    pb.finish_and_clear();
    for s in &scaled {
        let v: Vec<String> = s
            .vectors
            .iter()
            .map(|(j, sigma)| format!("u{j} σ {sigma:.4} → {:.4}", sigma * a.lambda))
            .collect();
        outln!("{}  {}", s.name, v.join(", "));
    }
    let n: usize = scaled.iter().map(|s| s.vectors.len()).sum();
    eprintln!(
        "wrote {}: {} scaled by λ = {} in {} of {}",
        a.output.display(),
        lorascope::report::count(n, "intruder", "intruders"),
        a.lambda,
        scaled.len(),
        lorascope::report::count(engine.matrices().len(), "matrix", "matrices")
    );
    Ok(ExitCode::SUCCESS)
}
