use std::process::ExitCode;

use lorascope::checkpoint::{Format, Inputs, Model, Tuned, TunedSource};
use lorascope::Error;
use serde_json::json;

use super::{print_warnings, InspectArgs, TextOrJson};

pub fn run(a: InspectArgs) -> Result<ExitCode, Error> {
    let sel = a.select.selection()?;
    let Some(tuned_path) = &a.tuned else {
        let base = Model::open(&a.base)?;
        return print_model(&base, a.format);
    };
    let inputs = Inputs::open(&a.base, tuned_path, &sel)?;
    print_warnings(&inputs.warnings);
    match a.format {
        TextOrJson::Json => {
            let v = json!({
                "base": {"path": inputs.base.path, "format": inputs.base.format.as_str(),
                         "files": inputs.base.files.len(), "bytes": inputs.base.total_bytes()},
                "tuned": tuned_json(&inputs.tuned),
                "tensors": inputs.pairs,
                "only_tuned": inputs.only_tuned,
                "shape_mismatch": inputs.shape_mismatch,
                "selected": inputs.selected().count(),
            });
            outln!("{}", serde_json::to_string_pretty(&v).unwrap());
        }
        TextOrJson::Table => {
            outln!(
                "base:  {} ({}, {} file(s), {} tensors)",
                inputs.base.path.display(),
                inputs.base.format.as_str(),
                inputs.base.files.len(),
                inputs.base.tensors.len()
            );
            outln!(
                "tuned: {} ({})",
                inputs.tuned.path().display(),
                inputs.tuned.format().as_str()
            );
            if let Tuned::Adapter(ad) = &inputs.tuned {
                outln!(
                    "adapter: {} targets={}",
                    ad.summary(),
                    ad.config.target_modules
                );
            }
            let name_of = |n: &str| lorascope::report::shown_name(n, Some(100));
            let w = inputs
                .pairs
                .iter()
                .map(|p| name_of(&p.name).chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            outln!(
                "{:<w$}  {:<12} {:<5} {:<10} {:<8} {}",
                "name",
                "shape",
                "dtype",
                "tuned",
                "selected",
                "file"
            );
            for p in &inputs.pairs {
                let tuned = match &p.tuned {
                    None => "-",
                    Some(TunedSource::Tensor { .. }) => "paired",
                    Some(TunedSource::Lora { .. }) => "lora",
                    Some(TunedSource::Replaced { .. }) => "replaced",
                    Some(TunedSource::LoraBias { .. }) => "lora bias",
                    Some(TunedSource::Unchanged) => "unchanged",
                };
                outln!(
                    "{:<w$}  {:<12} {:<5} {:<10} {:<8} {}",
                    name_of(&p.name),
                    shape(&p.shape),
                    p.dtype,
                    tuned,
                    if p.selected { "yes" } else { "" },
                    p.file
                );
            }
            for t in &inputs.only_tuned {
                outln!("only in tuned: {}", name_of(t));
            }
            for (n, b, t) in &inputs.shape_mismatch {
                outln!(
                    "shape differs: {} base {} tuned {}",
                    name_of(n),
                    shape(b),
                    shape(t)
                );
            }
            outln!("{} matrices selected", inputs.selected().count());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn shape(s: &[usize]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×")
}

fn tuned_json(t: &Tuned) -> serde_json::Value {
    match t {
        Tuned::Model(m) => {
            json!({"path": m.path, "format": m.format.as_str(), "files": m.files.len()})
        }
        Tuned::Adapter(a) => json!({"path": a.dir, "format": Format::Adapter.as_str(),
            "config": a.config, "modules": a.modules.values().collect::<Vec<_>>()}),
    }
}

fn print_model(m: &Model, format: TextOrJson) -> Result<ExitCode, Error> {
    match format {
        TextOrJson::Json => {
            let tensors: Vec<_> = m.tensors.iter().map(|(n, l)| json!({
                "name": n, "shape": l.info.shape, "dtype": format!("{:?}", l.info.dtype),
                "file": m.files[l.file].path.file_name().map(|f| f.to_string_lossy().into_owned()),
            })).collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(&json!({
                "path": m.path, "format": m.format.as_str(), "files": m.files.len(),
                "bytes": m.total_bytes(), "tensors": tensors}))
                .unwrap()
            );
        }
        TextOrJson::Table => {
            outln!(
                "{} ({}, {} file(s), {} tensors)",
                m.path.display(),
                m.format.as_str(),
                m.files.len(),
                m.tensors.len()
            );
            let mut names: Vec<_> = m.tensors.keys().collect();
            names.sort_by(|a, b| lorascope::checkpoint::natural_cmp(a, b));
            for n in names {
                let l = &m.tensors[n];
                outln!(
                    "{}  {}  {:?}  {}",
                    lorascope::report::shown_name(n, None),
                    shape(&l.info.shape),
                    l.info.dtype,
                    m.files[l.file]
                        .path
                        .file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
