//! The engine's matrix types: a row-major matrix as checkpoints store weights, and the scalars
//! it computes in. A leaf: checkpoints decode into these, the spectral code takes them.

use safetensors::Dtype;

/// Scalars the engine computes in. Implemented for f32 (default) and f64 (`--precision f64`).
pub trait Element:
    faer::traits::RealField + Copy + Send + Sync + 'static + Into<f64> + std::fmt::Debug
{
    const NAME: &'static str;
    fn from_f64(x: f64) -> Self;
    /// Decode `bytes` (little-endian, of `dtype`) into `out`; `out.len()` elements.
    fn decode(dtype: Dtype, bytes: &[u8], out: &mut [Self]) -> Result<(), String>;
}

/// A row-major matrix, (out, in) as nn.Linear stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

impl<T: Copy> Dense<T> {
    pub fn transpose(&self) -> Dense<T> {
        let mut data = Vec::with_capacity(self.data.len());
        for j in 0..self.cols {
            for i in 0..self.rows {
                data.push(self.data[i * self.cols + j]);
            }
        }
        Dense {
            rows: self.cols,
            cols: self.rows,
            data,
        }
    }
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.cols + j]
    }
    /// A row-major copy of any faer matrix.
    pub fn from_mat(m: faer::MatRef<'_, T>) -> Dense<T> {
        Dense {
            rows: m.nrows(),
            cols: m.ncols(),
            data: (0..m.nrows())
                .flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)]))
                .collect(),
        }
    }
}

/// A zeroed buffer for a whole matrix. Large ones are backed by transparent huge pages where
/// the kernel offers them on request: first-touch faults on 4 KiB pages took a quarter of a warm
/// scan's time.
pub fn zeroed<T: Element>(n: usize) -> Vec<T> {
    let v = vec![T::from_f64(0.0); n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<T>();
        if bytes >= 4 * HUGE {
            let start = v.as_ptr() as usize;
            let aligned = start.next_multiple_of(HUGE);
            let len = (start + bytes - aligned) / HUGE * HUGE;
            // Advice only: failure leaves ordinary pages.
            unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
        }
    }
    v
}
