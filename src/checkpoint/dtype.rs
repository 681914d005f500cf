//! The one place where stored bytes become numbers (exact for F32/F16/BF16/F64: widening
//! conversions are exact; F64→f32 rounds to nearest), independent of alignment; and numbers
//! bytes, for the files lorascope writes.

use half::f16;
use half::slice::HalfFloatSliceExt;
use safetensors::Dtype;

pub use crate::matrix::{zeroed, Element};

/// Dtypes lorascope reads.
pub fn is_supported(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64)
}

/// The dtype as safetensors headers spell it ("BF16"). Written out, not `Debug`: content keys
/// hash it, and a renamed variant upstream must not silently change every key.
pub fn name(dtype: Dtype) -> String {
    match dtype {
        Dtype::F64 => "F64".into(),
        Dtype::F32 => "F32".into(),
        Dtype::F16 => "F16".into(),
        Dtype::BF16 => "BF16".into(),
        Dtype::I64 => "I64".into(),
        Dtype::I32 => "I32".into(),
        Dtype::I16 => "I16".into(),
        Dtype::I8 => "I8".into(),
        Dtype::U8 => "U8".into(),
        Dtype::BOOL => "BOOL".into(),
        // Never analysed, so never keyed; named for messages only.
        other => format!("{other:?}"),
    }
}

/// The largest finite magnitude a float dtype holds (beyond it, encoding gives Inf).
pub fn max_finite(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::F16 => f16::MAX.to_f64(),
        Dtype::BF16 => half::bf16::MAX.to_f64(),
        Dtype::F32 => f32::MAX as f64,
        _ => f64::MAX,
    }
}

/// `bytes` (`dtype`) as f64 values, whatever their alignment.
pub fn decode_f64(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f64>, String> {
    let n = bytes.len() / dtype_size(dtype).max(1);
    decode_reusing(dtype, bytes, Vec::new(), n)
}

pub fn dtype_size(dtype: Dtype) -> usize {
    dtype.bitsize() / 8
}

fn check(dtype: Dtype, bytes: &[u8], n: usize) -> Result<(), String> {
    if !is_supported(dtype) {
        return Err(format!("unsupported dtype {dtype:?}"));
    }
    if bytes.len() != n * dtype_size(dtype) {
        return Err(format!(
            "{} bytes for {n} elements of {dtype:?}",
            bytes.len()
        ));
    }
    Ok(())
}

/// Converts 16-bit little-endian words from possibly unaligned bytes through a small aligned
/// buffer (a whole-tensor temporary would cost as much memory as the tensor); the copy loop
/// vectorises and `convert` gets aligned chunks.
fn words16<T>(bytes: &[u8], out: &mut [T], mut convert: impl FnMut(&[u16], &mut [T])) {
    const CHUNK: usize = 4096;
    let mut buf = [0u16; CHUNK];
    for (b, o) in bytes.chunks(2 * CHUNK).zip(out.chunks_mut(CHUNK)) {
        let w = &mut buf[..o.len()];
        for (x, c) in w.iter_mut().zip(b.chunks_exact(2)) {
            *x = u16::from_le_bytes([c[0], c[1]]);
        }
        convert(w, o);
    }
}

/// Decodes `bytes` (`n` elements of `dtype`) into `buf`'s allocation where it is large enough:
/// the elements it holds are overwritten in place and the rest appended from a small staging
/// buffer, so a recycled buffer's new tail is written once rather than zeroed first (that
/// memset was 1–3 % of a warm scan).
pub fn decode_reusing<T: Element>(
    dtype: Dtype,
    bytes: &[u8],
    mut buf: Vec<T>,
    n: usize,
) -> Result<Vec<T>, String> {
    check(dtype, bytes, n)?;
    if buf.capacity() < n {
        drop(buf);
        let mut out = zeroed::<T>(n);
        T::decode(dtype, bytes, &mut out)?;
        return Ok(out);
    }
    let size = dtype_size(dtype);
    buf.truncate(n);
    let (head, tail) = bytes.split_at(buf.len() * size);
    T::decode(dtype, head, &mut buf)?;
    const STAGE: usize = 16 * 1024;
    let mut stage = vec![T::from_f64(0.0); STAGE.min(n - buf.len())];
    for chunk in tail.chunks(STAGE * size) {
        let m = chunk.len() / size;
        T::decode(dtype, chunk, &mut stage[..m])?;
        buf.extend_from_slice(&stage[..m]);
    }
    Ok(buf)
}

fn decode_f32_into(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F64 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                *o = f64::from_le_bytes(c.try_into().unwrap()) as f32;
            }
        }
        // F16C-accelerated when the CPU has it (half's runtime detection).
        Dtype::F16 => words16(bytes, out, |w, o| {
            let h: &[f16] = half::slice::HalfBitsSliceExt::reinterpret_cast(w);
            h.convert_to_f32_slice(o);
        }),
        Dtype::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        _ => unreachable!("checked by is_supported"),
    }
}

impl Element for f32 {
    const NAME: &'static str = "f32";
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
        check(dtype, bytes, out.len())?;
        decode_f32_into(dtype, bytes, out);
        Ok(())
    }
}

impl Element for f64 {
    const NAME: &'static str = "f64";
    fn from_f64(x: f64) -> Self {
        x
    }
    fn decode(dtype: Dtype, bytes: &[u8], out: &mut [f64]) -> Result<(), String> {
        check(dtype, bytes, out.len())?;
        match dtype {
            Dtype::F64 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    *o = f64::from_le_bytes(c.try_into().unwrap());
                }
            }
            Dtype::F16 => words16(bytes, out, |w, o| {
                let h: &[f16] = half::slice::HalfBitsSliceExt::reinterpret_cast(w);
                h.convert_to_f64_slice(o);
            }),
            // bf16 is the top half of an f32: a shift, which vectorises.
            Dtype::BF16 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64;
                }
            }
            _ => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64;
                }
            }
        }
        Ok(())
    }
}

/// `values` as little-endian `dtype` bytes appended to `out`, rounded to nearest (ties to even),
/// as PyTorch rounds: the inverse of decoding, for files lorascope writes.
pub fn encode(dtype: Dtype, values: &[f64], out: &mut Vec<u8>) -> Result<(), String> {
    out.reserve(values.len() * dtype_size(dtype));
    match dtype {
        Dtype::F64 => values.iter().for_each(|x| out.extend(x.to_le_bytes())),
        Dtype::F32 => values
            .iter()
            .for_each(|x| out.extend((*x as f32).to_le_bytes())),
        Dtype::F16 => values
            .iter()
            .for_each(|x| out.extend(f16::from_f64(*x).to_le_bytes())),
        Dtype::BF16 => values
            .iter()
            .for_each(|x| out.extend(half::bf16::from_f64(*x).to_le_bytes())),
        d => return Err(format!("unsupported dtype {d:?}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn decodes_long_tensors_across_chunk_boundaries() {
        // 10 001 values: two whole 4096-word chunks of the staging buffer and a partial one.
        let vals: Vec<f32> = (0..10_001).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        for dtype in [Dtype::F16, Dtype::BF16] {
            let (bytes, expect): (Vec<u8>, Vec<f32>) = match dtype {
                Dtype::F16 => (
                    vals.iter()
                        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                        .collect(),
                    vals.iter().map(|v| f16::from_f32(*v).to_f32()).collect(),
                ),
                _ => (
                    vals.iter()
                        .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
                        .collect(),
                    vals.iter().map(|v| bf16::from_f32(*v).to_f32()).collect(),
                ),
            };
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&bytes);
            let mut out32 = zeroed::<f32>(vals.len());
            f32::decode(dtype, &shifted[1..], &mut out32).unwrap();
            assert_eq!(out32, expect, "{dtype:?} f32");
            let mut out64 = zeroed::<f64>(vals.len());
            f64::decode(dtype, &shifted[1..], &mut out64).unwrap();
            let expect64: Vec<f64> = expect.iter().map(|v| *v as f64).collect();
            assert_eq!(out64, expect64, "{dtype:?} f64");
        }
    }

    #[test]
    fn a_recycled_buffer_of_any_length_decodes_every_element() {
        // 40 000 values: the tail crosses several 16 Ki-element staging chunks.
        let vals: Vec<f32> = (0..40_000).map(|i| (i as f32 * 0.11).cos() * 7.0).collect();
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let expect: Vec<f64> = vals.iter().map(|v| *v as f64).collect();
        // Held elements (a smaller matrix), more than needed, none, and too little capacity.
        for (len, cap) in [(10_001, 50_000), (45_000, 45_000), (0, 40_000), (5, 100)] {
            let mut buf = Vec::with_capacity(cap);
            buf.resize(len, f64::NAN);
            let out = decode_reusing(Dtype::F32, &bytes, buf, vals.len()).unwrap();
            assert_eq!(out, expect, "len {len}, capacity {cap}");
        }
        let short =
            decode_reusing::<f64>(Dtype::F32, &bytes[..bytes.len() - 4], Vec::new(), 40_000);
        assert!(short.unwrap_err().contains("bytes for 40000 elements"));
    }

    #[test]
    fn decodes_each_dtype_exactly_even_unaligned() {
        let vals = [1.0f32, -2.5, 0.1, 65504.0, 3.0e-5, 0.0];
        // F16 and BF16 round the inputs; the decoder must return exactly the rounded value.
        let f16b: Vec<u8> = vals
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16b: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        let f32b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        for (dtype, bytes, expect) in [
            (Dtype::F16, &f16b, vals.map(|v| f16::from_f32(v).to_f32())),
            (
                Dtype::BF16,
                &bf16b,
                vals.map(|v| bf16::from_f32(v).to_f32()),
            ),
            (Dtype::F32, &f32b, vals),
        ] {
            // Shift by one byte so the slice is misaligned for u16/f32 reads.
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(bytes);
            let mut out32 = vec![0f32; vals.len()];
            f32::decode(dtype, &shifted[1..], &mut out32).unwrap();
            assert_eq!(out32, expect, "{dtype:?} f32");
            let mut out64 = vec![0f64; vals.len()];
            f64::decode(dtype, &shifted[1..], &mut out64).unwrap();
            assert_eq!(out64, expect.map(|v| v as f64), "{dtype:?} f64");
        }
    }

    #[test]
    fn rejects_other_dtypes_and_bad_lengths() {
        let mut out = vec![0f32; 2];
        let e = f32::decode(Dtype::F8_E4M3, &[0, 0], &mut out).unwrap_err();
        assert!(e.contains("unsupported dtype F8_E4M3"), "{e}");
        let e = f32::decode(Dtype::F32, &[0; 7], &mut out).unwrap_err();
        assert!(e.contains("7 bytes"), "{e}");
    }

    #[test]
    fn encoding_rounds_to_nearest_and_decodes_back() {
        let xs = [1.0, -2.5, 1.0 + 1e-3, 3.0e-5, 65504.0, 1.0 / 3.0];
        for d in [Dtype::F64, Dtype::F32, Dtype::F16, Dtype::BF16] {
            let mut b = Vec::new();
            encode(d, &xs, &mut b).unwrap();
            assert_eq!(b.len(), xs.len() * dtype_size(d));
            let mut back = vec![0.0f64; xs.len()];
            <f64 as Element>::decode(d, &b, &mut back).unwrap();
            let rel = match d {
                Dtype::F64 => 0.0,
                Dtype::F32 => 6e-8,
                Dtype::F16 => 4.9e-4,
                _ => 3.9e-3,
            };
            for (x, y) in xs.iter().zip(&back) {
                // Nearest: within half a unit in the last place (relative), subnormals aside.
                assert!((x - y).abs() <= rel * x.abs() + 1e-7, "{d:?}: {x} → {y}");
            }
        }
        assert!(encode(Dtype::I8, &xs, &mut Vec::new()).is_err());
    }
}
