//! The binary as a user runs it: output formats, exit codes, pipes, failures, the demo.

use crate::common::*;

#[test]
fn scan_json_has_the_documented_fields_and_counts() {
    let r = lorascope(
        &[
            "scan",
            &fx("base.safetensors"),
            &fx("lora-r8"),
            "--format",
            "json",
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Piped stderr: no progress bar, nothing at all.
    assert_eq!(r.stderr, "");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["k"], 10);
    assert_eq!(v["epsilon"], 0.5);
    assert_eq!(v["total_intruders"], 1);
    assert_eq!(v["inputs"]["tuned"]["kind"], "adapter");
    assert_eq!(v["inputs"]["adapter"]["scaling"][0], 2.0);
    assert_eq!(v["inputs"]["adapter"]["r"], 8);
    assert_eq!(
        v["inputs"]["base"]["header_hashes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let m = &v["matrices"][0];
    assert_eq!(
        m["name"],
        "bert.encoder.layer.5.attention.output.dense.weight"
    );
    assert_eq!(m["shape"], serde_json::json!([384, 384]));
    assert_eq!(m["intruders"], serde_json::json!([0]));
    for key in ["max_cos", "best_base_index", "sigma_tuned", "sigma_ratio"] {
        assert_eq!(m[key].as_array().unwrap().len(), 10, "{key}");
    }
    assert!((m["max_cos"][0].as_f64().unwrap() - 0.18537).abs() < 1e-4);
    assert!(m["delta_rel_norm"].as_f64().unwrap() > 0.0);
    // The sweep comes from the same c_j: 1 intruder from ε=0.2 up in the slice.
    let sweep: Vec<u64> = v["sweep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["intruders"].as_u64().unwrap())
        .collect();
    assert_eq!(sweep[0], 0);
    assert_eq!(sweep[4], 1);
}

#[test]
fn table_csv_and_exit_codes() {
    let base = fx("base.safetensors");
    let lora = fx("lora-r8");
    let r = lorascope(&["scan", &base, &lora, "--no-cache", "--sweep"], &[]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout
            .contains("total intruders (k=10, ε=0.5): 1 in 2 matrices"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("bert.encoder.layer.5"));
    assert!(r.stdout.contains("ε=0.9"));
    let r = lorascope(
        &[
            "scan",
            &base,
            &lora,
            "--no-cache",
            "--format",
            "csv",
            "--k",
            "3",
        ],
        &[],
    );
    let lines: Vec<_> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].ends_with("c_0,c_1,c_2,rule_intruders,user_flags,untestable,pr_0,pr_1,pr_2"));
    // The LoRA run's intruder is spread over the base: PR_0 ≈ 99.6 (NumPy on the whole vectors).
    let pr0: f64 = lines[1].split(',').nth_back(2).unwrap().parse().unwrap();
    assert!((pr0 - 99.6).abs() < 0.5, "{}", lines[1]);
    let r = lorascope(
        &["scan", &base, &lora, "--no-cache", "--fail-above", "0"],
        &[],
    );
    assert!(r.stderr.contains("1 intruder exceed"), "{}", r.stderr);
    assert!(
        lines[1].starts_with("bert.encoder.layer.5.attention.output.dense.weight,384,384,1,0.18")
    );
    // --sweep in CSV: one count column per ε of the grid, equal to the table's counts.
    let r = lorascope(
        &[
            "scan",
            &base,
            &lora,
            "--no-cache",
            "--format",
            "csv",
            "--sweep",
        ],
        &[],
    );
    let lines: Vec<Vec<&str>> = r.stdout.lines().map(|l| l.split(',').collect()).collect();
    let header = &lines[0];
    assert_eq!(header.len(), 8 + 10 + 9 + 3 + 10, "{header:?}");
    assert_eq!(header[18], "intruders_eps_0.1");
    assert_eq!(header[26], "intruders_eps_0.9");
    for row in &lines[1..] {
        assert_eq!(row.len(), header.len(), "{row:?}");
    }
    let dense = lines.iter().find(|l| l[0].contains("layer.5")).unwrap();
    // c_0 = 0.185: an intruder from ε = 0.2 up, as in the JSON sweep.
    assert_eq!(
        &dense[18..27],
        ["0", "1", "1", "1", "1", "1", "1", "1", "1"]
    );
    // --fail-above: 1 intruder > 0 → exit 1; not above 1 → 0.
    assert_eq!(
        lorascope(
            &["scan", &base, &lora, "--no-cache", "--fail-above", "0"],
            &[]
        )
        .code,
        1
    );
    assert_eq!(
        lorascope(
            &["scan", &base, &lora, "--no-cache", "--fail-above", "1"],
            &[]
        )
        .code,
        0
    );
    // Bad options are usage errors.
    let r = lorascope(&["scan", &base, &lora, "--epsilon", "1.5"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("must be in (0, 1], got 1.5"),
        "{}",
        r.stderr
    );
    let r = lorascope(&["scan", &base, &lora, "--include", "nothing-matches"], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no matrices selected"));
}

#[test]
fn a_matrix_that_cannot_be_analysed_fails_alone_with_exit_3() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(9);
    let good = rng.vec(64, 1.0);
    let mut bad = rng.vec(64, 1.0);
    write_st(
        &d.path().join("base.safetensors"),
        &[
            f32_tensor("layers.0.a.weight", &[8, 8], &good),
            f32_tensor("layers.0.b.weight", &[8, 8], &bad),
        ],
    );
    bad[10] = f32::NAN;
    write_st(
        &d.path().join("tuned.safetensors"),
        &[
            f32_tensor("layers.0.a.weight", &[8, 8], &good),
            f32_tensor("layers.0.b.weight", &[8, 8], &bad),
        ],
    );
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let r = lorascope(
        &[
            "scan",
            &p("base.safetensors"),
            &p("tuned.safetensors"),
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("layers.0.b.weight  FAILED: non-finite weight"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 failed"));
    let r = lorascope(
        &[
            "scan",
            &p("base.safetensors"),
            &p("tuned.safetensors"),
            "--no-cache",
            "--format",
            "json",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["failed"], 1);
    assert_eq!(v["matrices"][0]["intruders"], serde_json::json!([]));
    assert!(v["matrices"][1]["error"].as_str().unwrap().contains("NaN"));
}

#[test]
fn demo_shows_intruders_in_the_lora_run_and_none_in_the_full_finetune() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy().into_owned();
    let r = lorascope(&["demo", "--cache-dir", &dir], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let totals: Vec<usize> = r
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("total intruders (k=10, ε=0.5): "))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(totals.len(), 2, "{}", r.stdout);
    assert!(totals[0] >= 10, "LoRA run: {totals:?}");
    assert_eq!(totals[1], 0, "full fine-tune");
    // Deterministic: a second run reuses the files and the cache and prints the same.
    let again = lorascope(&["demo", "--cache-dir", &dir], &[]);
    assert_eq!(again.stdout, r.stdout);
    let info = lorascope(&["cache", "info", "--cache-dir", &dir], &[]);
    assert!(info.stdout.contains("entries"), "{}", info.stdout);
    let clear = lorascope(&["cache", "clear", "--cache-dir", &dir], &[]);
    assert!(clear.stdout.contains("removed"));
    assert!(lorascope(&["cache", "info", "--cache-dir", &dir], &[])
        .stdout
        .contains(": 0 entries"));
}

#[test]
fn two_processes_sharing_one_cache_both_succeed_and_leave_it_whole() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_string_lossy().into_owned();
    let args = [
        "scan",
        &fx("base.safetensors"),
        &fx("full-ft.safetensors"),
        "--format",
        "json",
        "--cache-dir",
        &dir,
    ];
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
            .args(args)
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout, b.stdout);
    assert!(
        a.stderr.is_empty() && b.stderr.is_empty(),
        "no damaged entries seen"
    );
    // No temp files left behind, and a third run reads every entry without a warning.
    let names: Vec<String> = std::fs::read_dir(d.path().join("v3"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Six decompositions, four remembered content keys (two sides of two matrices), the base's
    // label.
    let count = |ext: &str| names.iter().filter(|n| n.ends_with(ext)).count();
    assert_eq!(
        (count(".lsd"), count(".lsr"), count(".lsb"), names.len()),
        (6, 4, 1, 11),
        "{names:?}"
    );
    let c = lorascope(&args, &[]);
    assert_eq!(c.stdout.as_bytes(), a.stdout);
    assert_eq!(c.stderr, "");
}

#[test]
fn a_bug_on_one_matrix_fails_that_matrix_and_the_scan_completes() {
    // A panic (here planted by the debug build's test hook) is contained: its matrix reports
    // an internal error, the other matrix its numbers, exit code 3; nothing bad is cached.
    let d = tempfile::tempdir().unwrap();
    let cache = d.path().to_string_lossy().into_owned();
    let query = "bert.encoder.layer.5.attention.self.query.weight";
    let args = [
        "scan",
        &fx("base.safetensors"),
        &fx("lora-r8"),
        "--format",
        "json",
        "--cache-dir",
        &cache,
    ];
    let r = lorascope(&args, &[("LORASCOPE_TEST_PANIC", query)]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["failed"], 1);
    let ms = v["matrices"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    let bad = ms.iter().find(|m| m["name"] == query).unwrap();
    let err = bad["error"].as_str().unwrap();
    assert!(
        err.starts_with("internal error (a bug in lorascope"),
        "{err}"
    );
    let good = ms.iter().find(|m| m["name"] != query).unwrap();
    assert_eq!(good["max_cos"].as_array().unwrap().len(), 10);
    // Without the bug the same cache gives the full answer: the documented single intruder.
    let again = lorascope(&args, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let v: serde_json::Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(
        (v["failed"].as_u64(), v["total_intruders"].as_u64()),
        (Some(0), Some(1))
    );
}

fn total_intruders(base: &str, tuned: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["scan", base, tuned, "--format", "json", "--no-cache"];
    args.extend(extra);
    let r = lorascope(&args, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    v["total_intruders"].as_u64().unwrap()
}

fn file_bytes(p: &str) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn repair_scales_the_intruder_of_a_real_adapter_and_writes_the_merged_model() {
    use lorascope::checkpoint::model::Model;
    let d = tempfile::tempdir().unwrap();
    let (base, lora) = (fx("base.safetensors"), fx("lora-r8"));
    let adapter = format!("{lora}/adapter_model.safetensors");
    let before = (file_bytes(&base), file_bytes(&adapter));
    assert_eq!(total_intruders(&base, &lora, &[]), 1);

    // λ = 0 removes the one intruder (in layer 5's attention output).
    let out = d.path().join("removed.safetensors");
    let o = out.to_string_lossy().into_owned();
    let r = lorascope(
        &[
            "repair",
            &base,
            &lora,
            "--lambda",
            "0",
            "-o",
            &o,
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("layer.5.attention.output.dense.weight  u0 σ"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("1 intruder scaled by λ = 0 in 1 of 2 matrices"),
        "{}",
        r.stderr
    );
    assert_eq!(total_intruders(&base, &o, &[]), 0);
    // The inputs are untouched and no temporary file is left beside the output.
    assert_eq!((file_bytes(&base), file_bytes(&adapter)), before);
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names: Vec<String> = names
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["removed.repair.json", "removed.safetensors"]);

    // λ = 1 writes the merged model itself: PEFT's merged twin to f32 rounding, every tensor
    // of the base with its dtype and shape, the adapter's classifier (modules_to_save) in it.
    let same = d.path().join("same.safetensors");
    let s = same.to_string_lossy().into_owned();
    let r = lorascope(
        &[
            "repair",
            &base,
            &lora,
            "--lambda",
            "1",
            "-o",
            &s,
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = Model::open(&same).unwrap();
    let merged = Model::open(std::path::Path::new(&fx("lora-r8-merged.safetensors"))).unwrap();
    let b = Model::open(std::path::Path::new(&base)).unwrap();
    assert_eq!(
        got.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    for (name, loc) in &got.tensors {
        assert_eq!(loc.info.dtype, b.tensors[name].info.dtype, "{name}");
        assert_eq!(loc.info.shape, b.tensors[name].info.shape, "{name}");
    }
    for name in merged.tensors.keys() {
        let (x, y) = (
            got.decode::<f64>(name).unwrap(),
            merged.decode::<f64>(name).unwrap(),
        );
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{name}: {worst}");
    }
    // The tensors the adapter replaces (modules_to_save) are its own, byte for byte.
    let ad = lorascope::checkpoint::st::StFile::open(std::path::Path::new(&adapter)).unwrap();
    for name in ["classifier.weight", "classifier.bias"] {
        let stored = &ad.tensors[&format!("base_model.model.{name}")];
        assert_eq!(
            got.bytes(name),
            ad.with_bytes(stored, <[u8]>::to_vec).ok(),
            "{name}"
        );
        assert_ne!(got.bytes(name), b.bytes(name), "{name}");
    }
    assert_eq!(total_intruders(&base, &s, &[]), 1);
}

#[test]
fn repair_of_a_full_finetune_changes_only_the_matrices_with_intruders() {
    use lorascope::checkpoint::model::Model;
    use lorascope::spectral::{self, Side};
    let d = tempfile::tempdir().unwrap();
    let (base, full) = (fx("base.safetensors"), fx("full-ft.safetensors"));
    // The full fine-tune keeps its vectors (c_j ≥ 0.99): at ε = 0.999 four of them count.
    let rule = ["--epsilon", "0.999"];
    assert_eq!(total_intruders(&base, &full, &rule), 4);
    let out = d.path().join("half.safetensors");
    let o = out.to_string_lossy().into_owned();
    let mut args = vec![
        "repair",
        &base,
        &full,
        "--lambda",
        "0.5",
        "--scope",
        "all",
        "-o",
        &o,
        "--no-cache",
    ];
    args.extend(rule);
    let r = lorascope(&args, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // "name  u6 σ 1.2345 → 0.6172, u7 σ …": which vectors of which matrix were scaled.
    let scaled = scaled_vectors(&r.stdout);
    assert_eq!(
        scaled.iter().map(|(_, j)| j.len()).sum::<usize>(),
        4,
        "{}",
        r.stdout
    );
    let (got, src) = (
        Model::open(&out).unwrap(),
        Model::open(std::path::Path::new(&full)).unwrap(),
    );
    assert_eq!(got.tensors.len(), src.tensors.len());
    for name in src.tensors.keys() {
        let js = scaled.iter().find(|(n, _)| n == name).map(|(_, j)| j);
        assert_eq!(got.bytes(name) != src.bytes(name), js.is_some(), "{name}");
        let Some(js) = js else { continue };
        // Exactly those singular values halved, the others kept (to the f32 the file holds).
        let sv = |m: &Model| {
            spectral::decompose(
                &m.matrix::<f64>(name).unwrap(),
                Side::Left,
                0,
                faer::Par::Seq,
            )
            .unwrap()
            .sigma
        };
        let (before, after) = (sv(&src), sv(&got));
        let mut want = before.clone();
        js.iter().for_each(|&j| want[j] *= 0.5);
        want.sort_by(|a, b| b.total_cmp(a));
        for (a, w) in after.iter().zip(&want) {
            assert!((a - w).abs() < 1e-5 * before[0], "{name}: {a} vs {w}");
        }
    }

    // Tuned tensors named differently from the base's (paired by suffix) are scaled all the same,
    // and keep their own names.
    let renamed = d.path().join("renamed.safetensors");
    let ts: Vec<T> = src
        .tensors
        .iter()
        .map(|(n, loc)| T {
            name: n.trim_start_matches("bert.").to_string(),
            dtype: match loc.info.dtype {
                safetensors::Dtype::F32 => "F32",
                d => panic!("fixture dtype {d:?}"),
            },
            shape: loc.info.shape.clone(),
            bytes: src.bytes(n).unwrap(),
        })
        .collect();
    write_st(&renamed, &ts);
    let o2 = d.path().join("renamed-half.safetensors");
    let (rn, o2s) = (
        renamed.to_string_lossy().into_owned(),
        o2.to_string_lossy().into_owned(),
    );
    let mut args = vec![
        "repair",
        &base,
        &rn,
        "--lambda",
        "0.5",
        "--scope",
        "all",
        "-o",
        &o2s,
        "--no-cache",
    ];
    args.extend(rule);
    let r2 = lorascope(&args, &[]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert_eq!(scaled_vectors(&r2.stdout), scaled);
    let got2 = Model::open(&o2).unwrap();
    for (n, loc) in &got.tensors {
        let short = n.trim_start_matches("bert.");
        assert_eq!(got2.tensors[short].info.shape, loc.info.shape);
        assert_eq!(got2.bytes(short), got.bytes(n), "{n}");
    }
}

/// (matrix, tuned vector indices) from `repair`'s stdout lines "name  u6 σ 1.2345 → 0.6172, …".
fn scaled_vectors(stdout: &str) -> Vec<(String, Vec<usize>)> {
    stdout
        .lines()
        .map(|l| {
            let (name, rest) = l.split_once("  ").unwrap();
            let js = rest
                .split(", ")
                .map(|v| v.split_whitespace().next().unwrap()[1..].parse().unwrap())
                .collect();
            (name.to_string(), js)
        })
        .collect()
}

#[test]
fn repair_never_writes_into_an_input_and_checks_lambda() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("lora");
    std::fs::create_dir(&dir).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(format!("{}/{f}", fx("lora-r8")), dir.join(f)).unwrap();
    }
    let base = d.path().join("base.safetensors");
    std::fs::copy(fx("base.safetensors"), &base).unwrap();
    let (b, l) = (
        base.to_string_lossy().into_owned(),
        dir.to_string_lossy().into_owned(),
    );
    let before = file_bytes(&b);
    let inside = dir
        .join("repaired.safetensors")
        .to_string_lossy()
        .into_owned();
    let elsewhere = d
        .path()
        .join("out.safetensors")
        .to_string_lossy()
        .into_owned();
    let missing = d
        .path()
        .join("no/such/dir/out.safetensors")
        .to_string_lossy()
        .into_owned();
    let existing = d.path().join("mine.safetensors");
    std::fs::write(&existing, "mine").unwrap();
    let existing = existing.to_string_lossy().into_owned();
    let pickle = d.path().join("out.bin").to_string_lossy().into_owned();
    let holder = d.path().to_string_lossy().into_owned();
    for (out, lambda, says) in [
        (&b, "0.5", "lorascope does not write into checkpoints"),
        (&inside, "0.5", "lorascope does not write into checkpoints"),
        (&holder, "0.5", "replacing it would delete a checkpoint"),
        (&missing, "0.5", "its folder does not exist"),
        (&existing, "0.5", "exists; --force replaces it"),
        (&pickle, "0.5", "lorascope writes safetensors, not .bin"),
        (&elsewhere, "-1", "--lambda must be a number in [0, 1]"),
        (&elsewhere, "NaN", "--lambda must be a number in [0, 1]"),
        (&elsewhere, "1.5", "would amplify the intruders"),
        (&elsewhere, "1e300", "would amplify the intruders"),
    ] {
        let r = lorascope(
            &[
                "repair",
                &b,
                &l,
                "--lambda",
                lambda,
                "-o",
                out,
                "--no-cache",
            ],
            &[],
        );
        assert_eq!(r.code, 2, "{out} {lambda}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    }
    assert_eq!(file_bytes(&b), before);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    assert!(!std::path::Path::new(&elsewhere).exists());
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "mine");
    // --allow-amplify takes λ > 1 as meant; --force replaces, whole.
    let r = lorascope(
        &[
            "repair",
            &b,
            &l,
            "--lambda",
            "2",
            "--allow-amplify",
            "--force",
            "-o",
            &existing,
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let open =
        |p: &str| lorascope::checkpoint::model::Model::open(std::path::Path::new(p)).unwrap();
    assert_eq!(
        open(&existing).tensors.keys().collect::<Vec<_>>(),
        open(&b).tensors.keys().collect::<Vec<_>>()
    );
    // λ = 1e300 overflows f32: refused before anything is written, even when allowed.
    let huge = d.path().join("huge.safetensors");
    let r = lorascope(
        &[
            "repair",
            &b,
            &l,
            "--lambda",
            "1e300",
            "--allow-amplify",
            "-o",
            huge.to_str().unwrap(),
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("beyond what F32 holds"), "{}", r.stderr);
    assert!(!huge.exists());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".lorascope-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A copy of the r=8 adapter with every lora_B negated: the same header, other weights (as two
/// checkpoints of one training run).
fn same_header_adapter(dir: &std::path::Path) -> std::path::PathBuf {
    let src = fixtures().join("minilm/lora-r8");
    let out = dir.join("lora-r8-other");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(
        src.join("adapter_config.json"),
        out.join("adapter_config.json"),
    )
    .unwrap();
    let mut bytes = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for (name, t) in header.as_object().unwrap() {
        if !name.contains("lora_B") {
            continue;
        }
        assert_eq!(t["dtype"], "F32");
        let (a, b) = (
            t["data_offsets"][0].as_u64().unwrap(),
            t["data_offsets"][1].as_u64().unwrap(),
        );
        for i in (a..b).step_by(4) {
            bytes[8 + n + i as usize + 3] ^= 0x80;
        }
    }
    std::fs::write(out.join("adapter_model.safetensors"), bytes).unwrap();
    out
}

#[test]
fn explorer_flags_follow_the_weights_not_the_headers_and_scan_says_so() {
    use lorascope::checkpoint::{Inputs, Selection};
    use lorascope::engine::{Engine, Options};
    let d = tempfile::tempdir().unwrap();
    let state_home = d.path().join("state");
    let base = fx("base.safetensors");
    let a = fx("lora-r8");
    let b = same_header_adapter(d.path());
    // As the explorer does: flag j = 0 of the matrix with the intruder as "not an intruder".
    let dense = "bert.encoder.layer.5.attention.output.dense.weight";
    let inputs = Inputs::open(base.as_ref(), a.as_ref(), &Selection::default()).unwrap();
    let path = lorascope::flags::state_path(&state_home.join("lorascope"), &inputs);
    let engine = Engine::new(
        inputs,
        lorascope::cache::Cache::disabled(),
        Options::default(),
    );
    let pair = engine
        .matrices()
        .into_iter()
        .find(|p| p.name == dense)
        .unwrap();
    let r = engine.analyze(pair).unwrap();
    let mut user = lorascope::flags::UserState::default();
    user.flags.insert(dense.into(), [(0, false)].into());
    let mut file = lorascope::flags::StateFile::open(path.clone());
    file.stored.record(&user, dense, r.weights);
    file.save().unwrap();
    // The two adapters share the file (same headers).
    let inputs_b = Inputs::open(base.as_ref(), b.as_ref(), &Selection::default()).unwrap();
    assert_eq!(
        path,
        lorascope::flags::state_path(&state_home.join("lorascope"), &inputs_b)
    );

    let env = [("XDG_STATE_HOME", state_home.to_str().unwrap())];
    let scan = |tuned: &str, extra: &[&str]| {
        let mut args = vec![
            "scan",
            base.as_str(),
            tuned,
            "--no-cache",
            "--format",
            "json",
        ];
        args.extend(extra);
        let r = lorascope(&args, &env);
        assert_eq!(r.code, 0, "{}", r.stderr);
        (
            serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap(),
            r.stderr,
        )
    };
    // Run A: the flag applies, and says so.
    let (v, err) = scan(&a, &[]);
    assert_eq!(v["total_rule_intruders"], 1);
    assert_eq!(v["total_intruders"], 0);
    assert_eq!(v["flags_applied"], 1);
    let m = v["matrices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == dense)
        .unwrap();
    assert_eq!(m["user_flags"], serde_json::json!({"0": false}));
    assert_eq!(m["rule_intruders"], serde_json::json!([0]));
    assert_eq!(m["intruders"], serde_json::json!([]));
    assert!(
        err.contains("1 explorer flag applied; --ignore-flags"),
        "{err}"
    );
    // --ignore-flags: the rule alone, silently.
    let (v, err) = scan(&a, &["--ignore-flags"]);
    assert_eq!(
        (v["total_intruders"].as_u64(), v["flags_applied"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(err, "");
    // Run B, same headers, other weights: not applied, and reported.
    let (v, err) = scan(b.to_str().unwrap(), &[]);
    assert_eq!(v["flags_applied"], 0);
    assert_eq!(v["total_intruders"], v["total_rule_intruders"]);
    assert!(
        err.contains("1 flag stored for these matrices belong to other weights"),
        "{err}"
    );
    // The table marks the overridden count and the CSV lists the flag.
    let r = lorascope(&["scan", &base, &a, "--no-cache"], &env);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with(dense) && l.contains(" 0*")),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("the rule alone finds 1"), "{}", r.stdout);
    let r = lorascope(&["scan", &base, &a, "--no-cache", "--format", "csv"], &env);
    let row = r.stdout.lines().find(|l| l.starts_with(dense)).unwrap();
    // rule_intruders, user_flags, untestable, then the ten participation numbers.
    let fields: Vec<&str> = row.split(',').collect();
    assert_eq!(
        fields[fields.len() - 13..fields.len() - 10],
        ["1", "0:false", "0"],
        "{row}"
    );
    // Repair follows the same flags: on A nothing is left to scale, on B its intruder is.
    let out = d.path().join("out.safetensors");
    let r = lorascope(
        &[
            "repair",
            &base,
            &a,
            "--no-cache",
            "--lambda",
            "0",
            "-o",
            out.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("0 intruders scaled"), "{}", r.stderr);
}

#[test]
fn help_shows_how_to_open_the_explorer() {
    let r = lorascope(&["--help"], &[]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("Usage: lorascope BASE TUNED [OPTIONS]"),
        "{}",
        r.stdout
    );
    for cmd in ["scan", "report", "repair", "demo", "tui"] {
        assert!(
            r.stdout.contains(&format!("  {cmd} ")),
            "{cmd}: {}",
            r.stdout
        );
    }
}

/// docs/scan.schema.json, the published shape of scan and report JSON.
fn scan_schema() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/scan.schema.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

#[test]
fn scan_json_follows_its_published_schema() {
    let schema = scan_schema();
    // An adapter, a full fine-tune, and a scan with a failed matrix (its entry has `error`).
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("nan.safetensors");
    let mut bytes = std::fs::read(fx("full-ft.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let at = bytes.len() - 4 * 1000; // inside the last tensors' data
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(at > 8 + n);
    std::fs::write(&bad, bytes).unwrap();
    let mut lora_json = None;
    for tuned in [
        fx("lora-r8"),
        fx("full-ft.safetensors"),
        bad.to_string_lossy().into_owned(),
    ] {
        let r = lorascope(
            &[
                "scan",
                &fx("base.safetensors"),
                &tuned,
                "--format",
                "json",
                "--no-cache",
            ],
            &[],
        );
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let errors = schema_errors(&schema, &v);
        assert!(errors.is_empty(), "{tuned}: {errors:#?}");
        if tuned.ends_with("nan.safetensors") {
            assert_eq!((r.code, v["failed"].as_u64()), (3, Some(1)), "{}", r.stdout);
        }
        if tuned.ends_with("lora-r8") {
            lora_json = Some(v);
        }
    }
    // A report's JSON is the same document, with when and which sections.
    let r = lorascope(
        &[
            "report",
            &fx("base.safetensors"),
            &fx("lora-r8"),
            "--format",
            "json",
            "--no-cache",
        ],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let errors = schema_errors(&schema, &v);
    assert!(errors.is_empty() && v["time"].is_string(), "{errors:#?}");
    assert_eq!(v["matrices"], lora_json.as_ref().unwrap()["matrices"]);
    // The validator is not a yes-machine: a wrong type, a missing key and an unknown key fail.
    let mut v = lora_json.expect("the adapter's scan");
    v["k"] = serde_json::json!("ten");
    v.as_object_mut().unwrap().remove("sweep");
    v["surprise"] = serde_json::json!(1);
    let errors = schema_errors(&schema, &v);
    assert_eq!(errors.len(), 3, "{errors:#?}");
}

/// RFC 4180 records (quoted fields may hold commas, doubled quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field) = (Vec::new(), Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (_, c) => field.push(c),
        }
    }
    rows
}

#[test]
fn csv_quotes_names_with_commas_quotes_and_line_breaks() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    let name = "model.layers.0.q,\"x\"\nproj.weight";
    let w0 = rng.vec(16 * 16, 0.25);
    let w: Vec<f32> = w0.iter().map(|x| x * 1.5).collect();
    let (base, tuned) = (
        d.path().join("b.safetensors"),
        d.path().join("t.safetensors"),
    );
    write_st(&base, &[f32_tensor(name, &[16, 16], &w0)]);
    write_st(&tuned, &[f32_tensor(name, &[16, 16], &w)]);
    for args in [&["--sweep"][..], &["--k", "3"][..]] {
        let mut all = vec![
            "scan",
            base.to_str().unwrap(),
            tuned.to_str().unwrap(),
            "--format",
            "csv",
            "--no-cache",
        ];
        all.extend(args);
        let r = lorascope(&all, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let rows = parse_csv(&r.stdout);
        assert_eq!(rows.len(), 2, "{}", r.stdout);
        assert_eq!(rows[1][0], name);
        assert_eq!(rows[1].len(), rows[0].len(), "{:?}", rows);
    }
}

/// Names are data: a 70,000-character name or one with terminal escapes is shown escaped and
/// shortened, never panics the table or drives the terminal; `--jobs` is checked and bounded.
#[test]
fn hostile_names_and_job_counts_are_handled() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let long = format!("model.layers.0.{}.weight", "x".repeat(70_000));
    let evil = "model.layers.1.\x1b]0;pwned\x07\x1b[2J.weight";
    let w0 = rng.vec(16 * 16, 0.25);
    let w: Vec<f32> = w0.iter().map(|x| x * 1.5).collect();
    let (base, tuned) = (
        d.path().join("b.safetensors"),
        d.path().join("t.safetensors"),
    );
    let both = |v: &[f32]| {
        vec![
            f32_tensor(&long, &[16, 16], v),
            f32_tensor(evil, &[16, 16], v),
        ]
    };
    write_st(&base, &both(&w0));
    write_st(&tuned, &both(&w));
    let (b, t) = (base.to_str().unwrap(), tuned.to_str().unwrap());
    for args in [vec!["scan", b, t, "--no-cache"], vec!["inspect", b, t]] {
        let r = lorascope(&args, &[]);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(
            !r.stdout.contains('\x1b') && !r.stdout.contains('\x07'),
            "{args:?}"
        );
        assert!(r.stdout.contains("\\u{1b}]0;pwned"), "{}", r.stdout);
        assert!(
            r.stdout.lines().all(|l| l.chars().count() < 300),
            "{args:?}: a line too long"
        );
    }
    // --jobs 0 is refused; 5000 runs as one per matrix, and says so.
    let r = lorascope(&["scan", b, t, "--no-cache", "--jobs", "0"], &[]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--jobs must be at least 1"),
        "{}",
        r.stderr
    );
    let r = lorascope(&["scan", b, t, "--no-cache", "--jobs", "5000"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("--jobs 5000 lowered to 2"),
        "{}",
        r.stderr
    );
}

/// repair writes a regular file only: a symlink into an input is refused by where it points,
/// and a device (as root, `/dev/null` would have been replaced) is refused outright.
#[test]
fn repair_refuses_devices_and_links_into_its_inputs() {
    let d = tempfile::tempdir().unwrap();
    let adapter = d.path().join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(fixtures().join("minilm/lora-r8").join(f), adapter.join(f)).unwrap();
    }
    let link = d.path().join("out.safetensors");
    std::os::unix::fs::symlink(adapter.join("merged.safetensors"), &link).unwrap();
    let base = fx("base.safetensors");
    let run = |out: &str| {
        lorascope(
            &[
                "repair",
                &base,
                adapter.to_str().unwrap(),
                "--lambda",
                "0",
                "--no-cache",
                "-o",
                out,
            ],
            &[],
        )
    };
    let r = run(link.to_str().unwrap());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is inside the input"), "{}", r.stderr);
    assert!(!adapter.join("merged.safetensors").exists());
    let r = run("/dev/null");
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is not a regular file"), "{}", r.stderr);
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn an_adapter_alone_finds_its_base_in_the_hugging_face_cache_offline() {
    let d = tempfile::tempdir().unwrap();
    let lora = fx("lora-r8");
    // The fixture adapter names sentence-transformers/all-MiniLM-L6-v2: a cache as
    // huggingface_hub lays it out, the snapshot's file a link into blobs.
    let repo = d
        .path()
        .join("hub/models--sentence-transformers--all-MiniLM-L6-v2");
    std::fs::create_dir_all(repo.join("snapshots/c0ffee")).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "c0ffee").unwrap();
    std::fs::copy(fx("base.safetensors"), repo.join("blobs/1234")).unwrap();
    std::os::unix::fs::symlink(
        "../../blobs/1234",
        repo.join("snapshots/c0ffee/model.safetensors"),
    )
    .unwrap();
    let hub = d.path().join("hub");
    let env = [("HF_HUB_CACHE", hub.to_str().unwrap())];
    let total = |r: &Run| -> u64 {
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        v["total_intruders"].as_u64().unwrap()
    };
    let alone = lorascope(&["scan", &lora, "--format", "json", "--no-cache"], &env);
    assert_eq!(alone.code, 0, "{}", alone.stderr);
    let explicit = lorascope(
        &[
            "scan",
            &fx("base.safetensors"),
            &lora,
            "--format",
            "json",
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(total(&alone), total(&explicit));
    // The hub id works as BASE too.
    let by_id = lorascope(
        &[
            "scan",
            "sentence-transformers/all-MiniLM-L6-v2",
            &lora,
            "--format",
            "json",
            "--no-cache",
        ],
        &env,
    );
    assert_eq!(by_id.code, 0, "{}", by_id.stderr);
    assert_eq!(total(&by_id), total(&explicit));
    // Not in the cache: one line saying where it looked and what to do.
    let empty = d.path().join("empty");
    let r = lorascope(
        &["scan", &lora, "--no-cache"],
        &[("HF_HUB_CACHE", empty.to_str().unwrap())],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(empty.to_str().unwrap()) && r.stderr.contains("hf download"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    // One argument that is not an adapter.
    let r = lorascope(&["scan", &fx("base.safetensors")], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("must be a PEFT adapter folder"),
        "{}",
        r.stderr
    );
}

#[test]
fn compare_counts_each_run_as_its_own_scan_does_and_expands_trainer_folders() {
    let d = tempfile::tempdir().unwrap();
    let base = fx("base.safetensors");
    let runs = [
        fx("full-ft.safetensors"),
        fx("lora-r8"),
        fx("lora-r8-merged.safetensors"),
    ];
    let json = |args: &[&str]| -> serde_json::Value {
        let r = lorascope(args, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let mut args = vec!["compare", base.as_str()];
    args.extend(runs.iter().map(|s| s.as_str()));
    args.extend([
        "--format",
        "json",
        "--no-cache",
        "--label",
        "full",
        "--label",
        "lora",
    ]);
    let c = json(&args);
    assert_eq!(c["schema"], 1);
    let labels: Vec<&str> = c["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["full", "lora", "lora-r8-merged.safetensors"]);
    // Each run's counts at every ε are its own scan's.
    for (run, tuned) in c["runs"].as_array().unwrap().iter().zip(&runs) {
        let s = json(&["scan", &base, tuned, "--format", "json", "--no-cache"]);
        assert_eq!(run["sweep"], s["sweep"], "{tuned}");
        assert_eq!(run["total_intruders"], s["total_rule_intruders"], "{tuned}");
        assert_eq!(run["layers"], s["per_layer"], "{tuned}");
    }
    // The merged twin counts as the adapter does.
    assert_eq!(c["runs"][1]["sweep"], c["runs"][2]["sweep"]);
    // A Trainer folder: its checkpoints in step order; a broken run fails alone (exit 3).
    let trainer = d.path().join("run");
    for step in ["1000", "200"] {
        let ck = trainer.join(format!("checkpoint-{step}"));
        std::fs::create_dir_all(&ck).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(fixtures().join("minilm/lora-r8").join(f), ck.join(f)).unwrap();
        }
    }
    std::fs::write(
        trainer.join("checkpoint-200/trainer_state.json"),
        r#"{"global_step": 200, "epoch": 1.0, "log_history": [{"step": 200, "eval_accuracy": 0.75}]}"#,
    )
    .unwrap();
    let broken = d.path().join("broken.safetensors");
    let bytes = std::fs::read(fx("full-ft.safetensors")).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let r = lorascope(
        &[
            "compare",
            &base,
            trainer.to_str().unwrap(),
            broken.to_str().unwrap(),
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("run")
            && lines[0].contains("step")
            && lines[0].contains("eval_accuracy"),
        "{}",
        r.stdout
    );
    assert!(
        lines[1].starts_with("run/checkpoint-200") && lines[1].contains("0.7500"),
        "{}",
        r.stdout
    );
    assert!(lines[2].starts_with("run/checkpoint-1000"), "{}", r.stdout);
    assert!(
        lines[3].starts_with("broken.safetensors") && lines[3].contains("FAILED"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains("broken.safetensors") && r.stderr.contains("1 run could not"),
        "{}",
        r.stderr
    );
}

/// A base and a Trainer folder `run/` of four checkpoints of one matrix, in which a planted
/// direction x·yᵀ is absent at step 1 and grows from step 2 on.
fn planted_checkpoints(d: &std::path::Path) -> &'static str {
    let mut rng = Rng(17);
    let (m, n) = (64, 48);
    let name = "model.layers.0.self_attn.q_proj.weight";
    let w0 = rng.vec(m * n, 0.3);
    write_st(
        &d.join("base.safetensors"),
        &[f32_tensor(name, &[m, n], &w0)],
    );
    let unit = |rng: &mut Rng, k: usize| {
        let v = rng.vec(k, 1.0);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / norm).collect::<Vec<f32>>()
    };
    let (x, y) = (unit(&mut rng, m), unit(&mut rng, n));
    for (step, s) in [(1, 0.0f32), (2, 6.0), (3, 10.0), (4, 15.0)] {
        let noise = rng.vec(m * n, 0.01);
        let w: Vec<f32> = (0..m * n)
            .map(|i| w0[i] + noise[i] + s * x[i / n] * y[i % n])
            .collect();
        let ck = d.join(format!("run/checkpoint-{step}"));
        std::fs::create_dir_all(&ck).unwrap();
        write_st(
            &ck.join("model.safetensors"),
            &[f32_tensor(name, &[m, n], &w)],
        );
    }
    name
}

#[test]
fn compare_follows_a_planted_intruder_back_to_the_checkpoint_it_appeared_in() {
    let d = tempfile::tempdir().unwrap();
    let name = planted_checkpoints(d.path());
    let r = lorascope(
        &[
            "compare",
            d.path().join("base.safetensors").to_str().unwrap(),
            d.path().join("run").to_str().unwrap(),
            "--format",
            "json",
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["reference"], "run/checkpoint-4");
    let tracks = v["tracks"].as_array().unwrap();
    let t = tracks
        .iter()
        .find(|t| t["j"] == 0)
        .unwrap_or_else(|| panic!("{tracks:?}"));
    assert_eq!(t["matrix"], name);
    assert_eq!(t["first_seen"], "run/checkpoint-2");
    let cos: Vec<f64> = t["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["best_cos"].as_f64().unwrap())
        .collect();
    assert!(cos[0] < 0.5 && cos[1] > 0.9 && cos[3] > 0.999, "{cos:?}");
    // It is the top vector from step 2 on, its σ growing.
    let sig: Vec<f64> = t["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sigma"].as_f64().unwrap())
        .collect();
    assert!(
        t["runs"][1]["rank"] == 0 && sig[1] < sig[2] && sig[2] < sig[3],
        "{t}"
    );
}

#[test]
fn report_compare_is_the_comparison_compare_makes_in_every_format() {
    let base = fx("base.safetensors");
    let runs = [
        fx("full-ft.safetensors"),
        fx("lora-r8"),
        fx("lora-r8-merged.safetensors"),
    ];
    let run = |args: &[&str]| {
        let r = lorascope(args, &[]);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        r.stdout
    };
    let with = |cmd: &[&str], tail: &[&str]| {
        let mut a: Vec<&str> = cmd.to_vec();
        a.push(&base);
        a.extend(runs.iter().map(|s| s.as_str()));
        a.extend(tail);
        run(&a)
    };
    let opts = ["--no-cache", "--label", "full", "--label", "lora"];
    let compared: serde_json::Value = serde_json::from_str(&with(
        &["compare"],
        &[&opts[..], &["--format", "json"]].concat(),
    ))
    .unwrap();
    // More than one run makes a report a comparison; --compare says it for one.
    let reported: serde_json::Value = serde_json::from_str(&with(
        &["report"],
        &[&opts[..], &["--format", "json"]].concat(),
    ))
    .unwrap();
    assert_eq!(reported, compared);
    let csv = with(
        &["report", "--compare"],
        &[&opts[..], &["--format", "csv"]].concat(),
    );
    assert_eq!(
        csv.trim_end(),
        with(&["compare"], &[&opts[..], &["--format", "csv"]].concat()).trim_end()
    );
    // Markdown: each run's counts at every ε, as compare counted them.
    let md = with(&["report"], &[&opts[..], &["--format", "md"]].concat());
    for r in compared["runs"].as_array().unwrap() {
        let counts: Vec<String> = r["sweep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["intruders"].to_string())
            .collect();
        let row = format!(
            "| {} | {} |",
            r["label"].as_str().unwrap(),
            counts.join(" | ")
        );
        assert!(md.contains(&row), "{row}\n{md}");
    }
    // --label names compared runs only.
    let r = lorascope(
        &["report", &base, &runs[1], "--label", "x", "--no-cache"],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--compare"), "{}", r.stderr);
}

#[test]
fn report_compare_html_shows_training_steps_tracks_and_a_matrix_in_every_run() {
    let d = tempfile::tempdir().unwrap();
    let name = planted_checkpoints(d.path());
    let out = d.path().join("cmp.html");
    let r = lorascope(
        &[
            "report",
            "--compare",
            d.path().join("base.safetensors").to_str().unwrap(),
            d.path().join("run").to_str().unwrap(),
            "--format",
            "html",
            "-o",
            out.to_str().unwrap(),
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(&out).unwrap();
    // Self-contained: no scripts, nothing fetched.
    assert!(!html.contains("<script"));
    assert_eq!(
        html.matches("http").count(),
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count()
    );
    assert!(html.contains("Intruders vs ε") && html.contains("Intruders over training"));
    // The intruder's matrix in each of the four checkpoints; the planted direction, held
    // from step 2 on, with each run's verdict on the heatmap.
    assert!(html.contains(&format!("<code>{name}</code> in every run")));
    assert_eq!(
        html.matches("<title>|cos| between base and tuned").count(),
        4
    );
    assert!(html.contains("run/checkpoint-1: none"), "{html}");
    assert!(html.contains("run/checkpoint-4: 1 intruder (j = 0)"));
    let tracks = &html[html.find("through the runs").unwrap()..];
    let row = &tracks[tracks.find(&format!("<code>{name}</code>")).unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert_eq!(row.matches("class=held").count(), 3, "{row}");
    assert!(row.ends_with("<td>run/checkpoint-2</td>"), "{row}");
}

#[test]
fn compare_with_whole_spectra_counts_over_fractions_of_the_vectors_as_scan_at_that_k() {
    let (base, lora) = (fx("base.safetensors"), fx("lora-r8"));
    let json = |args: &[&str]| -> serde_json::Value {
        let r = lorascope(args, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let c = json(&[
        "compare",
        &base,
        &lora,
        "--full-svd",
        "--format",
        "json",
        "--no-cache",
    ]);
    let f = c["runs"][0]["by_fraction"].as_array().unwrap();
    assert_eq!(f.len(), 10);
    // Every matrix here has 384 singular values: 10 % is the top 38, 100 % all 384.
    for (i, k) in [(0, "38"), (9, "384")] {
        let s = json(&[
            "scan",
            &base,
            &lora,
            "--full-svd",
            "--k",
            k,
            "--format",
            "json",
            "--no-cache",
        ]);
        assert_eq!(f[i]["intruders"], s["total_rule_intruders"], "k = {k}");
    }
    let c = json(&["compare", &base, &lora, "--format", "json", "--no-cache"]);
    assert!(
        c["runs"][0].get("by_fraction").is_none(),
        "only with whole spectra"
    );
}

#[test]
fn the_explorer_with_several_runs_checks_every_run_before_the_terminal() {
    let d = tempfile::tempdir().unwrap();
    let (base, lora) = (fx("base.safetensors"), fx("lora-r8"));
    let broken = d.path().join("broken.safetensors");
    let bytes = std::fs::read(fx("full-ft.safetensors")).unwrap();
    std::fs::write(&broken, &bytes[..bytes.len() / 2]).unwrap();
    let r = lorascope(&[&base, &lora, broken.to_str().unwrap(), "--no-cache"], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("broken.safetensors"), "{}", r.stderr);
    // Good runs get as far as the terminal (a pipe here).
    let r = lorascope(
        &[&base, &lora, &fx("full-ft.safetensors"), "--no-cache"],
        &[],
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("needs a terminal"), "{}", r.stderr);
    let r = lorascope(&[&base, &lora, "--label", "x", "--no-cache"], &[]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("give several"), "{}", r.stderr);
}

#[test]
fn vectors_with_zero_sigma_are_not_tested_and_degenerate_matrices_print_no_inf_or_nan() {
    // 32×24: left vectors live in R³², the base spans 24 of those dimensions.
    let (m, n) = (32, 24);
    let mut rng = Rng(11);
    let w0 = rng.vec(m * n, 1.0);
    let zero = vec![0.0f32; m * n];
    // Rank one: one direction, outside nothing in particular.
    let (u, v) = (rng.vec(m, 1.0), rng.vec(n, 1.0));
    let rank1: Vec<f32> = (0..m * n).map(|x| u[x / n] * v[x % n]).collect();
    let subnormal: Vec<f32> = w0.iter().map(|x| x * 1e-40).collect();
    let nudged: Vec<f32> = w0.iter().map(|x| x * 1.01).collect();
    let d = tempfile::tempdir().unwrap();
    let (b, t) = (
        d.path().join("b.safetensors"),
        d.path().join("t.safetensors"),
    );
    let names = [
        "zero_tuned",
        "rank_one",
        "zero_base",
        "subnormal_base",
        "control",
    ];
    let pairs: [(&[f32], &[f32]); 5] = [
        (&w0, &zero),
        (&w0, &rank1),
        (&zero, &w0),
        (&subnormal, &w0),
        (&w0, &nudged),
    ];
    let base: Vec<T> = names
        .iter()
        .zip(&pairs)
        .map(|(nm, p)| f32_tensor(&format!("l.{nm}.weight"), &[m, n], p.0))
        .collect();
    let tuned: Vec<T> = names
        .iter()
        .zip(&pairs)
        .map(|(nm, p)| f32_tensor(&format!("l.{nm}.weight"), &[m, n], p.1))
        .collect();
    write_st(&b, &base);
    write_st(&t, &tuned);
    let (bs, ts) = (b.to_str().unwrap(), t.to_str().unwrap());

    let r = lorascope(
        &[
            "scan",
            bs,
            ts,
            "--format",
            "json",
            "--no-cache",
            "--include",
            ".",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(schema_errors(&scan_schema(), &v), Vec::<String>::new());
    let of = |nm: &str| {
        v["matrices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == format!("l.{nm}.weight"))
            .unwrap()
            .clone()
    };
    let ints = |x: &serde_json::Value| x["rule_intruders"].as_array().unwrap().len();
    // A zero tuned matrix had 9 "intruders": its null space, an arbitrary basis.
    assert_eq!(
        (
            ints(&of("zero_tuned")),
            of("zero_tuned")["untestable"].as_u64()
        ),
        (0, Some(10))
    );
    // Rank one: only its one real direction can be tested (a rank-one matrix had 10).
    let r1 = of("rank_one");
    assert!(ints(&r1) <= 1, "{r1}");
    assert_eq!(r1["untestable"], 9);
    // No base spectrum to compare with: nothing tested.
    for nm in ["zero_base", "subnormal_base"] {
        assert_eq!(
            (ints(&of(nm)), of(nm)["untestable"].as_u64()),
            (0, Some(10)),
            "{nm}"
        );
    }
    assert_eq!(
        (ints(&of("control")), of("control")["untestable"].as_u64()),
        (0, Some(0))
    );
    assert_eq!(v["untestable_vectors"], 39);
    assert_eq!(
        v["total_rule_intruders"].as_u64().unwrap() as usize,
        ints(&r1)
    );
    assert!(
        r.stderr
            .contains("warning: 39 top vectors with σ ≈ 0 not tested"),
        "{}",
        r.stderr
    );

    // Table and CSV: no inf or NaN, a dash where there is no number, the note under the total.
    let table = lorascope(&["scan", bs, ts, "--no-cache", "--include", "."], &[]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let csv = lorascope(
        &[
            "scan",
            bs,
            ts,
            "--format",
            "csv",
            "--no-cache",
            "--include",
            ".",
        ],
        &[],
    );
    for out in [&table.stdout, &csv.stdout, &r.stdout] {
        let low = out.to_lowercase();
        assert!(!low.contains("inf") && !low.contains("nan"), "{out}");
    }
    let row = |nm: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("l.{nm}.weight")))
            .unwrap()
            .to_string()
    };
    assert!(row("zero_base").contains('—'), "{}", table.stdout);
    assert!(!row("control").contains('—'), "{}", table.stdout);
    assert!(
        table
            .stdout
            .contains("(39 top vectors with σ ≈ 0 not tested"),
        "{}",
        table.stdout
    );
    assert_eq!(table.stderr, "", "the table says it on stdout");
    let header: Vec<&str> = csv.stdout.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header[header.len() - 11..header.len() - 9],
        ["untestable", "pr_0"]
    );
    for l in csv.stdout.lines().skip(1) {
        assert_eq!(l.split(',').count(), header.len(), "{l}");
    }
}

#[test]
fn scan_rule_degenerate_aware_counts_clusters_and_says_so() {
    let schema = scan_schema();
    let (base, tuned) = (
        fx("layer1-query/base.safetensors"),
        fx("layer1-query/full-ft.safetensors"),
    );
    let scan = |extra: &[&str]| {
        let mut args = vec![
            "scan",
            &base,
            &tuned,
            "--format",
            "json",
            "--no-cache",
            "--epsilon",
            "0.9",
        ];
        args.extend(extra);
        let r = lorascope(&args, &[]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        let errors = schema_errors(&schema, &v);
        assert!(errors.is_empty(), "{errors:#?}");
        (v, r.stderr)
    };
    let (paper, _) = scan(&[]);
    assert_eq!(
        (paper["rule"].as_str(), paper["total_intruders"].as_u64()),
        (Some("paper"), Some(2))
    );
    let (aware, err) = scan(&["--rule", "degenerate-aware"]);
    assert_eq!(aware["rule"], "degenerate-aware");
    assert_eq!(aware["degenerate_tol"], 0.005);
    assert_eq!(aware["total_intruders"], 0);
    assert!(!err.contains("clusters of more than"), "{err}");
    let m = &aware["matrices"][0];
    // max_cos stays the paper's; the rule compares cluster_cos.
    assert_eq!(m["max_cos"], paper["matrices"][0]["max_cos"]);
    let pr = m["participation"].as_array().unwrap();
    assert_eq!(pr.len(), 10);
    assert!((pr[3].as_f64().unwrap() - 1.9).abs() < 0.05, "{pr:?}");
    assert_eq!(
        (m["cluster_size"][3].as_u64(), m["cluster_size"][4].as_u64()),
        (Some(2), Some(2))
    );
    // A tolerance so loose that clusters swallow the spectrum: counted, and warned about.
    let (_, err) = scan(&["--rule", "degenerate-aware", "--degenerate-tol", "0.2"]);
    assert!(
        err.contains("clusters of more than 4 base vectors"),
        "{err}"
    );
    let r = lorascope(
        &[
            "scan",
            &base,
            &tuned,
            "--degenerate-tol",
            "1.5",
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(r.code, 2);
    assert!(
        r.stderr
            .contains("--degenerate-tol must be in [0, 1), got 1.5"),
        "{}",
        r.stderr
    );
}
