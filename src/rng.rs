//! A small deterministic generator (no extra crates): random starts for the top-k solver,
//! the demo's weights and test data. A leaf.

use faer::Mat;

/// splitmix64: tiny, deterministic across platforms.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn gaussian(&mut self, rows: usize, cols: usize, scale: f64) -> Mat<f64> {
        Mat::from_fn(rows, cols, |_, _| self.normal() * scale)
    }
    /// A rows×cols matrix of N(0, 1/cols) entries (unit-scale rows), row-major.
    pub fn dense(&mut self, rows: usize, cols: usize) -> crate::matrix::Dense<f64> {
        let s = 1.0 / (cols as f64).sqrt();
        crate::matrix::Dense {
            rows,
            cols,
            data: (0..rows * cols).map(|_| self.normal() * s).collect(),
        }
    }
}
