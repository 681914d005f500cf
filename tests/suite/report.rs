//! Layer reports on the demo pair: golden Markdown / JSON / CSV (time injected), well-formed
//! inline SVG, user flags shown where they override the rule, and the explorer's export.

use std::path::Path;

use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::engine::{Engine, Options, Scan};
use lorascope::flags::UserState;
use lorascope::report::{self, model::wants_section, ReportFormat};
use lorascope::spectral::Rule;
use lorascope::tui::{build_app, export_job};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

const TIME: &str = "2026-01-01T00:00:00Z";

fn demo(dir: &Path) -> (Engine, Scan) {
    let p = lorascope::demo::ensure(dir).unwrap();
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    let e = Engine::new(inputs, Cache::disabled(), Options::default());
    let s = e.scan(2, &|_, _, _| {});
    (e, s)
}

fn build(e: &Engine, s: &Scan, user: &UserState, select: Option<&str>) -> report::Report {
    let re = select.map(|s| regex::Regex::new(s).unwrap());
    let pick = |n: &str, i: usize| wants_section(n, i, user, re.as_ref());
    let results = report::Results::new(e, s, user, &Rule::default(), e.matrices().len());
    report::build(e, results, &pick, TIME, e.keep())
}

/// JSON with every number rounded to 1e-6, so a golden file holds across machines (the output
/// itself keeps full precision).
fn rounded(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) if n.is_f64() => {
            serde_json::json!((n.as_f64().unwrap() * 1e6).round() / 1e6)
        }
        Value::Array(a) => Value::Array(a.into_iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, rounded(v))).collect()),
        v => v,
    }
}

#[test]
fn golden_markdown_json_csv_on_the_demo() {
    let d = tempfile::tempdir().unwrap();
    let (e, s) = demo(d.path());
    let mut user = UserState::default();
    // One override each way, so the goldens show them.
    user.flags
        .entry("model.layers.2.mlp.down_proj.weight".into())
        .or_default()
        .insert(2, false);
    user.flags
        .entry("model.layers.0.self_attn.q_proj.weight".into())
        .or_default()
        .insert(0, true);
    let r = build(
        &e,
        &s,
        &user,
        Some(r"layers\.(0\.self_attn\.q|2\.mlp\.down)_proj"),
    );
    assert_eq!(r.sections.len(), 2);
    assert_eq!(r.results.total_rule, 30);
    assert_eq!(
        r.results.total_intruders, 30,
        "one flag removes an intruder, the other adds one"
    );
    let path = d.path().to_string_lossy().into_owned();
    insta::with_settings!({filters => vec![(path.as_str(), "[DEMO]")]}, {
        insta::assert_snapshot!("report_md", ReportFormat::Md.render(&r));
        let json: serde_json::Value =
            serde_json::from_str(&ReportFormat::Json.render(&r)).unwrap();
        insta::assert_snapshot!(
            "report_json",
            serde_json::to_string_pretty(&rounded(json)).unwrap()
        );
        insta::assert_snapshot!("report_csv", ReportFormat::Csv.render(&r));
    });
    // The report's JSON is the scan's, plus when and which sections.
    let mut j = report::json::report(&r);
    let o = j.as_object_mut().unwrap();
    assert_eq!(o.remove("time").unwrap(), TIME);
    assert_eq!(
        o.remove("sections").unwrap(),
        serde_json::json!([
            "model.layers.0.self_attn.q_proj.weight",
            "model.layers.2.mlp.down_proj.weight"
        ])
    );
    let results = report::Results::new(&e, &s, &user, &Rule::default(), e.matrices().len());
    assert_eq!(j, report::json::results(&results));
    let m = j["matrices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "model.layers.2.mlp.down_proj.weight")
        .unwrap();
    assert_eq!(m["user_flags"], serde_json::json!({"2": false}));
    assert!(m["rule_intruders"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(2)));
    assert!(!m["intruders"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(2)));
    // CSV: one row per (matrix, top-k vector).
    assert_eq!(ReportFormat::Csv.render(&r).lines().count(), 1 + 2 * 10);
}

#[test]
fn html_is_self_contained_and_every_svg_is_well_formed() {
    let d = tempfile::tempdir().unwrap();
    let (e, s) = demo(d.path());
    let r = build(&e, &s, &UserState::default(), None);
    // Default selection: the matrices with intruders (blocks 2 and 3).
    assert_eq!(r.sections.len(), 12);
    assert!(r.sections.iter().all(|m| !m.intruders.is_empty()));
    let html = ReportFormat::Html.render(&r);
    for bad in ["<script", "http://", "https://", "@import", "url("] {
        let outside_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!outside_svg_ns.contains(bad), "external reference `{bad}`");
    }
    let mut n = 0;
    let mut rest = html.as_str();
    while let Some(a) = rest.find("<svg") {
        let b = rest[a..].find("</svg>").unwrap() + a + 6;
        let doc =
            roxmltree::Document::parse(&rest[a..b]).unwrap_or_else(|e| panic!("SVG {n}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        n += 1;
        rest = &rest[b..];
    }
    // Per layer, count vs ε, and a spectrum and a heatmap per section.
    assert_eq!(n, 2 + 2 * 12);
    // Heatmap cells: 30×30 per section, titled with their value.
    assert_eq!(html.matches("<title>i = 0, j = 0:").count(), 12);
}

#[test]
fn explorer_export_writes_exactly_the_marked_matrices_without_overwriting() {
    let d = tempfile::tempdir().unwrap();
    let (e, s) = demo(d.path());
    let e = std::sync::Arc::new(e);
    let mut app = build_app(&e, Rule::default(), UserState::default());
    for (i, (_, r)) in s.results.into_iter().enumerate() {
        app.on_done(i, r.map(std::sync::Arc::new));
    }
    let key = |c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE);
    app.on_key(key(' '));
    app.on_key(key('j'));
    app.on_key(key('j'));
    app.on_key(key(' '));
    let marked: Vec<String> = vec![app.rows[0].name.clone(), app.rows[2].name.clone()];
    app.on_key(key('x'));
    let cmds = app.on_key(key('j'));
    let lorascope::tui::app::Cmd::Export(format, names) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(*format, ReportFormat::Json);
    assert_eq!(names, &marked);
    let out = tempfile::tempdir().unwrap();
    let p1 = export_job(&e, &app, *format, names.clone(), out.path().to_path_buf())().unwrap();
    let p2 = export_job(&e, &app, *format, names.clone(), out.path().to_path_buf())().unwrap();
    assert_eq!(p1.file_name().unwrap(), "lorascope-report.json");
    assert_eq!(
        p2.file_name().unwrap(),
        "lorascope-report-2.json",
        "never overwrites"
    );
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p1).unwrap()).unwrap();
    let got: Vec<&str> = j["sections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert_eq!(got, marked);
    assert_eq!(
        j["total_intruders"], 30,
        "the summary still covers the whole model"
    );
}

#[test]
fn report_command_writes_stdout_or_new_files_and_reads_the_explorers_flags() {
    let d = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let state_home = d.path().join("state");
    let run = |args: &[&str], cwd: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
            .args(args)
            .current_dir(cwd)
            .env("XDG_STATE_HOME", &state_home)
            .output()
            .unwrap()
    };
    let cache = d.path().join("cache");
    let (base, lora) = (p.base.to_str().unwrap(), p.lora.to_str().unwrap());
    let c = cache.to_str().unwrap();
    // A flag saved by the explorer for this pair shows up in the report.
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    let mut user = UserState::default();
    let name = "model.layers.3.mlp.up_proj.weight";
    user.flags.entry(name.into()).or_default().insert(0, true);
    let path = lorascope::flags::state_path(&state_home.join("lorascope"), &inputs);
    let engine = lorascope::engine::Engine::new(inputs, Cache::disabled(), Default::default());
    let pair = engine
        .matrices()
        .into_iter()
        .find(|p| p.name == name)
        .unwrap();
    let weights = engine.analyze(pair).unwrap().weights;
    let mut file = lorascope::flags::StateFile::open(path);
    file.stored.record(&user, name, weights);
    file.save().unwrap();
    let o = run(
        &["report", base, lora, "--format", "json", "--cache-dir", c],
        d.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["flags_applied"], 1);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1 explorer flag applied"), "{err}");
    // `cache clear` does not touch them.
    assert!(run(&["cache", "clear", "--cache-dir", c], d.path())
        .status
        .success());
    let o = run(
        &["report", base, lora, "--format", "json", "--cache-dir", c],
        d.path(),
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["flags_applied"], 1);
    assert_eq!(j["total_rule_intruders"], 30);
    // HTML without -o goes to a new file in the working folder, never over an existing one.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("lorascope-report.html"), "mine").unwrap();
    let o = run(
        &["report", base, lora, "--format", "html", "--cache-dir", c],
        work.path(),
    );
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(work.path().join("lorascope-report.html")).unwrap(),
        "mine"
    );
    assert!(
        std::fs::read_to_string(work.path().join("lorascope-report-2.html"))
            .unwrap()
            .starts_with("<!DOCTYPE html>")
    );
    let o = run(
        &[
            "report",
            base,
            lora,
            "--format",
            "csv",
            "-o",
            "out.csv",
            "--cache-dir",
            c,
        ],
        work.path(),
    );
    assert!(o.status.success());
    assert!(std::fs::read_to_string(work.path().join("out.csv"))
        .unwrap()
        .starts_with("matrix,rows,cols,j,"));
}

#[test]
fn sections_show_the_delta_rank_a_scan_skipped_as_too_costly() {
    let d = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let inputs = Inputs::open(&p.base, &p.full, &Selection::default()).unwrap();
    // From 64 on the demo's full fine-tune counts as large: the scan skips ΔW's rank.
    let opts = Options {
        fast_min_dim: 64,
        ..Options::default()
    };
    let e = Engine::new(inputs, Cache::disabled(), opts);
    let s = e.scan(2, &|_, _, _| {});
    assert!(s.reports().all(|m| m.delta_effective_rank.is_none()));
    let json = report::json::results(&report::Results::new(
        &e,
        &s,
        &UserState::default(),
        &Rule::default(),
        e.matrices().len(),
    ));
    assert!(json["matrices"]
        .as_array()
        .unwrap()
        .iter()
        .all(
            |m| m["delta_effective_rank"].is_null() && m["delta_rel_norm"].as_f64().unwrap() > 0.0
        ));
    let r = build(&e, &s, &UserState::default(), Some("layers\\.0\\.mlp\\.up"));
    assert_eq!(r.sections.len(), 1);
    let rank = r.sections[0].delta_effective_rank.unwrap();
    let pair = e
        .matrices()
        .into_iter()
        .find(|p| p.name == r.sections[0].name);
    let want = e.delta_effective_rank(pair.unwrap()).unwrap();
    assert_eq!(rank, want);
    assert!(rank > 10.0, "{rank}");
    let md = ReportFormat::Md.render(&r);
    assert!(
        md.contains(&format!("effective rank of ΔW = {rank:.2}")),
        "{md}"
    );
}

#[test]
fn a_report_draws_heatmaps_from_as_many_vectors_as_the_analysis_kept() {
    let d = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let inputs = Inputs::open(&p.base, &p.lora, &Selection::default()).unwrap();
    // --keep 12; the explorer raised it to 40 (K), so an export is made with 40.
    let opts = Options {
        keep: 12,
        ..Options::default()
    };
    let e = Engine::new(inputs, Cache::disabled(), opts);
    let s = e.scan(2, &|_, _, _| {});
    let pick = |n: &str, _: usize| n == "model.layers.3.self_attn.q_proj.weight";
    let heat_of = |keep| {
        let results = report::Results::new(&e, &s, &UserState::default(), &Rule::default(), 24);
        let r = report::build(&e, results, &pick, TIME, keep);
        let h = r.sections[0].heat.clone().unwrap();
        (h.rows, h.cols)
    };
    assert_eq!(heat_of(12), (12, 12));
    assert_eq!(heat_of(40), (30, 30), "report::HEAT_K");
}
