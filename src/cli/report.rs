use std::path::Path;
use std::process::ExitCode;

use lorascope::report::{self, model::wants_section, ReportFormat};
use lorascope::Error;

use super::scan::{default_jobs, run_scan};
use super::{print_warnings, ReportArgs};

pub fn run(a: ReportArgs) -> Result<ExitCode, Error> {
    let select = a
        .sections
        .as_deref()
        .map(|s| {
            regex::Regex::new(s)
                .map_err(|e| Error::Usage(format!("invalid --select regex `{s}`: {e}")))
        })
        .transpose()?;
    let engine = a.analysis.engine()?;
    let scan = run_scan(&engine, a.analysis.jobs_for(&engine, default_jobs()));
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
    let text = format.render(&r);
    match a.output.as_deref() {
        Some(p) if p == Path::new("-") => outln!("{}", text.trim_end()),
        None if format != ReportFormat::Html => outln!("{}", text.trim_end()),
        None => {
            let dir = std::env::current_dir().map_err(|e| Error::Usage(e.to_string()))?;
            let p = report::write_new(&dir, "lorascope-report", "html", text.as_bytes())
                .map_err(|e| Error::file(&dir, format!("cannot write the report: {e}")))?;
            eprintln!("wrote {}", p.display());
        }
        Some(p) => {
            report::write_output(p, text.as_bytes())
                .map_err(|e| Error::file(p, format!("cannot write: {e}")))?;
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(if scan.failed() > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
