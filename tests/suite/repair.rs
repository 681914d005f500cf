//! Repair outputs: an adapter whose merge equals the merged repair (plain, Conv1D, embedding,
//! rsLoRA with patterns, right vectors, a saved head, a LoRA bias), loadable merged folders with
//! shards, provenance, and the real MiniLM adapter end to end.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Model, Selection, TunedSource};
use lorascope::engine::{Engine, Options};
use lorascope::repair::{self, Chosen, Format, Scope, Settings, Target};
use lorascope::spectral::{Rule, Side};

fn write_adapter(dir: &Path, cfg: serde_json::Value, ts: &[T]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    write_st(&dir.join("adapter_model.safetensors"), ts);
}

/// Repairs (every top-3 vector with c < 1, λ = 0.3) as an adapter and as merged weights, and
/// checks that the adapter, merged the way PEFT merges it, gives the merged weights.
fn adapter_equals_merged(base: &Path, adapter: &Path, side: Side, include: &[&str]) -> usize {
    let sel = Selection::new(
        &include.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        &[],
    )
    .unwrap();
    let inputs = Inputs::open(base, adapter, &sel).unwrap();
    let opts = Options {
        side,
        keep: 3,
        ..Options::default()
    };
    let e = Engine::new(inputs, Cache::disabled(), opts);
    let rule = Rule::new(3, 1.0).unwrap();
    let lambda = 0.3;
    let chosen = std::sync::Mutex::new(BTreeMap::new());
    let scan = e.scan_with(1, &|_, _, _| {}, &|r, tuned| {
        let i = r.intruders(&rule);
        if !i.is_empty() {
            let c = Chosen::new(
                r,
                &i,
                tuned,
                lambda,
                &lorascope::flags::UserState::default(),
            );
            chosen.lock().unwrap().insert(r.name.clone(), c);
        }
    });
    assert_eq!(scan.failed(), 0);
    let chosen = chosen.into_inner().unwrap();
    let settings = Settings {
        lambda,
        scope: Scope::All,
        rule,
        max_shard: u64::MAX,
    };
    let out = tempfile::tempdir().unwrap();
    let write = |name: &str, format| {
        let t = Target::new(&e.inputs, &out.path().join(name), Some(format)).unwrap();
        repair::write(&e, &chosen, &settings, &t, false, &|_, _| {}).unwrap()
    };
    let (prov, _) = write("adapter", Format::Adapter);
    write("merged.safetensors", Format::Merged);
    let merged = Model::open(&out.path().join("merged.safetensors")).unwrap();
    let again = Inputs::open(base, &out.path().join("adapter"), &sel).unwrap();
    let mut checked = 0;
    for p in &again.pairs {
        if p.shape.len() != 2
            || !matches!(
                p.tuned,
                Some(TunedSource::Lora { .. } | TunedSource::Replaced { .. })
            )
        {
            continue;
        }
        let w = again.tuned_matrix::<f64>(p).unwrap();
        let w = if p.transposed { w.transpose() } else { w };
        let m: Vec<f64> = merged.decode(&p.name).unwrap();
        let scale = m.iter().fold(0.0f64, |a, x| a.max(x.abs()));
        let worst = w
            .data
            .iter()
            .zip(&m)
            .fold(0.0f64, |a, (x, y)| a.max((x - y).abs()));
        assert!(worst <= 1e-6 * scale, "{}: {worst} of {scale}", p.name);
        checked += 1;
    }
    assert!(checked > 0);
    // The repair did something: the merged weights differ from the tuned model's.
    let changed = e
        .inputs
        .pairs
        .iter()
        .filter(|p| chosen.contains_key(&p.name))
        .any(|p| {
            let t = e.inputs.tuned_matrix::<f64>(p).unwrap();
            let t = if p.transposed { t.transpose() } else { t };
            let m: Vec<f64> = merged.decode(&p.name).unwrap();
            rel_err(&t.data, &m) > 1e-3
        });
    assert!(changed);
    prov.count()
}

/// `repair --lambda 1` to a merged file: the adapter merged as PEFT merges it.
fn merge_as_it_is(base: &Path, adapter: &Path, out: &Path) -> Run {
    lorascope(
        &[
            "repair",
            base.to_str().unwrap(),
            adapter.to_str().unwrap(),
            "--lambda",
            "1",
            "-o",
            out.to_str().unwrap(),
            "--no-cache",
        ],
        &[],
    )
}

fn cfg(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
        "target_modules": ["q", "v"], "task_type": "CAUSAL_LM", "lora_dropout": 0.05});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn an_adapter_repair_merges_to_the_merged_repair_for_every_kind_of_module() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(21);
    let base = d.path().join("base.safetensors");
    // q, v: (out 12, in 10); c_attn: Conv1D stored (in 10, out 12); an embedding (16, 6); a head.
    let (q, v, c, emb, head) = (
        rng.vec(120, 1.0),
        rng.vec(120, 1.0),
        rng.vec(120, 1.0),
        rng.vec(96, 1.0),
        rng.vec(30, 1.0),
    );
    write_st(
        &base,
        &[
            f32_tensor("model.layers.0.attn.q.weight", &[12, 10], &q),
            f32_tensor("model.layers.0.attn.v.weight", &[12, 10], &v),
            f32_tensor("model.layers.0.attn.c_attn.weight", &[10, 12], &c),
            f32_tensor("model.embed_tokens.weight", &[16, 6], &emb),
            f32_tensor("score.weight", &[3, 10], &head),
        ],
    );
    let lora = |rng: &mut Rng, module: &str, r: usize, out: usize, inn: usize| {
        vec![
            f32_tensor(
                &format!("base_model.model.{module}.lora_A.weight"),
                &[r, inn],
                &rng.vec(r * inn, 0.8),
            ),
            f32_tensor(
                &format!("base_model.model.{module}.lora_B.weight"),
                &[out, r],
                &rng.vec(out * r, 0.8),
            ),
        ]
    };
    // Plain, with a rank and an alpha pattern, rsLoRA.
    let plain = d.path().join("plain");
    let mut ts = lora(&mut rng, "model.layers.0.attn.q", 2, 12, 10);
    ts.extend(lora(&mut rng, "model.layers.0.attn.v", 3, 12, 10));
    write_adapter(
        &plain,
        cfg(
            serde_json::json!({"use_rslora": true, "rank_pattern": {"v": 3},
            "alpha_pattern": {"v": 5}}),
        ),
        &ts,
    );
    for side in [Side::Left, Side::Right] {
        assert!(adapter_equals_merged(&base, &plain, side, &[]) > 0);
    }
    // GPT-2 Conv1D (fan_in_fan_out).
    let conv = d.path().join("conv");
    write_adapter(
        &conv,
        cfg(serde_json::json!({"fan_in_fan_out": true, "target_modules": ["c_attn"]})),
        &lora(&mut rng, "model.layers.0.attn.c_attn", 2, 12, 10),
    );
    assert!(adapter_equals_merged(&base, &conv, Side::Left, &[]) > 0);
    // Embedding LoRA, and a saved head (modules_to_save) repaired in place.
    let embd = d.path().join("emb");
    write_adapter(
        &embd,
        cfg(serde_json::json!({"target_modules": ["embed_tokens"], "modules_to_save": ["score"]})),
        &[
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                &[2, 16],
                &rng.vec(32, 0.8),
            ),
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_embedding_B",
                &[6, 2],
                &rng.vec(12, 0.8),
            ),
            f32_tensor("base_model.model.score.weight", &[3, 10], &rng.vec(30, 1.0)),
        ],
    );
    let n = adapter_equals_merged(&base, &embd, Side::Left, &["embed_tokens", "score"]);
    assert!(n > 3, "both matrices scaled: {n}");
}

#[test]
fn the_written_adapter_keeps_its_config_and_saved_tensors() {
    let d = tempfile::tempdir().unwrap();
    let (base, lora) = (fx("base.safetensors"), fx("lora-r8"));
    let out = d.path().join("repaired");
    let r = lorascope(
        &[
            "repair",
            &base,
            &lora,
            "--lambda",
            "0.5",
            "--epsilon",
            "0.9",
            "--scope",
            "all",
            "-o",
            out.to_str().unwrap(),
            "--no-cache",
            "--verify",
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("(PEFT adapter)"), "{}", r.stderr);
    // --verify: before and after per matrix and in total.
    let total = r
        .stdout
        .lines()
        .find(|l| l.starts_with("total "))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    let nums: Vec<usize> = total
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert!(nums[0] > 0 && nums[1] < nums[0], "{total}");
    // The config: every field as it was, the grown modules' rank and α first in the patterns.
    let read = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let (old, new) = (
        read(&Path::new(&lora).join("adapter_config.json")),
        read(&out.join("adapter_config.json")),
    );
    let prov = read(&out.join("repair.json"));
    let scaled = prov["matrices"].as_object().unwrap();
    assert!(!scaled.is_empty());
    for (k, v) in old.as_object().unwrap() {
        if k != "rank_pattern" && k != "alpha_pattern" {
            assert_eq!(&new[k], v, "{k}");
        }
    }
    for (name, vectors) in scaled {
        let module = name.strip_suffix(".weight").unwrap();
        let m = vectors.as_array().unwrap().len() as u64;
        assert_eq!(new["rank_pattern"][module], 8 + m, "{module}");
        // s = α/r kept: 16/8 = α′/(8 + m).
        assert_eq!(
            new["alpha_pattern"][module],
            2.0 * (8 + m) as f64,
            "{module}"
        );
        // Halving is exact; serde_json's float parsing (without `float_roundtrip`) may be
        // off by an ulp.
        let (after, before) = (
            vectors[0]["sigma_after"].as_f64().unwrap(),
            vectors[0]["sigma_before"].as_f64().unwrap(),
        );
        assert!(
            (after - 0.5 * before).abs() <= 4.0 * f64::EPSILON * before,
            "{after} {before}"
        );
    }
    // The saved head, byte for byte; the provenance in the file's metadata too.
    let a = lorascope::checkpoint::st::StFile::open(
        &Path::new(&lora).join("adapter_model.safetensors"),
    )
    .unwrap();
    let b =
        lorascope::checkpoint::st::StFile::open(&out.join("adapter_model.safetensors")).unwrap();
    for name in [
        "base_model.model.classifier.weight",
        "base_model.model.classifier.bias",
    ] {
        assert_eq!(
            a.with_bytes(&a.tensors[name], <[u8]>::to_vec).unwrap(),
            b.with_bytes(&b.tensors[name], <[u8]>::to_vec).unwrap(),
            "{name}"
        );
    }
    let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(header["__metadata__"]["lorascope_repair"].as_str().unwrap()).unwrap();
    assert_eq!(meta, prov);
    // Again without --force: refused, nothing changed.
    let again = lorascope(
        &[
            "repair",
            &base,
            &lora,
            "--lambda",
            "0",
            "-o",
            out.to_str().unwrap(),
            "--no-cache",
        ],
        &[],
    );
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert_eq!(read(&out.join("repair.json")), prov);
}

#[test]
fn a_merged_folder_loads_as_a_model_sharded_or_not() {
    let d = tempfile::tempdir().unwrap();
    // A base folder as transformers has it: weights, config, tokenizer.
    let base = d.path().join("base");
    std::fs::create_dir(&base).unwrap();
    std::fs::copy(fx("base.safetensors"), base.join("model.safetensors")).unwrap();
    std::fs::write(base.join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    std::fs::write(base.join("tokenizer.json"), "{}").unwrap();
    std::fs::write(base.join("vocab.txt"), "[PAD]\n").unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "repair",
            base.to_str().unwrap(),
            Box::leak(fx("lora-r8").into_boxed_str()),
            "--lambda",
            "0",
            "--format",
            "merged",
            "-o",
            out.to_str().unwrap(),
            "--no-cache",
        ];
        args.extend(extra);
        lorascope(&args, &[])
    };
    let single = d.path().join("single");
    let r = run(&single, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sharded = d.path().join("sharded");
    let r = run(&sharded, &["--max-shard-size", "300K"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut files: Vec<String> = std::fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(
        files.contains(&"model.safetensors.index.json".to_string()),
        "{files:?}"
    );
    let shards = files.iter().filter(|f| f.starts_with("model-0")).count();
    assert!(shards >= 3, "{files:?}");
    for f in ["config.json", "tokenizer.json", "vocab.txt", "repair.json"] {
        assert!(files.contains(&f.to_string()), "{f}: {files:?}");
        assert!(single.join(f).is_file(), "{f}");
    }
    let (a, b) = (
        Model::open(&single).unwrap(),
        Model::open(&sharded).unwrap(),
    );
    let orig = Model::open(&base).unwrap();
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        b.tensors.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        a.tensors.keys().collect::<Vec<_>>(),
        orig.tensors.keys().collect::<Vec<_>>()
    );
    for name in a.tensors.keys() {
        assert_eq!(a.bytes(name), b.bytes(name), "{name}");
        assert_eq!(
            a.tensors[name].info.dtype, orig.tensors[name].info.dtype,
            "{name}"
        );
    }
}

#[test]
fn a_lora_bias_is_merged_and_a_head_the_base_lacks_is_kept() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let base = d.path().join("base.safetensors");
    let (w, bias) = (rng.vec(120, 1.0), rng.vec(12, 1.0));
    write_st(
        &base,
        &[
            bf16_tensor("model.layers.0.attn.q.weight", &[12, 10], &w),
            bf16_tensor("model.layers.0.attn.q.bias", &[12], &bias),
        ],
    );
    let lb = rng.vec(12, 1.0);
    let head = rng.vec(20, 1.0);
    let ad = d.path().join("ad");
    write_adapter(
        &ad,
        cfg(serde_json::json!({"lora_bias": true, "modules_to_save": ["classifier"]})),
        &[
            f32_tensor(
                "base_model.model.model.layers.0.attn.q.lora_A.weight",
                &[2, 10],
                &rng.vec(20, 0.5),
            ),
            f32_tensor(
                "base_model.model.model.layers.0.attn.q.lora_B.weight",
                &[12, 2],
                &rng.vec(24, 0.5),
            ),
            f32_tensor(
                "base_model.model.model.layers.0.attn.q.lora_B.bias",
                &[12],
                &lb,
            ),
            f32_tensor("base_model.model.classifier.weight", &[2, 10], &head),
        ],
    );
    let out = d.path().join("merged.safetensors");
    let r = merge_as_it_is(&base, &ad, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = Model::open(&out).unwrap();
    // bias + s·lora_B.bias (s = 4/2), in the base's dtype.
    let got: Vec<f64> = m.decode("model.layers.0.attn.q.bias").unwrap();
    for ((g, b), l) in got.iter().zip(&bias).zip(&lb) {
        let want = half::bf16::from_f64(half::bf16::from_f32(*b).to_f64() + 2.0 * *l as f64);
        assert_eq!(*g, want.to_f64());
    }
    // The head the base lacks is in the model, cast to the model's dtype.
    let h = &m.tensors["classifier.weight"].info;
    assert_eq!(
        (h.dtype, h.shape.clone()),
        (safetensors::Dtype::BF16, vec![2, 10])
    );
    // A LoRA bias on a layer without one is refused, naming the tensor.
    write_st(
        &base,
        &[bf16_tensor("model.layers.0.attn.q.weight", &[12, 10], &w)],
    );
    let r = merge_as_it_is(&base, &ad, &d.path().join("x.safetensors"));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("lora_B.bias") && r.stderr.contains("does not have"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
}

#[test]
fn trained_biases_saved_as_base_layer_replace_the_layers_and_embedding_dora_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(8);
    let base = d.path().join("base.safetensors");
    let (w, bias, emb) = (rng.vec(120, 1.0), rng.vec(12, 1.0), rng.vec(96, 1.0));
    write_st(
        &base,
        &[
            f32_tensor("model.layers.0.attn.q.weight", &[12, 10], &w),
            f32_tensor("model.layers.0.attn.q.bias", &[12], &bias),
            f32_tensor("model.embed_tokens.weight", &[16, 6], &emb),
        ],
    );
    // bias="all": PEFT saves the trained bias under the wrapped layer's name.
    let trained = rng.vec(12, 1.0);
    let ad = d.path().join("ad");
    write_adapter(
        &ad,
        cfg(serde_json::json!({"bias": "all"})),
        &[
            f32_tensor(
                "base_model.model.model.layers.0.attn.q.lora_A.weight",
                &[2, 10],
                &rng.vec(20, 0.5),
            ),
            f32_tensor(
                "base_model.model.model.layers.0.attn.q.lora_B.weight",
                &[12, 2],
                &rng.vec(24, 0.5),
            ),
            f32_tensor(
                "base_model.model.model.layers.0.attn.q.base_layer.bias",
                &[12],
                &trained,
            ),
        ],
    );
    let inputs = Inputs::open(&base, &ad, &Selection::default()).unwrap();
    assert!(inputs.only_tuned.is_empty(), "{:?}", inputs.only_tuned);
    let out = d.path().join("m.safetensors");
    let r = merge_as_it_is(&base, &ad, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m = Model::open(&out).unwrap();
    let got: Vec<f32> = m.decode("model.layers.0.attn.q.bias").unwrap();
    assert_eq!(got, trained);
    // DoRA on an embedding: refused when opened, saying so.
    let dora = d.path().join("dora");
    write_adapter(
        &dora,
        cfg(serde_json::json!({"use_dora": true, "target_modules": ["embed_tokens"]})),
        &[
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                &[2, 16],
                &rng.vec(32, 0.5),
            ),
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_embedding_B",
                &[6, 2],
                &rng.vec(12, 0.5),
            ),
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_magnitude_vector",
                &[6],
                &rng.vec(6, 1.0),
            ),
        ],
    );
    let e = Inputs::open(&base, &dora, &Selection::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("DoRA on an embedding layer is not supported"),
        "{e}"
    );
}

#[test]
fn the_real_minilm_adapter_and_the_demo_repair_to_adapters_that_merge_exactly() {
    let d = tempfile::tempdir().unwrap();
    let (base, lora) = (fx("base.safetensors"), fx("lora-r8"));
    assert!(adapter_equals_merged(Path::new(&base), Path::new(&lora), Side::Left, &[]) > 0);
    let p = lorascope::demo::ensure(d.path()).unwrap();
    assert!(adapter_equals_merged(&p.base, &p.lora, Side::Right, &[]) > 0);
}

#[test]
fn a_repair_killed_while_writing_leaves_no_output_and_the_next_one_cleans_up() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let args = [
        "repair",
        &fx("base.safetensors"),
        &fx("lora-r8"),
        "--lambda",
        "0.5",
        "--format",
        "merged",
        "-o",
        out.to_str().unwrap(),
        "--no-cache",
    ];
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(args)
        .env("LORASCOPE_TEST_STOP", "write")
        .env("XDG_STATE_HOME", d.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until part of the model is on disk in the temporary folder, then kill -9.
    let temp = || -> Option<std::path::PathBuf> {
        std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".lorascope-")
            })
    };
    let started = std::time::Instant::now();
    let partial = loop {
        let written = temp().and_then(|t| std::fs::metadata(t.join("model.safetensors")).ok());
        if written.is_some_and(|m| m.len() > 0) {
            break temp().unwrap();
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "the repair never started writing"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "no partial output under the output's name");
    assert!(partial.exists());
    let r = lorascope(&args, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("left by a killed lorascope run"),
        "{}",
        r.stderr
    );
    assert!(temp().is_none() && out.join("model.safetensors").is_file());
}
