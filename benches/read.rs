//! `cargo bench --bench read`: what the checked read path costs. Every read of tensor bytes
//! checks the file before (one fstat: still as long as when opened) and after (an atomic load:
//! no page was past a truncated end). Timed against the work it guards: decoding a 4096×1024
//! F32 tensor (a 7B projection's slice) and a cold scan of one 512×512 pair. Medians of 5.

mod common;

use std::time::Instant;

use lorascope::cache::Cache;
use lorascope::checkpoint::st::StFile;
use lorascope::checkpoint::{Inputs, Selection};
use lorascope::demo::Rng;
use lorascope::engine::{Engine, Options};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, f: impl Fn()) -> f64 {
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() / reps as f64
            })
            .collect(),
    )
}

fn main() {
    let d = tempfile::tempdir().unwrap();
    let mut rng = Rng(1);
    let mut tensor = |rows: usize, cols: usize| {
        let v: Vec<f64> = (0..rows * cols).map(|_| rng.normal()).collect();
        common::f32_bytes(&v)
    };
    let big = d.path().join("big.safetensors");
    common::write_st(&big, &[("w".into(), vec![4096, 1024], tensor(4096, 1024))]);
    let (b, t) = (
        d.path().join("b.safetensors"),
        d.path().join("t.safetensors"),
    );
    let name = "model.layers.0.mlp.up_proj.weight".to_string();
    common::write_st(&b, &[(name.clone(), vec![512, 512], tensor(512, 512))]);
    common::write_st(&t, &[(name, vec![512, 512], tensor(512, 512))]);

    let f = StFile::open(&big).unwrap();
    let info = f.tensors["w"].clone();
    let check = time(100_000, || {
        std::hint::black_box(f.with_bytes(&info, |b| b.len()).unwrap());
    });
    let decode = time(20, || {
        std::hint::black_box(f.decode::<f32>("w").unwrap());
    });
    let scan = time(3, || {
        let inputs = Inputs::open(&b, &t, &Selection::default()).unwrap();
        let e = Engine::new(inputs, Cache::disabled(), Options::default());
        assert_eq!(e.scan(1, &|_, _, _| {}).results.len(), 1);
    });
    println!("checks per read             {:>10.0} ns", check * 1e9);
    println!(
        "decode 4096×1024 F32        {:>10.3} ms  (checks: {:.4} %)",
        decode * 1e3,
        100.0 * check / decode
    );
    // A pair reads each side once.
    println!(
        "cold scan of a 512×512 pair {:>10.3} ms  (checks: {:.5} %)",
        scan * 1e3,
        100.0 * 2.0 * check / scan
    );
}
