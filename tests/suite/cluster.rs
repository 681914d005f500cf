//! `cache warm` on a simulated job array: N processes sharing one cache folder, plus a
//! duplicate worker, end with the same files as one process; each did about 1/N of the work;
//! a scan afterwards decomposes no base matrix. And pruning beside a running scan.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

/// A base of 4 blocks of LLaMA-like names and mixed shapes (96² and 96×208 / 208×96), and a
/// full fine-tune of it.
fn models(dir: &Path) -> (String, String) {
    let mut rng = Rng(23);
    let (h, i) = (96, 208);
    let mut base = Vec::new();
    let mut tuned = Vec::new();
    for b in 0..4 {
        for (m, r, c) in [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, h),
            ("self_attn.v_proj", h, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", i, h),
            ("mlp.up_proj", i, h),
            ("mlp.down_proj", h, i),
        ] {
            let name = format!("model.layers.{b}.{m}.weight");
            let w = rng.vec(r * c, 1.0);
            let d = rng.vec(r * c, 0.05);
            let t: Vec<f32> = w.iter().zip(&d).map(|(x, y)| x + y).collect();
            base.push(f32_tensor(&name, &[r, c], &w));
            tuned.push(f32_tensor(&name, &[r, c], &t));
        }
    }
    let (b, t) = (dir.join("base.safetensors"), dir.join("tuned.safetensors"));
    write_st(&b, &base);
    write_st(&t, &tuned);
    (b.display().to_string(), t.display().to_string())
}

/// Every file of a cache folder: name → (bytes, inode).
fn files(cache: &Path) -> BTreeMap<String, (Vec<u8>, u64)> {
    std::fs::read_dir(cache.join("v3"))
        .unwrap()
        .flatten()
        .map(|e| {
            let p = e.path();
            (
                e.file_name().to_string_lossy().into_owned(),
                (std::fs::read(&p).unwrap(), e.metadata().unwrap().ino()),
            )
        })
        .collect()
}

fn warm_process(base: &str, cache: &Path, shard: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(["cache", "warm", base, "--jobs", "1", "--shard", shard])
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// (matrices of this shard, % of the cost, decomposed, already cached) from a worker's log.
fn parse_log(out: &str) -> (usize, f64, usize, usize) {
    let first = out.lines().next().unwrap();
    let words: Vec<&str> = first.split_whitespace().collect();
    // "shard 1/3: 9 of 28 matrices, 33.4 % of the estimated cost"
    assert_eq!(words[0], "shard", "{out}");
    let n: usize = words[2].parse().unwrap();
    let pct: f64 = words[6].parse().unwrap();
    let last = out.lines().last().unwrap();
    // "cache warm: 9 decomposed, 0 already cached, 0 failed in 0.3 s"
    let w: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(w[..2], ["cache", "warm:"], "{out}");
    (n, pct, w[2].parse().unwrap(), w[4].parse().unwrap())
}

/// `cache info --format json` of a cache folder.
fn info(cache: &Path) -> serde_json::Value {
    let r = lorascope(
        &[
            "cache",
            "info",
            "--format",
            "json",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn sharded_workers_on_one_folder_end_with_what_one_worker_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (base, tuned) = models(dir.path());
    let (one, many) = (dir.path().join("one"), dir.path().join("many"));

    // A budget below one matrix: they run one at a time, all complete.
    let r = lorascope(
        &[
            "cache",
            "warm",
            &base,
            "--memory",
            "64K",
            "--cache-dir",
            one.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(parse_log(&r.stdout), (28, 100.0, 28, 0), "{}", r.stdout);

    // Three workers and a duplicate of the second, all at once.
    let n = 3;
    let mut children: Vec<_> = (0..n)
        .map(|i| warm_process(&base, &many, &format!("{i}/{n}")))
        .collect();
    children.push(warm_process(&base, &many, "1/3"));
    let logs: Vec<String> = children
        .into_iter()
        .map(|c| {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        })
        .collect();
    let parsed: Vec<_> = logs.iter().map(|l| parse_log(l)).collect();
    // Disjoint and covering: the three shards' counts add up; each about a third of the cost.
    assert_eq!(
        parsed[..3].iter().map(|p| p.0).sum::<usize>(),
        28,
        "{logs:?}"
    );
    for (p, log) in parsed.iter().zip(&logs) {
        assert!((28.0..=39.0).contains(&p.1), "{log}");
        // Every matrix of the shard was decomposed here or found done by its twin.
        assert_eq!(p.2 + p.3, p.0, "{log}");
    }
    assert_eq!(parsed[3].0, parsed[1].0);

    let (a, b) = (files(&one), files(&many));
    // Remembered content keys (.lsr) are written only for files unchanged for 2 s (see
    // `st::identity`), so which runs wrote them depends on timing; where two did, they agree.
    let entries = |m: &BTreeMap<String, (Vec<u8>, u64)>| -> Vec<String> {
        m.keys().filter(|k| !k.ends_with(".lsr")).cloned().collect()
    };
    assert_eq!(entries(&a), entries(&b), "different entries");
    for (name, (bytes, _)) in &a {
        if let Some((other, _)) = b.get(name) {
            assert!(other == bytes, "{name} differs");
        }
    }
    // 28 decompositions, one label.
    let count = |ext: &str| a.keys().filter(|k| k.ends_with(ext)).count();
    assert_eq!((count(".lsd"), count(".lsb")), (28, 1));

    // A re-run with another N finds everything done.
    let r = lorascope(
        &[
            "cache",
            "warm",
            &base,
            "--shard",
            "1/2",
            "--cache-dir",
            many.to_str().unwrap(),
        ],
        &[],
    );
    let (n1, _, computed, cached) = parse_log(&r.stdout);
    assert_eq!((computed, cached), (0, n1), "{}", r.stdout);

    // A scan of a fine-tune reads every base decomposition: none is written again.
    let r = lorascope(
        &[
            "scan",
            &base,
            &tuned,
            "--format",
            "json",
            "--cache-dir",
            many.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let after = files(&many);
    for (name, (bytes, ino)) in b.iter().filter(|(n, _)| n.ends_with(".lsd")) {
        assert_eq!(after[name].1, *ino, "{name} was rewritten by the scan");
        assert!(after[name].0 == *bytes);
    }
    assert!(after.len() > b.len(), "the tuned side was not cached");

    // Info lists the base with every file.
    let v = info(&many);
    let bases = v["bases"].as_array().unwrap();
    assert_eq!(bases.len(), 1, "{v}");
    let stored = files(&many).keys().filter(|k| !k.ends_with(".lsb")).count();
    assert_eq!(bases[0]["entries"].as_u64().unwrap() as usize, stored);
    assert!(bases[0]["base"]
        .as_str()
        .unwrap()
        .ends_with("base.safetensors"));
}

#[test]
fn prune_verify_and_the_size_warning_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (base, tuned) = models(dir.path());
    let cache = dir.path().join("c");
    let c = cache.to_str().unwrap();
    // Over a 1 KiB limit: the scan says so on stderr, once, with the way out; `off` silences it.
    let r = lorascope(
        &["scan", &base, &tuned, "--format", "json", "--cache-dir", c],
        &[("LORASCOPE_CACHE_WARN_SIZE", "1K")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("cache prune --max-size").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("above 1.0 KiB"), "{}", r.stderr);
    let r = lorascope(
        &["cache", "warm", &base, "--cache-dir", c],
        &[("LORASCOPE_CACHE_WARN_SIZE", "off")],
    );
    assert_eq!(r.stderr, "");
    assert!(
        r.stdout.contains("0 decomposed, 28 already cached"),
        "{}",
        r.stdout
    );

    // Verify: one flipped byte in one entry; exit 1, that file named and removed.
    let entries: Vec<_> = std::fs::read_dir(cache.join("v3"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lsd"))
        .collect();
    let n = entries.len();
    let mut b = std::fs::read(&entries[0]).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&entries[0], b).unwrap();
    let r = lorascope(&["cache", "verify", "--cache-dir", c], &[]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stdout.contains(", 1 damaged"), "{}", r.stdout);
    assert!(
        r.stderr.contains(&entries[0].display().to_string()),
        "{}",
        r.stderr
    );
    assert!(!entries[0].exists());
    let r = lorascope(&["cache", "verify", "--cache-dir", c], &[]);
    assert_eq!(r.code, 0, "{}", r.stdout);

    // Prune to half the size: the least recently used go; what is left fits.
    let v = info(&cache);
    let bytes = v["bytes"].as_u64().unwrap();
    let half = format!("{}", bytes / 2);
    let r = lorascope(
        &["cache", "prune", "--max-size", &half, "--cache-dir", c],
        &[],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = info(&cache);
    assert!(v["bytes"].as_u64().unwrap() <= bytes / 2, "{v}");
    assert!(v["entries"].as_u64().unwrap() > 0, "{v}");
    let r = lorascope(&["cache", "prune", "--cache-dir", c], &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--max-size"), "{}", r.stderr);
    // Nothing unused for a day: --older-than 1 keeps all; 0 removes all.
    let r = lorascope(
        &["cache", "prune", "--older-than", "1", "--cache-dir", c],
        &[],
    );
    assert!(r.stdout.contains("removed 0 files"), "{}", r.stdout);
    let r = lorascope(
        &["cache", "prune", "--older-than", "0", "--cache-dir", c],
        &[],
    );
    assert!(r.stdout.contains("; 0 files (0 B) kept"), "{}", r.stdout);
    assert!(n > 28);
}

#[test]
fn a_scan_beside_a_pruning_loop_completes_with_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let (base, tuned) = models(dir.path());
    let cache = dir.path().join("c");
    let c = cache.to_str().unwrap();
    let args = ["scan", &base, &tuned, "--format", "csv", "--cache-dir", c];
    let cold = lorascope(&args, &[]);
    assert_eq!(cold.code, 0, "{}", cold.stderr);
    // While scans run, another process empties the cache again and again.
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = lorascope(
                    &["cache", "prune", "--max-size", "1", "--cache-dir", c],
                    &[],
                );
                assert_eq!(r.code, 0, "{}", r.stderr);
            }
        });
        for _ in 0..3 {
            let r = lorascope(&args, &[]);
            assert_eq!(r.code, 0, "{}", r.stderr);
            assert_eq!(r.stdout, cold.stdout);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
