//! A small demo pair generated deterministically on first use: one base model, a LoRA adapter
//! that plants intruders in its last two blocks, and a full fine-tune that plants none.

use std::path::{Path, PathBuf};

use faer::Mat;

pub use crate::rng::Rng;

const HIDDEN: usize = 128;
const MLP: usize = 256;
const BLOCKS: usize = 4;
const RANK: usize = 4;
/// Bump when the generated files change, so old copies are not reused.
const DEMO_VERSION: &str = "demo-v1";

fn modules() -> Vec<(&'static str, usize, usize)> {
    vec![
        ("self_attn.q_proj", HIDDEN, HIDDEN),
        ("self_attn.k_proj", HIDDEN, HIDDEN),
        ("self_attn.v_proj", HIDDEN, HIDDEN),
        ("self_attn.o_proj", HIDDEN, HIDDEN),
        ("mlp.up_proj", MLP, HIDDEN),
        ("mlp.down_proj", HIDDEN, MLP),
    ]
}

/// W0 = X·diag(σ)·Yᵀ with random orthonormal X, Y and a decaying spectrum, so the top
/// singular vectors are well separated.
fn base_matrix(rng: &mut Rng, m: usize, n: usize) -> Mat<f64> {
    let p = m.min(n);
    let x = rng.gaussian(m, p, 1.0).qr().compute_thin_Q();
    let y = rng.gaussian(n, p, 1.0).qr().compute_thin_Q();
    let s = Mat::from_fn(p, p, |i, j| {
        if i == j {
            1.0 / (1.0 + 0.15 * i as f64)
        } else {
            0.0
        }
    });
    x * s * y.transpose()
}

fn st_bytes(tensors: &[(String, Vec<usize>, &str, Vec<u8>)]) -> Vec<u8> {
    let entries: Vec<_> = tensors
        .iter()
        .map(|(n, shape, dtype, data)| (n.clone(), dtype.to_string(), shape.clone(), data.len()))
        .collect();
    let mut meta = serde_json::Map::new();
    meta.insert("format".into(), "pt".into());
    let mut out = crate::checkpoint::st::header(&entries, meta);
    for t in tensors {
        out.extend(&t.3);
    }
    out
}

fn f32_bytes(m: &Mat<f64>) -> Vec<u8> {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
        .flat_map(|(i, j)| (m[(i, j)] as f32).to_le_bytes())
        .collect()
}

fn bf16_bytes(m: &Mat<f64>) -> Vec<u8> {
    (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
        .flat_map(|(i, j)| half::bf16::from_f64(m[(i, j)]).to_le_bytes())
        .collect()
}

use crate::fsio::write_atomic;

/// Paths of the demo's base, LoRA adapter and full fine-tune.
pub struct DemoPaths {
    pub base: PathBuf,
    pub lora: PathBuf,
    pub full: PathBuf,
}

/// Generate the demo under `root` (idempotent: reuses a complete earlier copy).
pub fn ensure(root: &Path) -> std::io::Result<DemoPaths> {
    let dir = root.join(DEMO_VERSION);
    let paths = DemoPaths {
        base: dir.join("base"),
        lora: dir.join("lora-r4"),
        full: dir.join("full-ft"),
    };
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(paths);
    }
    for d in [&paths.base, &paths.lora, &paths.full] {
        std::fs::create_dir_all(d)?;
    }
    let mut rng = Rng(0x10ba_5c0e);
    let (mut base, mut full, mut lora) = (vec![], vec![], vec![]);
    for block in 0..BLOCKS {
        for (module, m, n) in modules() {
            let name = format!("model.layers.{block}.{module}");
            let w0 = base_matrix(&mut rng, m, n);
            // Full fine-tune: a small dense update, spread over all directions.
            let full_w = &w0 + rng.gaussian(m, n, 0.01 / (n as f64).sqrt());
            // LoRA: a rank-4 update with random directions; in the last two blocks it is
            // as strong as the base's top singular value, which makes intruders.
            let strength = if block >= 2 { 0.45 } else { 0.05 };
            let b = rng.gaussian(m, RANK, strength / (m as f64).sqrt());
            let a = rng.gaussian(RANK, n, 1.0 / (n as f64).sqrt());
            base.push((format!("{name}.weight"), vec![m, n], "F32", f32_bytes(&w0)));
            full.push((
                format!("{name}.weight"),
                vec![m, n],
                "BF16",
                bf16_bytes(&full_w),
            ));
            lora.push((
                format!("base_model.model.{name}.lora_A.weight"),
                vec![RANK, n],
                "F32",
                f32_bytes(&a),
            ));
            lora.push((
                format!("base_model.model.{name}.lora_B.weight"),
                vec![m, RANK],
                "F32",
                f32_bytes(&b),
            ));
        }
        let norm = Mat::from_fn(1, HIDDEN, |_, _| 1.0);
        base.push((
            format!("model.layers.{block}.input_layernorm.weight"),
            vec![HIDDEN],
            "F32",
            f32_bytes(&norm),
        ));
        full.push((
            format!("model.layers.{block}.input_layernorm.weight"),
            vec![HIDDEN],
            "BF16",
            bf16_bytes(&norm),
        ));
    }
    write_atomic(&paths.base.join("model.safetensors"), &st_bytes(&base))?;
    write_atomic(&paths.full.join("model.safetensors"), &st_bytes(&full))?;
    write_atomic(
        &paths.lora.join("adapter_model.safetensors"),
        &st_bytes(&lora),
    )?;
    let cfg = serde_json::json!({
        "peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK, "use_rslora": false,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
        "base_model_name_or_path": "lorascope-demo-base", "fan_in_fan_out": false,
    });
    write_atomic(
        &paths.lora.join("adapter_config.json"),
        serde_json::to_string_pretty(&cfg)?.as_bytes(),
    )?;
    write_atomic(&done, b"")?;
    Ok(paths)
}
