use std::path::Path;
use std::process::ExitCode;

use lorascope::report::{self, model::wants_section, ReportFormat};
use lorascope::Error;

use super::compare::{compare_runs, exit_code};
use super::scan::{default_jobs, run_scan};
use super::{print_warnings, ReportArgs};
use lorascope::compare::Show;

pub fn run(a: ReportArgs) -> Result<ExitCode, Error> {
    let select = a
        .sections
        .as_deref()
        .map(|s| {
            regex::Regex::new(s)
                .map_err(|e| Error::Usage(format!("invalid --select regex `{s}`: {e}")))
        })
        .transpose()?;
    if a.compare || !a.more_runs.is_empty() {
        return compare_report(&a, select.as_ref());
    }
    if !a.labels.is_empty() || a.reference.is_some() {
        return Err(Error::Usage(
            "--label and --reference name compared runs: add --compare".into(),
        ));
    }
    let engine = a.analysis.engine()?;
    let scan = run_scan(&engine, a.analysis.jobs_for(&engine, default_jobs()))?;
    let user = super::user_state(&engine, &scan, a.analysis.opts.ignore_flags);
    print_warnings(&engine.cache.take_warnings());
    let pick =
        |name: &str, intruders: usize| wants_section(name, intruders, &user, select.as_ref());
    let results = report::Results::new(
        &engine,
        &scan,
        &user,
        &a.analysis.rule()?,
        engine.matrices().len(),
    );
    let r = report::build(
        &engine,
        results,
        &pick,
        &report::now_rfc3339(),
        engine.keep(),
    );
    let format = ReportFormat::from(a.format);
    write(
        a.output.as_deref(),
        format,
        "lorascope-report",
        &format.render(&r),
    )?;
    Ok(if scan.failed() > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// The report written where asked: a file (atomically), stdout, or a new HTML file here.
fn write(output: Option<&Path>, format: ReportFormat, stem: &str, text: &str) -> Result<(), Error> {
    match output {
        Some(p) if p == Path::new("-") => outln!("{}", text.trim_end()),
        None if format != ReportFormat::Html => outln!("{}", text.trim_end()),
        None => {
            let dir = std::env::current_dir().map_err(|e| Error::Usage(e.to_string()))?;
            let p = report::write_new(&dir, stem, "html", text.as_bytes())
                .map_err(|e| Error::file(&dir, format!("cannot write the report: {e}")))?;
            eprintln!("wrote {}", p.display());
        }
        Some(p) => {
            report::write_output(p, text.as_bytes())
                .map_err(|e| Error::file(p, format!("cannot write: {e}")))?;
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// `report --compare BASE RUN…`: the runs side by side, from the comparison `compare` makes.
fn compare_report(a: &ReportArgs, select: Option<&regex::Regex>) -> Result<ExitCode, Error> {
    let Some(first) = &a.analysis.tuned else {
        return Err(Error::Usage(
            "report --compare takes BASE and the runs: BASE RUN [RUN…]".into(),
        ));
    };
    let runs: Vec<_> = std::iter::once(first.clone())
        .chain(a.more_runs.iter().cloned())
        .collect();
    let show = match select {
        Some(re) => Show::Matching(re),
        None => Show::Default,
    };
    let c = compare_runs(
        &a.analysis.base,
        &runs,
        &a.labels,
        a.reference.as_deref(),
        &a.analysis.opts,
        show,
    )?;
    let format = ReportFormat::from(a.format);
    let time = report::now_rfc3339();
    let text = match format {
        ReportFormat::Html => c.html(&time),
        ReportFormat::Md => c.markdown(&time),
        ReportFormat::Json => serde_json::to_string_pretty(&c.json()).unwrap() + "\n",
        ReportFormat::Csv => c.csv(),
    };
    write(a.output.as_deref(), format, "lorascope-compare", &text)?;
    Ok(exit_code(&c))
}
