//! Property tests: random valid checkpoints round-trip through `inspect` and `scan`; random
//! byte mutations of valid files never panic and either succeed or give a one-line error.

use proptest::prelude::*;

use crate::common::*;
use crate::common::{Rng, RngExt};

/// One tensor of a random checkpoint: a unique name, a shape, a dtype.
#[derive(Debug, Clone)]
struct Spec {
    name: String,
    rows: usize,
    cols: usize,
    dtype: &'static str,
}

fn specs() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(
        (
            "[a-z]{1,5}(\\.[0-9]{1,2})?",
            1usize..12,
            1usize..12,
            prop::sample::select(vec!["F32", "F16", "BF16"]),
        ),
        1..5,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            // The index keeps names unique.
            .map(|(i, (n, rows, cols, dtype))| Spec {
                name: format!("{n}.m{i}.weight"),
                rows,
                cols,
                dtype,
            })
            .collect()
    })
}

/// The tensor as written, and its values as stored (rounded to the dtype).
fn tensor(s: &Spec, vals: &[f32]) -> (T, Vec<f32>) {
    let shape = [s.rows, s.cols];
    match s.dtype {
        "F16" => (
            f16_tensor(&s.name, &shape, vals),
            vals.iter()
                .map(|v| half::f16::from_f32(*v).to_f32())
                .collect(),
        ),
        "BF16" => (
            bf16_tensor(&s.name, &shape, vals),
            vals.iter()
                .map(|v| half::bf16::from_f32(*v).to_f32())
                .collect(),
        ),
        _ => (f32_tensor(&s.name, &shape, vals), vals.to_vec()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_valid_checkpoints_round_trip_through_inspect_and_scan(
        specs in specs(),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let d = tempfile::tempdir().unwrap();
        let (b, t) = (d.path().join("b.safetensors"), d.path().join("t.safetensors"));
        let (mut base, mut tuned, mut stored) = (vec![], vec![], vec![]);
        for s in &specs {
            let w0 = rng.vec(s.rows * s.cols, 1.0);
            let w: Vec<f32> = w0.iter().zip(rng.vec(w0.len(), 0.1)).map(|(a, e)| a + e).collect();
            let (tb, vb) = tensor(s, &w0);
            base.push(tb);
            stored.push(vb);
            tuned.push(tensor(s, &w).0);
        }
        write_st(&b, &base);
        write_st(&t, &tuned);

        // Read back: every tensor, its shape and its values as stored.
        let m = lorascope::checkpoint::Model::open(&b).unwrap();
        prop_assert_eq!(m.tensors.len(), specs.len());
        for (s, v) in specs.iter().zip(&stored) {
            prop_assert_eq!(&m.tensors[&s.name].info.shape, &vec![s.rows, s.cols]);
            prop_assert_eq!(&m.decode::<f32>(&s.name).unwrap(), v);
        }

        let (bs, ts) = (b.to_str().unwrap(), t.to_str().unwrap());
        let r = lorascope(&["inspect", bs, ts, "--format", "json", "--include", "."], &[]);
        prop_assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        prop_assert_eq!(v["selected"].as_u64(), Some(specs.len() as u64));
        for s in &specs {
            let p = v["tensors"].as_array().unwrap().iter().find(|p| p["name"] == s.name);
            prop_assert!(p.is_some(), "{} missing from inspect", s.name);
            prop_assert_eq!(&p.unwrap()["shape"], &serde_json::json!([s.rows, s.cols]));
        }

        let r = lorascope(&["scan", bs, ts, "--format", "json", "--no-cache", "--include", "."], &[]);
        prop_assert_eq!(r.code, 0, "{}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        prop_assert_eq!(v["matrices_analysed"].as_u64(), Some(specs.len() as u64));
        let mut total = 0;
        for s in &specs {
            let x = v["matrices"].as_array().unwrap().iter().find(|x| x["name"] == s.name).unwrap();
            prop_assert_eq!(&x["shape"], &serde_json::json!([s.rows, s.cols]));
            let cos: Vec<f64> = x["max_cos"].as_array().unwrap().iter().map(|c| c.as_f64().unwrap()).collect();
            // The top k of a rank-min(m, n) matrix; each a |cos| of unit vectors.
            prop_assert_eq!(cos.len(), s.rows.min(s.cols).min(10));
            prop_assert!(cos.iter().all(|c| (0.0..=1.0 + 1e-5).contains(c)), "{:?}", cos);
            // The count is the rule applied to what is listed, testable vectors only.
            let testable = cos.len() - x["untestable"].as_u64().unwrap() as usize;
            let want: Vec<usize> = (0..testable).filter(|&j| cos[j] < 0.5).collect();
            let got: Vec<usize> = x["rule_intruders"].as_array().unwrap().iter().map(|j| j.as_u64().unwrap() as usize).collect();
            prop_assert_eq!(&got, &want);
            total += got.len();
        }
        prop_assert_eq!(v["total_rule_intruders"].as_u64(), Some(total as u64));
    }
}

/// A byte-level change to a file.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// A new header length (the first 8 bytes).
    HeaderLen(u64),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        prop_oneof![any::<u64>(), 0u64..4096].prop_map(Mutation::HeaderLen),
    ];
    prop::collection::vec(one, 1..6)
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = b.len().max(1);
        match m {
            Mutation::Set(i, v) if !b.is_empty() => b[i % n] = *v,
            Mutation::Flip(i, bit) if !b.is_empty() => b[i % n] ^= 1 << bit,
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % (b.len() + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::HeaderLen(x) if b.len() >= 8 => b[..8].copy_from_slice(&x.to_le_bytes()),
            _ => {}
        }
    }
    b
}

/// A valid small checkpoint's bytes: the text of a header is where most mutations matter.
fn valid_file() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.safetensors");
    let mut rng = Rng(9);
    write_st(
        &p,
        &[
            f32_tensor("l.0.q.weight", &[6, 5], &rng.vec(30, 1.0)),
            bf16_tensor("l.0.v.weight", &[4, 6], &rng.vec(24, 1.0)),
            f16_tensor("l.1.q.weight", &[3, 3], &rng.vec(9, 1.0)),
        ],
    );
    std::fs::read(p).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn byte_mutations_of_a_checkpoint_never_panic(ms in mutations()) {
        let d = tempfile::tempdir().unwrap();
        // Panics (from lorascope, or the entry's own one-line check) fail the case.
        lorascope::fuzz::safetensors(d.path(), &mutate(valid_file(), &ms));
    }

    #[test]
    fn byte_mutations_of_an_adapter_and_an_index_never_panic(ms in mutations()) {
        let d = tempfile::tempdir().unwrap();
        let config = std::fs::read(fixtures().join("minilm/lora-r8/adapter_config.json")).unwrap();
        let tensors = std::fs::read(fixtures().join("minilm/lora-r8/adapter_model.safetensors")).unwrap();
        let base = fixtures().join("minilm/base.safetensors");
        // Mutations land in the config and the tensors alike.
        let mut data = (config.len() as u16).to_le_bytes().to_vec();
        data.extend(config);
        data.extend(tensors);
        lorascope::fuzz::adapter(d.path(), &base, &mutate(data, &ms));
        let index = br#"{"metadata":{"total_size":128},"weight_map":{"x.weight":"a.safetensors","y.weight":"b.safetensors"}}"#;
        lorascope::fuzz::index(d.path(), &mutate(index.to_vec(), &ms));
        let mut entry = b"LSCDEC02".to_vec();
        entry.extend(0u128.to_le_bytes());
        for x in [3u64, 2, 3] {
            entry.extend(x.to_le_bytes());
        }
        entry.extend([3.0f64, 2.0, 1.0].iter().flat_map(|x| x.to_le_bytes()));
        entry.extend([0.5f32; 6].iter().flat_map(|x| x.to_le_bytes()));
        lorascope::fuzz::cache_entry(&mutate(entry, &ms));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// The binary on mutated files: an exit code, never a signal; one line on exit 2.
    #[test]
    fn scan_of_a_mutated_checkpoint_exits_cleanly(ms in mutations()) {
        let d = tempfile::tempdir().unwrap();
        let (b, t) = (d.path().join("b.safetensors"), d.path().join("t.safetensors"));
        std::fs::write(&b, valid_file()).unwrap();
        std::fs::write(&t, mutate(valid_file(), &ms)).unwrap();
        let r = lorascope(&["scan", b.to_str().unwrap(), t.to_str().unwrap(), "--no-cache", "--include", "."], &[]);
        prop_assert!([0, 2, 3].contains(&r.code), "exit {}: {}", r.code, r.stderr);
        if r.code == 2 {
            prop_assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
            prop_assert!(r.stderr.starts_with("error: "), "{}", r.stderr);
        }
    }
}

/// Found by fuzzing: a shard named with a line break split the error in two.
#[test]
fn an_index_naming_a_shard_with_a_line_break_fails_on_one_line() {
    let d = tempfile::tempdir().unwrap();
    let index = br#"{"metadata": {"tot__size": 127}, "weight_map": {"x.weight": "bfet.ssa\\8.\nrsoe", "9.weighght": "bfet.saensors", "y.weight": "bfet.saensor.teraensors"}}"#;
    lorascope::fuzz::index(d.path(), index);
    let e = lorascope::checkpoint::Model::open(d.path())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(r"bfet.ssa\8.\u{a}rsoe") && !e.contains('\n'),
        "{e}"
    );
}
