//! Reading checkpoints and adapters: reconstructions against independent arithmetic, the real
//! MiniLM fixtures, and one clear error per kind of bad input.

// Reference arithmetic reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

use crate::common::*;
use lorascope::checkpoint::{Dense, Inputs, Model, Selection, Tuned};
use std::path::Path;

fn sel() -> Selection {
    Selection::default()
}

/// Independent reference: W0 + s·B·A with naive loops (B out×r, A r×in), f64.
fn naive_merge(
    w0: &[f32],
    b: &[f32],
    a: &[f32],
    out: usize,
    r: usize,
    inn: usize,
    s: f64,
) -> Vec<f64> {
    let mut w: Vec<f64> = w0.iter().map(|x| *x as f64).collect();
    for i in 0..out {
        for j in 0..inn {
            let mut acc = 0.0;
            for k in 0..r {
                acc += b[i * r + k] as f64 * a[k * inn + j] as f64;
            }
            w[i * inn + j] += s * acc;
        }
    }
    w
}

fn write_adapter(dir: &Path, cfg: serde_json::Value, ts: &[T]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    write_st(&dir.join("adapter_model.safetensors"), ts);
}

fn cfg(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q", "v"]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

const BASE_Q: &str = "model.layers.0.attn.q.weight";
const BASE_V: &str = "model.layers.0.attn.v.weight";

struct Toy {
    w_q: Vec<f32>,
    w_v: Vec<f32>,
    a_q: Vec<f32>,
    b_q: Vec<f32>,
    a_v: Vec<f32>,
    b_v: Vec<f32>,
}

/// Base: q is 6×5, v is 4×5. Adapter modules on both, rank 4 (q) and 2 (v).
fn toy(dir: &Path) -> Toy {
    let mut rng = Rng(7);
    let t = Toy {
        w_q: rng.vec(30, 1.0),
        w_v: rng.vec(20, 1.0),
        a_q: rng.vec(4 * 5, 0.5),
        b_q: rng.vec(6 * 4, 0.5),
        a_v: rng.vec(2 * 5, 0.5),
        b_v: rng.vec(4 * 2, 0.5),
    };
    write_st(
        &dir.join("base/model.safetensors"),
        &[
            f32_tensor(BASE_Q, &[6, 5], &t.w_q),
            f32_tensor(BASE_V, &[4, 5], &t.w_v),
            f32_tensor("model.norm.weight", &[5], &[1.0; 5]),
        ],
    );
    t
}

fn lora_tensors(t: &Toy) -> Vec<T> {
    let p = "base_model.model.model.layers.0.attn";
    vec![
        f32_tensor(&format!("{p}.q.lora_A.weight"), &[4, 5], &t.a_q),
        f32_tensor(&format!("{p}.q.lora_B.weight"), &[6, 4], &t.b_q),
        f32_tensor(&format!("{p}.v.lora_A.weight"), &[2, 5], &t.a_v),
        f32_tensor(&format!("{p}.v.lora_B.weight"), &[4, 2], &t.b_v),
    ]
}

fn tuned_of(inp: &Inputs, name: &str) -> Dense<f64> {
    let p = inp.pairs.iter().find(|p| p.name == name).unwrap();
    inp.tuned_matrix::<f64>(p).unwrap()
}

#[test]
fn lora_merge_matches_independent_arithmetic_with_rslora_and_patterns() {
    let d = tempfile::tempdir().unwrap();
    let t = toy(d.path());
    // Plain: s = 8/4 = 2 for q; v has rank 2 in its tensors (config says 4: warning), s = 8/2.
    write_adapter(
        &d.path().join("plain"),
        cfg(serde_json::json!({})),
        &lora_tensors(&t),
    );
    let inp = Inputs::open(&d.path().join("base"), &d.path().join("plain"), &sel()).unwrap();
    let q = tuned_of(&inp, BASE_Q);
    assert!(rel_err(&q.data, &naive_merge(&t.w_q, &t.b_q, &t.a_q, 6, 4, 5, 2.0)) < 1e-12);
    let v = tuned_of(&inp, BASE_V);
    assert!(rel_err(&v.data, &naive_merge(&t.w_v, &t.b_v, &t.a_v, 4, 2, 5, 4.0)) < 1e-12);
    assert!(
        inp.warnings
            .iter()
            .any(|w| w.contains("rank 2 in its tensors but 4")),
        "{:?}",
        inp.warnings
    );
    assert_eq!(inp.selected().count(), 2);

    // rsLoRA: s = α/√r; alpha_pattern gives v α = 3 (first matching key wins), rank_pattern
    // agrees with the tensors so no warning.
    write_adapter(
        &d.path().join("rs"),
        cfg(
            serde_json::json!({"use_rslora": true, "alpha_pattern": {"attn.v": 3, "v": 100},
                               "rank_pattern": {"v": 2}}),
        ),
        &lora_tensors(&t),
    );
    let inp = Inputs::open(&d.path().join("base"), &d.path().join("rs"), &sel()).unwrap();
    let q = tuned_of(&inp, BASE_Q);
    assert!(
        rel_err(
            &q.data,
            &naive_merge(&t.w_q, &t.b_q, &t.a_q, 6, 4, 5, 8.0 / 2.0)
        ) < 1e-12
    );
    let v = tuned_of(&inp, BASE_V);
    let s_v = 3.0 / 2f64.sqrt();
    assert!(rel_err(&v.data, &naive_merge(&t.w_v, &t.b_v, &t.a_v, 4, 2, 5, s_v)) < 1e-12);
    assert!(inp.warnings.is_empty(), "{:?}", inp.warnings);
}

#[test]
fn adapters_trained_against_a_modified_base_are_flagged() {
    let d = tempfile::tempdir().unwrap();
    let t = toy(d.path());
    write_adapter(
        &d.path().join("pissa"),
        cfg(serde_json::json!({"init_lora_weights": "pissa_niter_4"})),
        &lora_tensors(&t),
    );
    let r = lorascope(
        &[
            "inspect",
            &d.path().join("base").to_string_lossy(),
            &d.path().join("pissa").to_string_lossy(),
        ],
        &[],
    );
    assert_eq!(r.code, 0);
    assert!(
        r.stderr.starts_with("warning: ")
            && r.stderr.contains("init_lora_weights = \"pissa_niter_4\""),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("not its true W0"));
}

#[test]
fn dora_scales_rows_by_magnitude_over_norm() {
    let d = tempfile::tempdir().unwrap();
    let t = toy(d.path());
    let mut ts = lora_tensors(&t);
    let mag: Vec<f32> = (0..6).map(|i| 0.5 + i as f32).collect();
    ts.push(f32_tensor(
        "base_model.model.model.layers.0.attn.q.lora_magnitude_vector",
        &[6],
        &mag,
    ));
    write_adapter(
        &d.path().join("dora"),
        cfg(serde_json::json!({"use_dora": true})),
        &ts,
    );
    let inp = Inputs::open(&d.path().join("base"), &d.path().join("dora"), &sel()).unwrap();
    let q = tuned_of(&inp, BASE_Q);
    let v = naive_merge(&t.w_q, &t.b_q, &t.a_q, 6, 4, 5, 2.0);
    let mut want = v.clone();
    for i in 0..6 {
        let n = v[i * 5..i * 5 + 5]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt();
        for j in 0..5 {
            want[i * 5 + j] = v[i * 5 + j] * mag[i] as f64 / n;
        }
    }
    assert!(rel_err(&q.data, &want) < 1e-12);
    // Every row's norm is now the magnitude.
    for i in 0..6 {
        let n = q.data[i * 5..i * 5 + 5]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt();
        assert!((n - mag[i] as f64).abs() < 1e-9);
    }
}

#[test]
fn fan_in_fan_out_is_analysed_as_out_by_in() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    // GPT-2 Conv1D stores (in=5, out=6).
    let w_stored = rng.vec(30, 1.0);
    let a = rng.vec(4 * 5, 0.5);
    let b = rng.vec(6 * 4, 0.5);
    write_st(
        &d.path().join("base.safetensors"),
        &[f32_tensor(
            "transformer.h.0.attn.c_attn.weight",
            &[5, 6],
            &w_stored,
        )],
    );
    write_adapter(
        &d.path().join("ad"),
        cfg(serde_json::json!({"fan_in_fan_out": true})),
        &[
            f32_tensor(
                "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
                &[4, 5],
                &a,
            ),
            f32_tensor(
                "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight",
                &[6, 4],
                &b,
            ),
        ],
    );
    let inp = Inputs::open(
        &d.path().join("base.safetensors"),
        &d.path().join("ad"),
        &sel(),
    )
    .unwrap();
    let p = inp.selected().next().unwrap();
    assert_eq!(p.dims(), (6, 5));
    let base = inp.base_matrix::<f64>(p).unwrap();
    let w0_out_in: Vec<f32> = (0..6)
        .flat_map(|o| (0..5).map(move |i| (o, i)))
        .map(|(o, i)| w_stored[i * 6 + o])
        .collect();
    assert_eq!(
        base.data,
        w0_out_in.iter().map(|x| *x as f64).collect::<Vec<_>>()
    );
    let tuned = inp.tuned_matrix::<f64>(p).unwrap();
    assert!(rel_err(&tuned.data, &naive_merge(&w0_out_in, &b, &a, 6, 4, 5, 2.0)) < 1e-12);
}

#[test]
fn embedding_lora_and_modules_to_save() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(11);
    let emb = rng.vec(10 * 3, 1.0); // (num_embeddings=10, dim=3)
    let head = rng.vec(2 * 3, 1.0);
    write_st(
        &d.path().join("base.safetensors"),
        &[
            f32_tensor("model.embed_tokens.weight", &[10, 3], &emb),
            f32_tensor("score.weight", &[2, 3], &head),
        ],
    );
    let ea = rng.vec(2 * 10, 1.0); // (r, num_embeddings)
    let eb = rng.vec(3 * 2, 1.0); // (dim, r)
    let new_head = rng.vec(2 * 3, 1.0);
    write_adapter(
        &d.path().join("ad"),
        cfg(serde_json::json!({"r": 2, "lora_alpha": 2, "modules_to_save": ["score"]})),
        &[
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_embedding_A",
                &[2, 10],
                &ea,
            ),
            f32_tensor(
                "base_model.model.model.embed_tokens.lora_embedding_B",
                &[3, 2],
                &eb,
            ),
            f32_tensor("base_model.model.score.weight", &[2, 3], &new_head),
        ],
    );
    let inp = Inputs::open(
        &d.path().join("base.safetensors"),
        &d.path().join("ad"),
        &sel(),
    )
    .unwrap();
    let e = tuned_of(&inp, "model.embed_tokens.weight");
    // ΔW = (B·A)ᵀ, s = 1.
    let mut want: Vec<f64> = emb.iter().map(|x| *x as f64).collect();
    for n in 0..10 {
        for k in 0..3 {
            want[n * 3 + k] += (0..2)
                .map(|r| eb[k * 2 + r] as f64 * ea[r * 10 + n] as f64)
                .sum::<f64>();
        }
    }
    assert!(rel_err(&e.data, &want) < 1e-12);
    let h = tuned_of(&inp, "score.weight");
    assert_eq!(
        h.data,
        new_head.iter().map(|x| *x as f64).collect::<Vec<_>>()
    );
    // The embedding carries LoRA, so it is selected; the replaced head is not by default.
    let sel_names: Vec<_> = inp.selected().map(|p| p.name.as_str()).collect();
    assert_eq!(sel_names, ["model.embed_tokens.weight"]);
}

#[test]
fn single_and_sharded_in_every_dtype() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(5);
    let vals = rng.vec(12, 3.0);
    let bits = |dt: &str| -> Vec<f64> {
        vals.iter()
            .map(|v| match dt {
                "F16" => half::f16::from_f32(*v).to_f64(),
                "BF16" => half::bf16::from_f32(*v).to_f64(),
                _ => *v as f64,
            })
            .collect()
    };
    let dir = d.path().join("sharded");
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        &[
            f32_tensor("layers.0.a.weight", &[3, 4], &vals),
            f16_tensor("layers.0.b.weight", &[3, 4], &vals),
        ],
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[bf16_tensor("layers.10.c.weight", &[4, 3], &vals)],
    );
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {"total_size": 1}, "weight_map": {
            "layers.0.a.weight": "model-00001-of-00002.safetensors",
            "layers.0.b.weight": "model-00001-of-00002.safetensors",
            "layers.10.c.weight": "model-00002-of-00002.safetensors"}})
        .to_string(),
    )
    .unwrap();
    let m = Model::open(&dir).unwrap();
    assert_eq!(m.files.len(), 2);
    for (name, dt) in [
        ("layers.0.a.weight", "F32"),
        ("layers.0.b.weight", "F16"),
        ("layers.10.c.weight", "BF16"),
    ] {
        let x = m.matrix::<f64>(name).unwrap();
        assert_eq!(x.data, bits(dt), "{name}");
        // Into recycled buffers, larger (with stale values) and smaller: the same matrix.
        for stale in [vec![7.5; 40], vec![7.5; 5]] {
            let r = m.matrix_into::<f64>(name, stale).unwrap();
            assert_eq!(
                (r.rows, r.cols, &r.data),
                (x.rows, x.cols, &x.data),
                "{name}"
            );
        }
        let y = m.matrix::<f32>(name).unwrap();
        assert_eq!(
            y.data.iter().map(|v| *v as f64).collect::<Vec<_>>(),
            bits(dt)
        );
    }
    // Paired with itself: natural order, all selected.
    let inp = Inputs::open(&dir, &dir, &sel()).unwrap();
    let names: Vec<_> = inp.selected().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "layers.0.a.weight",
            "layers.0.b.weight",
            "layers.10.c.weight"
        ]
    );
    assert_eq!(inp.pairs[2].file, "model-00002-of-00002.safetensors");
}

#[test]
fn full_finetune_pairs_across_wrapper_prefix_and_lists_leftovers() {
    let d = tempfile::tempdir().unwrap();
    let z = vec![0f32; 4];
    write_st(
        &d.path().join("base.safetensors"),
        &[
            f32_tensor("encoder.layer.0.q.weight", &[2, 2], &z),
            f32_tensor("embeddings.word.weight", &[2, 2], &z),
        ],
    );
    write_st(
        &d.path().join("tuned.safetensors"),
        &[
            f32_tensor("bert.encoder.layer.0.q.weight", &[2, 2], &z),
            f32_tensor("bert.embeddings.word.weight", &[1, 4], &z),
            f32_tensor("classifier.weight", &[2, 2], &z),
        ],
    );
    let inp = Inputs::open(
        &d.path().join("base.safetensors"),
        &d.path().join("tuned.safetensors"),
        &sel(),
    )
    .unwrap();
    assert_eq!(
        inp.selected().map(|p| p.name.clone()).collect::<Vec<_>>(),
        ["encoder.layer.0.q.weight"]
    );
    assert_eq!(inp.only_tuned, ["classifier.weight"]);
    assert_eq!(inp.shape_mismatch.len(), 1);
    // --include replaces the default, --exclude removes.
    let s = Selection::new(&["weight".into()], &["embeddings".into()]).unwrap();
    let inp = Inputs::open(
        &d.path().join("base.safetensors"),
        &d.path().join("tuned.safetensors"),
        &s,
    )
    .unwrap();
    assert_eq!(inp.selected().count(), 1);
}

// ---- the real MiniLM checkpoints (slices in tests/fixtures/minilm) ----

#[test]
fn minilm_adapter_reproduces_peft_merged_weights() {
    let f = fixtures().join("minilm");
    let inp = Inputs::open(&f.join("base.safetensors"), &f.join("lora-r8"), &sel()).unwrap();
    let merged = Model::open(&f.join("lora-r8-merged.safetensors")).unwrap();
    let mut n = 0;
    for p in inp.selected() {
        let ours = inp.tuned_matrix::<f64>(p).unwrap();
        let peft = merged.matrix::<f64>(&p.name).unwrap();
        let e = rel_err(&ours.data, &peft.data);
        assert!(e < 1e-5, "{}: {e}", p.name);
        n += 1;
    }
    assert_eq!(n, 2);
    // The classifier comes from modules_to_save.
    let Tuned::Adapter(a) = &inp.tuned else {
        panic!()
    };
    assert_eq!(a.modules.values().next().unwrap().scaling, 2.0);
    assert!(inp.pairs.iter().any(|p| p.name == "classifier.weight"
        && matches!(
            p.tuned,
            Some(lorascope::checkpoint::TunedSource::Replaced { .. })
        )));
}

#[test]
fn minilm_pairing_selects_the_36_encoder_matrices_for_full_ft_and_adapter() {
    let d = tempfile::tempdir().unwrap();
    let h = fixtures().join("minilm/headers");
    let load = |n: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(h.join(n)).unwrap()).unwrap()
    };
    write_sparse_from_header(&d.path().join("base.safetensors"), &load("base.json"));
    write_sparse_from_header(&d.path().join("full.safetensors"), &load("full-ft.json"));
    let ad = d.path().join("lora");
    std::fs::create_dir(&ad).unwrap();
    write_sparse_from_header(&ad.join("adapter_model.safetensors"), &load("lora-r8.json"));
    std::fs::copy(
        fixtures().join("minilm/lora-r8/adapter_config.json"),
        ad.join("adapter_config.json"),
    )
    .unwrap();

    let full = Inputs::open(
        &d.path().join("base.safetensors"),
        &d.path().join("full.safetensors"),
        &sel(),
    )
    .unwrap();
    let lora = Inputs::open(&d.path().join("base.safetensors"), &ad, &sel()).unwrap();
    let a: Vec<_> = full.selected().map(|p| p.name.clone()).collect();
    let b: Vec<_> = lora.selected().map(|p| p.name.clone()).collect();
    assert_eq!(a.len(), 36);
    assert_eq!(a, b);
    assert_eq!(a[0], "bert.encoder.layer.0.attention.output.dense.weight");
    assert_eq!(a[35], "bert.encoder.layer.5.output.dense.weight");
    assert!(full.only_tuned.is_empty() && full.shape_mismatch.is_empty());
}

#[test]
fn opening_a_16_gib_sharded_model_reads_headers_only() {
    // Sparse shards: if opening touched tensor data this would read 16 GiB of zeros.
    let d = tempfile::tempdir().unwrap();
    let mut map = serde_json::Map::new();
    for s in 0..4 {
        let file = format!("model-{:05}-of-00004.safetensors", s + 1);
        let mut h = serde_json::Map::new();
        let mut off = 0u64;
        for l in 0..8 {
            let name = format!("model.layers.{}.mlp.up_proj.weight", s * 8 + l);
            let bytes = 8192u64 * 32768 * 2; // 512 MiB of BF16; 32 of them make 16 GiB
            h.insert(name.clone(), serde_json::json!({"dtype": "BF16", "shape": [8192, 32768], "data_offsets": [off, off + bytes]}));
            off += bytes;
            map.insert(name, serde_json::json!(file));
        }
        write_sparse_from_header(&d.path().join(&file), &serde_json::Value::Object(h));
    }
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    // Resident memory (Linux): touching the mapped data would fault in pages by the gigabyte.
    let rss = || -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        statm
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 4096
    };
    let before = rss();
    let m = Model::open(d.path()).unwrap();
    let grew = rss().saturating_sub(before);
    assert_eq!(m.tensors.len(), 32);
    assert!(m.total_bytes() > 16 << 30);
    assert!(grew < 64 << 20, "opening grew RSS by {grew} bytes");
    // The check can see data being read: decoding one 512 MiB tensor does grow it.
    let before = rss();
    let bytes: u64 = m
        .with_bytes("model.layers.0.mlp.up_proj.weight", |b| {
            b.iter().map(|b| *b as u64).sum()
        })
        .unwrap()
        .unwrap();
    assert_eq!(bytes, 0);
    assert!(
        rss().saturating_sub(before) > 256 << 20,
        "the RSS probe does not see reads"
    );
}

// ---- bad input: one line naming the file and the problem, exit 2, no panic ----

fn expect_error(args: &[&str], file_part: &str, problem: &str) {
    let r = lorascope(args, &[]);
    assert_eq!(r.code, 2, "args {args:?}: stderr {}", r.stderr);
    let lines: Vec<_> = r
        .stderr
        .lines()
        .filter(|l| !l.starts_with("warning:"))
        .collect();
    assert_eq!(lines.len(), 1, "one line expected: {}", r.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    assert!(
        lines[0].contains(file_part),
        "no file `{file_part}` in: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(problem),
        "no `{problem}` in: {}",
        lines[0]
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn each_kind_of_bad_safetensors_gets_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let good = [
        f32_tensor("layers.0.q.weight", &[2, 2], &[1.0; 4]),
        f32_tensor("layers.0.k.weight", &[2, 2], &[2.0; 4]),
    ];
    write_st(&d.path().join("good.safetensors"), &good);
    let full = std::fs::read(d.path().join("good.safetensors")).unwrap();
    std::fs::write(p("truncated.safetensors"), &full[..full.len() - 3]).unwrap();
    std::fs::write(p("tiny.safetensors"), [1u8, 2, 3]).unwrap();
    write_raw(&d.path().join("pastend.safetensors"), b"{}", &[]);
    let mut b = std::fs::read(p("pastend.safetensors")).unwrap();
    b[..8].copy_from_slice(&1000u64.to_le_bytes());
    std::fs::write(p("pastend.safetensors"), b).unwrap();
    write_raw(&d.path().join("notjson.safetensors"), b"{not json}", &[]);
    write_raw(
        &d.path().join("notutf8.safetensors"),
        &[b'{', 0xff, 0xfe, b'}'],
        &[],
    );
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    write_raw(
        &d.path().join("overlap.safetensors"),
        h.as_bytes(),
        &[0; 12],
    );
    let h = r#"{"layers.0.q.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#;
    write_raw(&d.path().join("badlen.safetensors"), h.as_bytes(), &[0; 12]);
    let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    write_raw(
        &d.path().join("outofrange.safetensors"),
        h.as_bytes(),
        &[0; 4],
    );

    expect_error(
        &["inspect", &p("truncated.safetensors")],
        "truncated.safetensors",
        "truncated",
    );
    expect_error(
        &["inspect", &p("tiny.safetensors")],
        "tiny.safetensors",
        "truncated",
    );
    expect_error(
        &["inspect", &p("pastend.safetensors")],
        "pastend.safetensors",
        "past the end",
    );
    expect_error(
        &["inspect", &p("notjson.safetensors")],
        "notjson.safetensors",
        "not valid JSON",
    );
    expect_error(
        &["inspect", &p("notutf8.safetensors")],
        "notutf8.safetensors",
        "not UTF-8",
    );
    expect_error(
        &["inspect", &p("overlap.safetensors")],
        "overlap.safetensors",
        "overlap",
    );
    expect_error(
        &["inspect", &p("badlen.safetensors")],
        "badlen.safetensors",
        "does not match shape",
    );
    expect_error(
        &["inspect", &p("outofrange.safetensors")],
        "outofrange.safetensors",
        "truncated",
    );
    expect_error(
        &["inspect", &p("missing.safetensors")],
        "missing.safetensors",
        "No such file",
    );
    // A 150 MB header is refused from its length, before any of it is parsed: a sparse file,
    // so the test writes nothing but the length.
    let huge = d.path().join("huge.safetensors");
    let f = std::fs::File::create(&huge).unwrap();
    use std::io::Write;
    (&f).write_all(&150_000_000u64.to_le_bytes()).unwrap();
    f.set_len(8 + 150_000_000 + 16).unwrap();
    expect_error(
        &["inspect", huge.to_str().unwrap()],
        "huge.safetensors",
        "larger than safetensors allows",
    );
    // The tuned side is checked as strictly as the base.
    expect_error(
        &[
            "inspect",
            &p("good.safetensors"),
            &p("truncated.safetensors"),
        ],
        "truncated.safetensors",
        "truncated",
    );
}

#[test]
fn bad_shards_and_adapters_get_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_string_lossy().into_owned();
    let t = toy(d.path());
    let base = p("base");
    // Index naming a missing shard.
    std::fs::create_dir(d.path().join("sharded")).unwrap();
    std::fs::write(
        d.path().join("sharded/model.safetensors.index.json"),
        r#"{"weight_map": {"x": "model-00001-of-00002.safetensors"}}"#,
    )
    .unwrap();
    expect_error(
        &["inspect", &p("sharded")],
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
    );
    // Index naming files outside its folder: refused by name, never opened (a real shard
    // placed outside proves it is not read).
    std::fs::copy(
        d.path().join("base/model.safetensors"),
        d.path().join("outside.safetensors"),
    )
    .unwrap();
    let outside = d.path().join("outside.safetensors");
    for shard in [
        "../outside.safetensors",
        outside.to_str().unwrap(),
        "../../etc/passwd",
    ] {
        std::fs::write(
            d.path().join("sharded/model.safetensors.index.json"),
            serde_json::json!({"weight_map": {"x": shard}}).to_string(),
        )
        .unwrap();
        expect_error(
            &["inspect", &p("sharded")],
            "model.safetensors.index.json",
            "outside the model folder",
        );
    }

    // Adapter config: missing, invalid, other peft_type.
    let ad = |name: &str, cfg: Option<&str>, ts: &[T]| {
        let dir = d.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(c) = cfg {
            std::fs::write(dir.join("adapter_config.json"), c).unwrap();
        }
        write_st(&dir.join("adapter_model.safetensors"), ts);
    };
    ad("nocfg", None, &lora_tensors(&t));
    expect_error(
        &["inspect", &base, &p("nocfg")],
        "nocfg",
        "no adapter_config.json",
    );
    ad("badcfg", Some("{r: 8"), &lora_tensors(&t));
    expect_error(
        &["inspect", &base, &p("badcfg")],
        "adapter_config.json",
        "not valid JSON",
    );
    ad("ia3", Some(r#"{"peft_type": "IA3"}"#), &lora_tensors(&t));
    expect_error(
        &["inspect", &base, &p("ia3")],
        "adapter_config.json",
        "peft_type is IA3",
    );
    let good_cfg = cfg(serde_json::json!({})).to_string();
    // A/B that do not fit the base matrix.
    let mut wrong = lora_tensors(&t);
    wrong[0] = f32_tensor(
        "base_model.model.model.layers.0.attn.q.lora_A.weight",
        &[4, 7],
        &[0.0; 28],
    );
    ad("wrongshape", Some(&good_cfg), &wrong);
    expect_error(
        &["inspect", &base, &p("wrongshape")],
        "adapter_model.safetensors",
        "another base",
    );
    // Rank 0, and a DoRA magnitude that is not a vector: refused, naming the tensor.
    let pq = "base_model.model.model.layers.0.attn.q";
    let rank0 = vec![
        f32_tensor(&format!("{pq}.lora_A.weight"), &[0, 5], &[]),
        f32_tensor(&format!("{pq}.lora_B.weight"), &[6, 0], &[]),
    ];
    ad("rank0", Some(&good_cfg), &rank0);
    expect_error(&["inspect", &base, &p("rank0")], "lora_A.weight", "rank 0");
    let mut dora = lora_tensors(&t);
    dora.push(f32_tensor(
        &format!("{pq}.lora_magnitude_vector.weight"),
        &[2, 3],
        &[1.0; 6],
    ));
    ad("dora2d", Some(&good_cfg), &dora);
    expect_error(
        &["inspect", &base, &p("dora2d")],
        "lora_magnitude_vector",
        "is not a vector",
    );
    // One module stored with and without the prefix; lora_A beside lora_embedding_B.
    let mut twice = lora_tensors(&t);
    let a_again = &twice[0];
    let unprefixed = a_again
        .name
        .strip_prefix("base_model.model.")
        .unwrap()
        .to_string();
    twice.push(T {
        name: unprefixed,
        dtype: a_again.dtype,
        shape: a_again.shape.clone(),
        bytes: a_again.bytes.clone(),
    });
    ad("twice", Some(&good_cfg), &twice);
    expect_error(
        &["inspect", &base, &p("twice")],
        "lora_A.weight",
        "stores module `model.layers.0.attn.q`'s tensor again",
    );
    let mut mixed = lora_tensors(&t);
    let b = mixed.remove(1);
    mixed.push(T {
        name: format!("{pq}.lora_embedding_B"),
        ..b
    });
    ad("mixed", Some(&good_cfg), &mixed);
    expect_error(
        &["inspect", &base, &p("mixed")],
        "adapter_model.safetensors",
        "mixes lora_A/lora_B with lora_embedding_A/B",
    );
    // lora_alpha 1e308: the matrix fails with the cause named, not as an SVD that diverged.
    ad(
        "huge",
        Some(&cfg(serde_json::json!({"lora_alpha": 1e308})).to_string()),
        &lora_tensors(&t),
    );
    let r = lorascope(&["scan", &base, &p("huge"), "--no-cache"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stdout.contains("lora_A.weight") && r.stdout.contains("lora_alpha 1e308"),
        "{}",
        r.stdout
    );
    // A module the base does not have.
    let mut extra = lora_tensors(&t);
    extra.push(f32_tensor(
        "base_model.model.model.layers.0.attn.o.lora_A.weight",
        &[4, 5],
        &[0.0; 20],
    ));
    extra.push(f32_tensor(
        "base_model.model.model.layers.0.attn.o.lora_B.weight",
        &[6, 4],
        &[0.0; 24],
    ));
    ad("nomodule", Some(&good_cfg), &extra);
    expect_error(
        &["inspect", &base, &p("nomodule")],
        "adapter_model.safetensors",
        "does not have",
    );
    // Pickle adapters.
    std::fs::create_dir_all(d.path().join("pickle")).unwrap();
    std::fs::write(d.path().join("pickle/adapter_config.json"), &good_cfg).unwrap();
    std::fs::write(d.path().join("pickle/adapter_model.bin"), b"PK").unwrap();
    expect_error(
        &["inspect", &base, &p("pickle")],
        "adapter_model.bin",
        "pickle adapters are not supported",
    );
}

#[test]
fn unsupported_dtype_is_reported_when_the_tensor_is_read_not_at_open() {
    let d = tempfile::tempdir().unwrap();
    let h = r#"{"layers.0.q.weight":{"dtype":"F8_E4M3","shape":[2,2],"data_offsets":[0,4]}}"#;
    let path = d.path().join("fp8.safetensors");
    write_raw(&path, h.as_bytes(), &[0; 4]);
    let m = Model::open(&path).unwrap();
    let e = m
        .matrix::<f32>("layers.0.q.weight")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("fp8.safetensors")
            && e.contains("layers.0.q.weight")
            && e.contains("unsupported dtype F8_E4M3"),
        "{e}"
    );
}

/// The content keys' schema is pinned: caches, remembered keys and the user's flags are all
/// filed under these values, so a change to how a key is built must be deliberate (bump the
/// schema's version string and say so in the CHANGELOG), never a side effect.
#[test]
fn content_keys_of_a_known_tensor_and_adapter_are_pinned() {
    let fx = fixtures().join("minilm");
    let dense = "bert.encoder.layer.5.attention.output.dense.weight";
    let key = |tuned: &str| {
        let inputs = Inputs::open(&fx.join("base.safetensors"), &fx.join(tuned), &sel()).unwrap();
        let p = inputs.selected().find(|p| p.name == dense).unwrap();
        let base = inputs.base_key(p).unwrap();
        (
            format!("{base:032x}"),
            format!("{:032x}", inputs.tuned_key(p, base).unwrap()),
        )
    };
    let (base, lora) = key("lora-r8");
    let (base2, full) = key("full-ft.safetensors");
    assert_eq!(base, base2);
    assert_eq!(base, "0642bb16a9afb54540a979140576ee66");
    assert_eq!(lora, "0d959b1de8a7ff43dce923c6b8130860");
    assert_eq!(full, "6881b6999937fc6cd5c5849828886f0d");
    // The key the explorer's flags are filed under: both sides' content keys.
    let inputs = Inputs::open(&fx.join("base.safetensors"), &fx.join("lora-r8"), &sel()).unwrap();
    let engine = lorascope::engine::Engine::new(
        inputs,
        lorascope::cache::Cache::disabled(),
        Default::default(),
    );
    let p = engine
        .matrices()
        .into_iter()
        .find(|p| p.name == dense)
        .unwrap();
    let weights = engine.analyze(p).unwrap().weights;
    assert_eq!(
        lorascope::flags::weights_key(weights),
        "724b91e46c98e8f1f548b2b79c92620a"
    );
}

#[test]
fn a_file_that_shrinks_while_open_is_an_error_not_a_sigbus() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.safetensors");
    std::fs::copy(fixtures().join("minilm/base.safetensors"), &base).unwrap();
    let lora = fixtures().join("minilm/lora-r8");
    let inp = Inputs::open(&base, &lora, &sel()).unwrap();
    let p = inp.selected().next().unwrap().clone();
    assert!(inp.base_matrix::<f64>(&p).is_ok());
    // Rewritten in place by something else: shorter than when it was opened.
    let f = std::fs::OpenOptions::new().write(true).open(&base).unwrap();
    f.set_len(4096).unwrap();
    let e = inp.base_matrix::<f64>(&p).unwrap_err().to_string();
    assert!(
        e.contains("base.safetensors") && e.contains("shrank"),
        "{e}"
    );
    assert!(inp.check_intact().is_err());
    // A scan fails those matrices and goes on.
    let engine = lorascope::engine::Engine::new(
        inp,
        lorascope::cache::Cache::disabled(),
        Default::default(),
    );
    let s = engine.scan(1, &|_, _, _| {});
    assert!(
        s.failed() > 0
            && s.results
                .iter()
                .all(|(_, r)| r.as_ref().is_err_and(|e| e.contains("shrank")))
    );
}
