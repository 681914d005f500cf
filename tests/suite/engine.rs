//! The engine on the real MiniLM slices against the NumPy reference, and the cache's
//! promises: nothing decomposed twice, damaged entries recomputed, content addressing.

use crate::common::*;
use lorascope::cache::Cache;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::engine::{Engine, MatrixReport, Options, FAST_MIN_DIM};
use lorascope::spectral::Rule;
use lorascope::spectral::Side;
use std::path::Path;

fn engine(base: &Path, tuned: &Path, cache: Cache, side: Side) -> Engine {
    engine_with(
        base,
        tuned,
        cache,
        Options {
            side,
            ..Options::default()
        },
    )
}

fn engine_with(base: &Path, tuned: &Path, cache: Cache, opts: Options) -> Engine {
    let inputs = Inputs::open(base, tuned, &Selection::default()).unwrap();
    Engine::new(inputs, cache, opts)
}

fn reports(e: &Engine) -> Vec<MatrixReport> {
    e.scan(2, &|_, _, _| {})
        .results
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect()
}

fn reference() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("minilm/reference.json")).unwrap(),
    )
    .unwrap()
}

#[test]
fn minilm_cj_match_the_numpy_reference() {
    let f = fixtures().join("minilm");
    let r = reference();
    for (run, tuned) in [
        ("lora-r8", f.join("lora-r8")),
        ("full-ft", f.join("full-ft.safetensors")),
    ] {
        // 384×384 matrices take full SVDs by default; fast_min_dim = 0 forces the top-k solvers
        // (Krylov for the full fine-tune, the route that never forms W for the adapter).
        for (side, key, fast_min_dim) in [
            (Side::Left, "left", FAST_MIN_DIM),
            (Side::Right, "right", FAST_MIN_DIM),
            (Side::Left, "left", 0),
            (Side::Right, "right", 0),
        ] {
            let opts = Options {
                side,
                fast_min_dim,
                ..Options::default()
            };
            let e = engine_with(&f.join("base.safetensors"), &tuned, Cache::disabled(), opts);
            let reps = reports(&e);
            assert_eq!(reps.len(), 2);
            for m in &reps {
                let fast = fast_min_dim == 0;
                assert_eq!(m.sigma_tuned.len(), if fast { 32 } else { 384 });
                let want: Vec<f64> = serde_json::from_value(r[run][&m.name][key].clone()).unwrap();
                let got = &m.max_cos()[..10];
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-4, "{run} {key} {}: |Δc| = {err}", m.name);
            }
        }
    }
    // The one intruder of the LoRA run at ε = 0.5 (c_0 = 0.185 in the reference).
    let e = engine(
        &f.join("base.safetensors"),
        &f.join("lora-r8"),
        Cache::disabled(),
        Side::Left,
    );
    let reps = reports(&e);
    let hit: Vec<_> = reps
        .iter()
        .map(|m| (m.name.as_str(), m.intruders(&Rule::default())))
        .filter(|(_, i)| !i.is_empty())
        .collect();
    assert_eq!(
        hit,
        [(
            "bert.encoder.layer.5.attention.output.dense.weight",
            vec![0]
        )]
    );
    let v = &reps[0].vectors[0];
    assert!(v.sigma_ratio == 1.0 && v.best_base_sigma > 0.0);
    // LoRA r=8: ΔW has rank ≤ 8, so its effective rank is at most 8.
    assert!(reps.iter().all(|m| m
        .delta_effective_rank
        .is_some_and(|r| r > 1.0 && r <= 8.0 + 1e-9)));
}

#[test]
fn a_memory_budget_smaller_than_one_matrix_still_scans_one_at_a_time() {
    let f = fixtures().join("minilm");
    let (base, tuned) = (f.join("base.safetensors"), f.join("lora-r8"));
    let free = reports(&engine(&base, &tuned, Cache::disabled(), Side::Left));
    let opts = Options {
        memory: 1,
        ..Options::default()
    };
    let e = engine_with(&base, &tuned, Cache::disabled(), opts);
    let pair = e.matrices()[0];
    // 384×384 in f64: the estimate covers the decoded matrix and the Gram route's buffers.
    assert!(e.memory_estimate(pair) >= 8 * 384 * 384 * 3);
    let tight = reports(&e);
    assert_eq!(tight.len(), free.len());
    for (a, b) in tight.iter().zip(&free) {
        assert_eq!(a.max_cos(), b.max_cos());
    }
}

#[test]
fn adapter_and_its_peft_merged_twin_give_the_same_cj() {
    let f = fixtures().join("minilm");
    let a = reports(&engine(
        &f.join("base.safetensors"),
        &f.join("lora-r8"),
        Cache::disabled(),
        Side::Left,
    ));
    let b = reports(&engine(
        &f.join("base.safetensors"),
        &f.join("lora-r8-merged.safetensors"),
        Cache::disabled(),
        Side::Left,
    ));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        for (c, d) in x.max_cos().iter().zip(y.max_cos()) {
            assert!((c - d).abs() < 1e-5, "{}: {c} vs {d}", x.name);
        }
        // The low-rank route (adapter) and the dense route (merged) agree on ΔW too.
        assert!((x.delta_effective_rank.unwrap() - y.delta_effective_rank.unwrap()).abs() < 1e-3);
        assert!((x.delta_rel_norm - y.delta_rel_norm).abs() < 1e-6);
    }
}

#[test]
fn nothing_is_decomposed_twice_across_runs_adapters_and_copies() {
    let f = fixtures().join("minilm");
    let dir = tempfile::tempdir().unwrap();
    let base = f.join("base.safetensors");
    let first = engine(
        &base,
        &f.join("lora-r8"),
        Cache::open(dir.path()),
        Side::Left,
    );
    let a = reports(&first);
    // Per matrix: base, tuned. (ΔW's spectrum comes from the adapter's r×r core, counted too.)
    assert_eq!(first.decompositions(), 2 * 3);

    let second = engine(
        &base,
        &f.join("lora-r8"),
        Cache::open(dir.path()),
        Side::Left,
    );
    let b = reports(&second);
    assert_eq!(second.decompositions(), 0, "second run recomputed");
    // Nor are the unchanged files read again to find the keys: they are remembered by the
    // files' identities (the fixtures are older than the two seconds a file may be in writing).
    assert_eq!(first.hashed(), 2 * 2, "each matrix's base and tuned side");
    assert_eq!(second.hashed(), 0, "second run hashed the weights again");
    assert_eq!(
        a.iter().map(|m| m.max_cos()).collect::<Vec<_>>(),
        b.iter().map(|m| m.max_cos()).collect::<Vec<_>>()
    );

    // A full fine-tune of the same base reuses the base decompositions: tuned + ΔW only.
    let full = engine(
        &base,
        &f.join("full-ft.safetensors"),
        Cache::open(dir.path()),
        Side::Left,
    );
    reports(&full);
    assert_eq!(full.decompositions(), 2 * 2);
    // …and hashes only the new tuned sides: the base's keys are remembered.
    assert_eq!(full.hashed(), 2);

    // Copying and renaming the checkpoint keeps every hit (content addressing).
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(&base, copy.path().join("renamed.safetensors")).unwrap();
    let again = engine(
        &copy.path().join("renamed.safetensors"),
        &f.join("lora-r8"),
        Cache::open(dir.path()),
        Side::Left,
    );
    reports(&again);
    assert_eq!(again.decompositions(), 0);
    // A file written just now may still be in writing: hashed, not remembered.
    assert_eq!(again.hashed(), 2 * 2);

    // One changed byte in a tensor misses for that tensor only.
    let bytes = std::fs::read(&base).unwrap();
    let mut changed = bytes.clone();
    let n = changed.len();
    changed[n - 1] ^= 1; // last byte: inside classifier.bias, which is not analysed…
    std::fs::write(copy.path().join("changed.safetensors"), &changed).unwrap();
    let e = engine(
        &copy.path().join("changed.safetensors"),
        &f.join("lora-r8"),
        Cache::open(dir.path()),
        Side::Left,
    );
    reports(&e);
    assert_eq!(e.decompositions(), 0);
    let mut changed = bytes.clone();
    let hdr = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    changed[hdr + 100] ^= 1; // …the first bytes of the data section belong to an analysed matrix.
    std::fs::write(copy.path().join("changed.safetensors"), &changed).unwrap();
    let e = engine(
        &copy.path().join("changed.safetensors"),
        &f.join("lora-r8"),
        Cache::open(dir.path()),
        Side::Left,
    );
    reports(&e);
    assert_eq!(
        e.decompositions(),
        3,
        "base, tuned and ΔW of the changed matrix"
    );
}

#[test]
fn a_damaged_cache_entry_is_reported_and_recomputed() {
    let f = fixtures().join("minilm");
    let dir = tempfile::tempdir().unwrap();
    let base = f.join("base.safetensors");
    let good = reports(&engine(
        &base,
        &f.join("full-ft.safetensors"),
        Cache::open(dir.path()),
        Side::Left,
    ));
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("v3"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x != "lsb"))
        .collect();
    let ext = |p: &std::path::PathBuf| p.extension().unwrap().to_string_lossy().into_owned();
    let kinds: Vec<String> = entries.iter().map(ext).collect();
    // Six decompositions, and both sides' content keys of the two matrices remembered by the
    // files' identities.
    assert_eq!(kinds.iter().filter(|k| *k == "lsd").count(), 6, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "lsr").count(), 4, "{kinds:?}");
    // Damage every entry in a different way: flipped byte, truncation, emptiness.
    for (i, p) in entries.iter().enumerate() {
        let mut b = std::fs::read(p).unwrap();
        match i % 3 {
            0 => {
                let k = b.len() / 2;
                b[k] ^= 0xff
            }
            1 => b.truncate(b.len() - 5),
            _ => b.clear(),
        }
        std::fs::write(p, b).unwrap();
    }
    let e = engine(
        &base,
        &f.join("full-ft.safetensors"),
        Cache::open(dir.path()),
        Side::Left,
    );
    let again = reports(&e);
    assert_eq!(e.decompositions(), 6);
    // Damaged records are recomputed silently: the weights are hashed again.
    assert_eq!(e.hashed(), 4);
    let w = e.cache.take_warnings();
    assert_eq!(w.len(), 6, "{w:?}");
    assert!(w[0].contains("damaged"));
    assert_eq!(
        good.iter().map(|m| m.max_cos()).collect::<Vec<_>>(),
        again.iter().map(|m| m.max_cos()).collect::<Vec<_>>()
    );
    // The entries were rewritten whole.
    let e = engine(
        &base,
        &f.join("full-ft.safetensors"),
        Cache::open(dir.path()),
        Side::Left,
    );
    reports(&e);
    assert_eq!((e.decompositions(), e.hashed()), (0, 0));
}

#[test]
fn an_unusable_cache_location_degrades_to_no_cache_with_a_warning() {
    let f = fixtures().join("minilm");
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let e = engine(
        &f.join("base.safetensors"),
        &f.join("lora-r8"),
        Cache::open(&blocker),
        Side::Left,
    );
    assert_eq!(reports(&e).len(), 2);
    assert!(e.cache.dir().is_none());
    let w = e.cache.take_warnings();
    assert!(
        w.len() == 1 && w[0].contains("running without a cache"),
        "{w:?}"
    );
}

#[test]
fn the_whole_spectrum_on_request_extends_the_top_part_and_is_cached() {
    let f = fixtures().join("minilm");
    let dir = tempfile::tempdir().unwrap();
    let (base, lora) = (f.join("base.safetensors"), f.join("lora-r8"));
    let opts = Options {
        keep: 12,
        fast_min_dim: 64, // the top-k route on MiniLM's 384-wide matrices
        ..Options::default()
    };
    let e = engine_with(&base, &lora, Cache::open(dir.path()), opts);
    let reports = reports(&e);
    // The paper's route: full SVDs with vectors, a different faer routine.
    let full = engine_with(
        &base,
        &lora,
        Cache::disabled(),
        Options {
            fast_min_dim: usize::MAX,
            ..Options::default()
        },
    );
    let before = e.decompositions();
    for (p, r) in e.matrices().into_iter().zip(&reports) {
        assert_eq!(r.sigma_tuned.len(), 12, "{}", p.name);
        let all = e.full_spectrum(p).unwrap();
        let (m, n) = p.dims();
        assert_eq!(all.len(), m.min(n));
        assert!(all.windows(2).all(|w| w[0] >= w[1]));
        let s1 = all[0];
        for (a, b) in all.iter().zip(&r.sigma_tuned) {
            assert!((a - b).abs() <= 1e-10 * s1, "{}: {a} vs {b}", p.name);
        }
        let svd = full.analyze(p).unwrap().sigma_tuned;
        for (a, b) in all.iter().zip(&svd) {
            assert!((a - b).abs() <= 1e-10 * s1, "{}: {a} vs {b}", p.name);
        }
        // Σσ² = ‖W‖_F², from the merged weights directly.
        let w = e.inputs.tuned_matrix::<f64>(p).unwrap();
        let fro2: f64 = w.data.iter().map(|x| x * x).sum();
        let s2: f64 = all.iter().map(|s| s * s).sum();
        assert!((fro2 - s2).abs() <= 1e-10 * fro2, "{}", p.name);
    }
    let n = e.matrices().len();
    assert_eq!(e.decompositions(), before + n);
    // Asked again, here or in the next run: from the cache.
    e.full_spectrum(e.matrices()[0]).unwrap();
    assert_eq!(e.decompositions(), before + n);
    let next = engine_with(&base, &lora, Cache::open(dir.path()), opts);
    for p in next.matrices() {
        next.full_spectrum(p).unwrap();
    }
    assert_eq!(next.decompositions(), 0);
}

#[test]
fn full_fine_tune_delta_statistics_match_an_svd_of_the_difference() {
    let f = fixtures().join("minilm");
    let (base, full) = (f.join("base.safetensors"), f.join("full-ft.safetensors"));
    let (small, large) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // MiniLM's matrices are small enough to get the rank by default; from 64 on they count as
    // large: the rank only with `delta_rank`, from a report, or once cached; ‖ΔW‖ always.
    let runs = [
        (FAST_MIN_DIM, false, &small, false),
        (64, false, &large, true),
        (64, true, &large, false),
        (64, false, &large, false), // cached by the run before
    ];
    for (fast_min_dim, delta_rank, dir, skipped) in runs {
        let opts = Options {
            fast_min_dim,
            delta_rank,
            ..Options::default()
        };
        let e = engine_with(&base, &full, Cache::open(dir.path()), opts);
        for (p, r) in e.matrices().into_iter().zip(reports(&e)) {
            let w0 = e.inputs.base_matrix::<f64>(p).unwrap();
            let mut d = e.inputs.tuned_matrix::<f64>(p).unwrap();
            d.data.iter_mut().zip(&w0.data).for_each(|(x, y)| *x -= y);
            let svd = lorascope::spectral::singular_values(&d, faer::Par::Seq).unwrap();
            let er = lorascope::spectral::effective_rank(&svd);
            // A full fine-tune's ΔW has a high effective rank (MiniLM: hundreds of 384).
            assert!(er > 100.0, "{}: {er}", p.name);
            let fro = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let rel = fro(&d.data) / fro(&w0.data);
            assert!((r.delta_rel_norm - rel).abs() <= 1e-9 * rel, "{}", p.name);
            match r.delta_effective_rank {
                None => assert!(skipped, "{}", p.name),
                Some(x) => {
                    assert!(!skipped, "{}", p.name);
                    assert!((x - er).abs() <= 1e-6 * er, "{}: {x} vs {er}", p.name);
                }
            }
        }
        if skipped {
            // On request (a report's section) it is computed.
            let p = e.matrices()[0];
            let x = e.delta_effective_rank(p).unwrap();
            let r = e.analyze(p).unwrap().delta_effective_rank.unwrap();
            assert_eq!(x, r, "computed once, then cached");
            let d = e.decompositions();
            e.delta_effective_rank(p).unwrap();
            assert_eq!(e.decompositions(), d);
        }
    }
}

#[test]
fn repair_decomposes_nothing_again_after_its_scan_even_without_a_cache() {
    use lorascope::repair::{self, Chosen, Scope};
    use std::collections::BTreeMap;
    let d = tempfile::tempdir().unwrap();
    let p = lorascope::demo::ensure(d.path()).unwrap();
    let e = engine(&p.base, &p.lora, Cache::disabled(), Side::Left);
    let chosen = std::sync::Mutex::new(BTreeMap::new());
    let scan = e.scan_with(2, &|_, _, _| {}, &|r, tuned| {
        let i = r.intruders(&Rule::default());
        if !i.is_empty() {
            chosen.lock().unwrap().insert(
                r.name.clone(),
                Chosen::new(r, &i, tuned, 0.0, &lorascope::flags::UserState::default()),
            );
        }
    });
    let chosen = chosen.into_inner().unwrap();
    let before = e.decompositions();
    let settings = repair::Settings {
        lambda: 0.0,
        scope: Scope::All,
        rule: Rule::default(),
        max_shard: u64::MAX,
    };
    for out in ["repaired.safetensors", "adapter", "merged"] {
        let format = if out == "adapter" {
            repair::Format::Adapter
        } else {
            repair::Format::Merged
        };
        let target = repair::Target::new(&e.inputs, &d.path().join(out), Some(format)).unwrap();
        let (prov, _) = repair::write(&e, &chosen, &settings, &target, false, &|_, _| {}).unwrap();
        assert_eq!(e.decompositions(), before, "{out}");
        // Every intruder of the demo's adapter (blocks 2 and 3) was scaled.
        assert_eq!(prov.matrices.len(), chosen.len());
        assert_eq!(prov.count(), scan.total(&Rule::default()));
    }
    assert!(scan.total(&Rule::default()) > 0);
}

#[test]
fn tiny_matrices_skip_the_cache_and_count_as_without_it() {
    // Two tensors below the cache's threshold (63×64) and one at it (64×64).
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(3);
    let shapes = [("a", 63, 64), ("b", 64, 63), ("c", 64, 64)];
    let (mut base, mut tuned) = (vec![], vec![]);
    for (n, m, k) in shapes {
        let name = format!("model.layers.0.{n}_proj.weight");
        let w0 = rng.vec(m * k, 1.0);
        let w: Vec<f32> = w0
            .iter()
            .zip(rng.vec(m * k, 0.3))
            .map(|(a, b)| a + b)
            .collect();
        base.push(f32_tensor(&name, &[m, k], &w0));
        tuned.push(f32_tensor(&name, &[m, k], &w));
    }
    let (b, t) = (
        d.path().join("b.safetensors"),
        d.path().join("t.safetensors"),
    );
    write_st(&b, &base);
    write_st(&t, &tuned);
    // Older than the two seconds a file may still be in writing, so keys are remembered.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let cache = d.path().join("cache");
    let e = engine(&b, &t, Cache::open(&cache), Side::Left);
    let with = reports(&e);
    let entries = |ext: &str| {
        std::fs::read_dir(e.cache.dir().unwrap())
            .unwrap()
            .flatten()
            .filter(|f| f.path().extension().is_some_and(|x| x == ext))
            .count()
    };
    // Only the 64×64 matrix: its base, tuned and ΔW spectra, and its two remembered keys.
    assert_eq!((entries("lsd"), entries("lsr")), (3, 2));
    let again = engine(&b, &t, Cache::open(&cache), Side::Left);
    let warm = reports(&again);
    assert_eq!(
        again.decompositions(),
        2 * 3,
        "the tiny ones are computed again"
    );
    let without = reports(&engine(&b, &t, Cache::disabled(), Side::Left));
    for ((x, y), z) in with.iter().zip(&warm).zip(&without) {
        assert_eq!(x.max_cos(), z.max_cos(), "{}", x.name);
        assert_eq!(y.max_cos(), z.max_cos(), "{}", y.name);
    }
}

/// The full fine-tune's only intruders at ε 0.8–0.9 are layer 1's query vectors 3 and 4: a
/// rotation inside base vectors 3 and 4, whose σ are 0.16 % apart. The degenerate-aware rule
/// sees that; on the LoRA run's real intruder both rules agree.
#[test]
fn minilm_rotation_in_a_degenerate_pair_is_told_from_the_lora_intruder() {
    use lorascope::spectral::rule::RuleKind;
    let f = fixtures().join("minilm");
    let q = f.join("layer1-query");
    let e = engine(
        &q.join("base.safetensors"),
        &q.join("full-ft.safetensors"),
        Cache::disabled(),
        Side::Left,
    );
    let reps = reports(&e);
    let m = &reps[0];
    let paper = Rule::new(10, 0.9).unwrap();
    let aware = paper.with_kind(RuleKind::DegenerateAware);
    assert_eq!(m.intruders(&paper), [3, 4]);
    assert!(m.intruders(&aware).is_empty(), "{:?}", m.cos(&aware));
    for j in [3, 4] {
        let v = &m.vectors[j];
        assert!(
            (v.participation - 1.9).abs() < 0.05,
            "PR_{j} = {}",
            v.participation
        );
        assert_eq!(v.cluster_size, 2, "vector {j}");
        assert!(v.cluster_cos > 0.99, "vector {j}: {}", v.cluster_cos);
        assert!(v.best_base_index == 3 || v.best_base_index == 4);
    }
    let e = engine(
        &f.join("base.safetensors"),
        &f.join("lora-r8"),
        Cache::disabled(),
        Side::Left,
    );
    let paper = Rule::default();
    let aware = paper.with_kind(RuleKind::DegenerateAware);
    let reps = reports(&e);
    let count = |r: &Rule| reps.iter().map(|m| m.intruders(r).len()).sum::<usize>();
    assert_eq!((count(&paper), count(&aware)), (1, 1));
    let hit = reps
        .iter()
        .find(|m| !m.intruders(&paper).is_empty())
        .unwrap();
    assert!(hit.name.contains("layer.5.attention.output.dense"));
    assert!(
        hit.vectors[0].participation > 50.0,
        "{}",
        hit.vectors[0].participation
    );
}
