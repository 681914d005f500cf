//! `cargo bench --bench cold`: the cold base decomposition (every vector of one side, f64, the
//! Gram route) beside NumPy's Gram + `eigh` (LAPACK `dsyevd`) on the same matrices, and the ratio.
//! Each matrix is written once to a temporary file that the NumPy side reads, so both decompose
//! the same numbers; the two sides alternate, best of LORASCOPE_BENCH_RUNS (default 2).
//!
//! Both sides run on one core (OPENBLAS_NUM_THREADS=1; `Par::Seq`), as a scan runs each matrix,
//! then on every core (`Par::rayon(0)`, OpenBLAS's default), as `cache warm` of one matrix can.
//! LORASCOPE_BENCH_SHAPES picks shapes (e.g. `2048x2048,4096x4096`); the default is the issue's
//! four: 2048², 4096², 11008×4096 and 4096×11008 (about 15 min on 2 cores). The phases of
//! lorascope's side (Gram product, eigensolver, U = A·V) are printed too. Needs python3 with
//! numpy; without it only lorascope's side runs.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use faer::{MatRef, Par};
use lorascope::demo::Rng;
use lorascope::spectral::{self, Side};

const NUMPY: &str = r#"
import sys, time, numpy as np
m, n = int(sys.argv[2]), int(sys.argv[3])
a = np.fromfile(sys.argv[1], dtype="<f8").reshape(m, n)
t = time.perf_counter()
if m <= n:
    s2, u = np.linalg.eigh(a @ a.T)
else:
    s2, v = np.linalg.eigh(a.T @ a)
    u = (a @ v) / np.sqrt(np.maximum(s2, 1e-300))
print(time.perf_counter() - t)
"#;

fn numpy(path: &std::path::Path, (m, n): (usize, usize), threads: usize) -> Option<f64> {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", NUMPY])
        .arg(path)
        .args([m.to_string(), n.to_string()])
        // Older OpenBLAS builds need these on some CPUs; they slow a current one (see env docs).
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE");
    if threads > 0 {
        cmd.env("OPENBLAS_NUM_THREADS", threads.to_string());
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// lorascope's two phases on their own (Gram product, eigendecomposition), seconds: where the
/// time goes, and with `faer` calls alone inside them, a reproducer for upstream.
fn phases(w: &lorascope::matrix::Dense<f64>, par: Par) -> (f64, f64) {
    let a = MatRef::from_row_major_slice(&w.data, w.rows, w.cols);
    let t = Instant::now();
    let gram = spectral::gram_lower(a, par);
    let g = t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::hint::black_box(spectral::symmetric_eigen(gram, par).unwrap());
    (g, t.elapsed().as_secs_f64())
}

fn main() {
    let shapes: Vec<(usize, usize)> = std::env::var("LORASCOPE_BENCH_SHAPES")
        .unwrap_or_else(|_| "2048x2048,4096x4096,11008x4096,4096x11008".into())
        .split(',')
        .map(|s| {
            let (m, n) = s.split_once('x').expect("shapes look like 2048x2048");
            (m.trim().parse().unwrap(), n.trim().parse().unwrap())
        })
        .collect();
    let runs: usize = std::env::var("LORASCOPE_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("best of {runs}; numpy = Gram + eigh (dsyevd), f64; ratio = lorascope / numpy");
    println!(
        "{:>11}  {:>5}  {:>11}  {:>8}  {:>6}  {:>7}  {:>7}",
        "matrix", "cores", "lorascope s", "numpy s", "ratio", "gram s", "eigen s"
    );
    for (m, n) in shapes {
        let w = Rng(7).dense(m, n);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = w.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        file.write_all(&bytes).unwrap();
        drop(bytes);
        for (threads, par) in [(1, Par::Seq), (cores, Par::rayon(0))] {
            let (mut ours, mut theirs) = (f64::INFINITY, None::<f64>);
            for _ in 0..runs {
                let t = Instant::now();
                let d = spectral::decompose_gram(&w, Side::Left, usize::MAX, par).unwrap();
                assert!(d.is_some(), "a Gaussian matrix is well conditioned");
                drop(d);
                ours = ours.min(t.elapsed().as_secs_f64());
                if let Some(s) = numpy(file.path(), (m, n), threads) {
                    theirs = Some(theirs.map_or(s, |b: f64| b.min(s)));
                }
            }
            let (g, e) = phases(&w, par);
            let (np, ratio) = match theirs {
                Some(s) => (format!("{s:.2}"), format!("{:.2}", ours / s)),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{:>11}  {threads:>5}  {ours:>11.2}  {np:>8}  {ratio:>6}  {g:>7.2}  {e:>7.2}",
                format!("{m}×{n}")
            );
        }
    }
}
