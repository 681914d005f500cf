//! The analysis API that the CLI, the reports and the explorer share: one matrix at a time,
//! lazily, through the persistent cache.

use std::sync::atomic::{AtomicUsize, Ordering};

use faer::Par;
use serde::Serialize;

use crate::cache::Cache;
use crate::checkpoint::{Element, Inputs, TensorPair};
use crate::error::{contain, Result};
use crate::key::{Key, KeyBuilder};
use crate::spectral::{self, rule, topk, Decomposition, Rule, Side};

/// Bump when what a cache entry holds or how it is computed changes.
const ALGORITHM: &str = "lorascope-svd-1";

/// Tuned singular vectors computed per matrix by default: the rule's k and the heatmap's
/// default view (30) fit. `--keep` (or a larger k) asks for more.
pub const DEFAULT_KEEP: usize = 32;
/// The largest k and `--keep`.
pub const MAX_KEEP: usize = rule::MAX_K;
/// From this size (the smaller dimension) on, the tuned side uses the top-k solvers instead of
/// a full SVD. Below it a full SVD takes well under 0.1 s and gives the whole spectrum.
pub const FAST_MIN_DIM: usize = 512;
/// Matrices smaller than this (64×64) are not cached: decomposing one takes well under the
/// ~0.1 ms of writing and reading back its entries.
pub const CACHE_MIN_ELEMENTS: usize = 64 * 64;

/// Half of the memory available now (Linux), else 4 GiB.
pub fn default_memory_budget() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024 / 2)
}

/// A counting semaphore over bytes: matrices wait for their estimated working memory.
///
/// It also keeps the decoding buffers handed from one matrix to the next during a
/// [`scan`](Engine::scan) (a fresh buffer costs the kernel a zeroing pass, 14 % of a warm 7B
/// scan). An idle buffer holds its bytes like a matrix does, so `--memory` bounds it too; a
/// matrix that finds too little room frees idle buffers before it waits.
struct Budget {
    state: std::sync::Mutex<BudgetState>,
    freed: std::sync::Condvar,
    total: u64,
}

#[derive(Default)]
struct BudgetState {
    free: u64,
    /// Recycling is on (during a scan); off, buffers are dropped, so an idle explorer holds
    /// nothing.
    pooling: bool,
    idle: Vec<Vec<f64>>,
}

fn buffer_bytes(b: &Vec<f64>) -> u64 {
    (b.capacity() * std::mem::size_of::<f64>()) as u64
}

struct Held<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    fn new(total: u64) -> Budget {
        Budget {
            state: std::sync::Mutex::new(BudgetState {
                free: total,
                ..Default::default()
            }),
            freed: std::sync::Condvar::new(),
            total,
        }
    }

    /// Waits until `bytes` (at most the whole budget, so one matrix always fits) are free,
    /// dropping idle buffers first.
    fn acquire(&self, bytes: u64) -> Held<'_> {
        let bytes = bytes.min(self.total);
        let mut st = self.state.lock().unwrap();
        while st.free < bytes {
            // The smallest first: the largest is the one that fits every matrix.
            let smallest = (0..st.idle.len()).min_by_key(|&i| st.idle[i].capacity());
            match smallest {
                Some(i) => {
                    let b = st.idle.swap_remove(i);
                    st.free += buffer_bytes(&b);
                }
                None => st = self.freed.wait(st).unwrap(),
            }
        }
        st.free -= bytes;
        Held {
            budget: self,
            bytes,
        }
    }

    /// The largest idle buffer (its bytes return to the caller's estimate, which counts the
    /// decoded matrix), else an empty one. One too small is dropped by the decoder, so the pool
    /// ends up holding buffers that fit every matrix.
    fn take_buffer(&self) -> Vec<f64> {
        let mut st = self.state.lock().unwrap();
        let best = (0..st.idle.len()).max_by_key(|&i| st.idle[i].capacity());
        let Some(i) = best else { return Vec::new() };
        let b = st.idle.swap_remove(i);
        st.free += buffer_bytes(&b);
        drop(st);
        self.freed.notify_all();
        b
    }

    /// Keeps `buf` for the next matrix if recycling is on and the budget has room for it.
    fn give_buffer(&self, buf: Vec<f64>) {
        let bytes = buffer_bytes(&buf);
        let mut st = self.state.lock().unwrap();
        if st.pooling && bytes > 0 && st.free >= bytes {
            st.free -= bytes;
            st.idle.push(buf);
        }
    }

    fn set_pooling(&self, on: bool) {
        let mut st = self.state.lock().unwrap();
        st.pooling = on;
        if !on {
            let idle: u64 = st.idle.drain(..).map(|b| buffer_bytes(&b)).sum();
            st.free += idle;
            drop(st);
            self.freed.notify_all();
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.state.lock().unwrap().free += self.bytes;
        self.budget.freed.notify_all();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    F64,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub side: Side,
    pub precision: Precision,
    /// Parallelism inside one decomposition. Rayon's global pool by default: matrices run on
    /// threads of their own ([`in_parallel`]), and cores they leave idle (the last matrices of a
    /// scan, a single matrix) help the ones running.
    pub par: Par,
    /// Tuned singular vectors computed and matched per matrix (at least the rule's k): the
    /// starting value of [`Engine::keep`], which the explorer may raise.
    pub keep: usize,
    /// Matrices whose smaller dimension is at least this use the top-k solvers for the tuned
    /// side; `usize::MAX` means full SVDs everywhere (the paper's method).
    pub fast_min_dim: usize,
    /// Bytes of working memory for matrices in flight together (one always runs).
    pub memory: u64,
    /// ΔW's effective rank for every matrix, also where it costs a full eigendecomposition
    /// (large matrices of full fine-tunes); otherwise only where it is cheap or cached.
    pub delta_rank: bool,
    /// δ of the degenerate-aware rule's clusters: σ_i − σ_{i+1} ≤ δ·σ_i joins two base values.
    pub degenerate_tol: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            side: Side::Left,
            // f32 SVDs move c_j of near-tied vectors by up to 1e-3 on real checkpoints.
            precision: Precision::F64,
            par: Par::rayon(0),
            keep: DEFAULT_KEEP,
            fast_min_dim: FAST_MIN_DIM,
            memory: default_memory_budget(),
            delta_rank: false,
            degenerate_tol: spectral::overlap::DEFAULT_DEGENERATE_TOL,
        }
    }
}

/// One of the top tuned singular vectors and its best match among the base's.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VectorMatch {
    pub sigma: f64,
    /// σ_j / σ_1 of the tuned matrix.
    pub sigma_ratio: f64,
    /// c_j = max over all base vectors of |cos|.
    pub max_cos: f64,
    pub best_base_index: usize,
    pub best_base_sigma: f64,
    /// PR_j = 1 / Σ_i c_ij⁴ ([`spectral::overlap::Overlap::participation`]).
    pub participation: f64,
    /// c_j of the degenerate-aware rule: the best projection onto a cluster of base vectors
    /// with nearly equal σ ([`Options::degenerate_tol`]), and that cluster's size.
    pub cluster_cos: f64,
    pub cluster_size: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixReport {
    pub name: String,
    /// (rows, cols) as analysed: (out, in).
    pub shape: [usize; 2],
    pub sigma_base: Vec<f64>,
    /// All singular values for small matrices and full SVDs; the top `keep` otherwise.
    pub sigma_tuned: Vec<f64>,
    /// The first min(keep, p) tuned vectors.
    pub vectors: Vec<VectorMatch>,
    /// How many of the leading tuned vectors the rule can test ([`spectral::rule::testable`]);
    /// those after have σ ≈ 0 and are never intruders.
    pub testable: usize,
    /// ‖ΔW‖_F / ‖W0‖_F.
    pub delta_rel_norm: f64,
    /// exp(entropy) of ΔW's normalised singular values.
    /// None where the scan skipped it: a large matrix of a full fine-tune without
    /// [`Options::delta_rank`].
    pub delta_effective_rank: Option<f64>,
    /// The content of the weights analysed (both sides' content keys): what the user's flags
    /// are attached to ([`crate::flags`]).
    #[serde(skip)]
    pub weights: u128,
}

impl VectorMatch {
    /// c_j as `rule` reads it.
    pub fn c(&self, rule: &Rule) -> f64 {
        rule.c(self.max_cos, self.cluster_cos)
    }
}

impl MatrixReport {
    /// The paper's c_j of the testable vectors.
    pub fn max_cos(&self) -> Vec<f64> {
        self.vectors
            .iter()
            .take(self.testable)
            .map(|v| v.max_cos)
            .collect()
    }
    /// c_j of the testable vectors as `rule` reads them: what its counts and verdicts are made
    /// from.
    pub fn cos(&self, rule: &Rule) -> Vec<f64> {
        self.vectors
            .iter()
            .take(self.testable)
            .map(|v| v.c(rule))
            .collect()
    }
    /// Whether tuned vector j has a σ the rule can test.
    pub fn is_testable(&self, j: usize) -> bool {
        j < self.testable.min(self.vectors.len())
    }
    /// Vectors among the top k that were computed but cannot be tested.
    pub fn untestable(&self, k: usize) -> usize {
        let top = k.min(self.vectors.len());
        top - self.testable.min(top)
    }
    pub fn intruders(&self, rule: &Rule) -> Vec<usize> {
        rule.intruders(&self.cos(rule))
    }
    /// Whether `sigma_tuned` holds every singular value (small matrices, full SVDs), not only
    /// the top `keep`.
    pub fn has_whole_spectrum(&self) -> bool {
        self.sigma_tuned.len() >= self.shape[0].min(self.shape[1])
    }
}

pub struct Engine {
    pub inputs: Inputs,
    pub cache: Cache,
    pub opts: Options,
    decompositions: AtomicUsize,
    hashed: AtomicUsize,
    budget: Budget,
    /// Content hashes per matrix: hashing reads the whole tensor, so do it once per run
    /// (heatmaps and reports ask again after the scan).
    keys: std::sync::Mutex<std::collections::HashMap<String, (u128, u128)>>,
}

enum Role<'a> {
    Base,
    /// The tuned matrix, with its base's decomposition (the LoRA route works in its basis) and
    /// how many vectors to keep.
    Tuned(&'a Decomposition, usize),
}

impl Engine {
    pub fn new(inputs: Inputs, mut cache: Cache, opts: Options) -> Engine {
        // As `cache info` will show it: whole, without `..`.
        let path = &inputs.base.path;
        let label = std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path))
            .unwrap_or(path.clone());
        cache.set_base(inputs.base.layout_key(), &label.to_string_lossy());
        Engine {
            inputs,
            cache,
            opts,
            decompositions: AtomicUsize::new(0),
            hashed: AtomicUsize::new(0),
            budget: Budget::new(opts.memory),
            keys: Default::default(),
        }
    }

    fn content_keys(&self, pair: &TensorPair) -> Result<(u128, u128)> {
        if let Some(k) = self.keys.lock().unwrap().get(&pair.name) {
            return Ok(*k);
        }
        let (base_id, tuned_id) = self.identities(pair)?;
        let base = self.remembered_key(base_id, || self.inputs.base_key(pair))?;
        let tuned = self.remembered_key(tuned_id, || self.inputs.tuned_key(pair, base))?;
        self.keys
            .lock()
            .unwrap()
            .insert(pair.name.clone(), (base, tuned));
        Ok((base, tuned))
    }

    /// Both sides' file identities, under which their content keys are remembered; none for a
    /// tiny tensor, which is hashed faster than its remembered key is read.
    fn identities(&self, pair: &TensorPair) -> Result<(Option<u128>, Option<u128>)> {
        if !self.caches(pair) {
            return Ok((None, None));
        }
        self.inputs.source_identity(pair)
    }

    /// A side's content key: remembered under its files' identity `id` across runs (a re-run,
    /// or a new adapter of a known base, does not hash the base weights again: 140 GB for
    /// 70B), else `hash`ed and remembered.
    fn remembered_key(
        &self,
        id: Option<u128>,
        hash: impl FnOnce() -> Result<u128>,
    ) -> Result<u128> {
        let memo = |id: u128| KeyBuilder::new().str("content-key-1").u128(id).finish();
        let remembered = id
            .and_then(|id| self.cache.get_record(memo(id)))
            .and_then(|r| Some(u128::from_le_bytes(r.as_slice().try_into().ok()?)));
        if let Some(k) = remembered {
            return Ok(k);
        }
        let k = hash()?;
        self.hashed.fetch_add(1, Ordering::Relaxed);
        if let Some(id) = id {
            self.cache.put_record(memo(id), &k.to_le_bytes());
        }
        Ok(k)
    }

    /// The base side's content key alone (`cache warm`, where there is no tuned side).
    fn base_content_key(&self, pair: &TensorPair) -> Result<u128> {
        if let Some(k) = self.keys.lock().unwrap().get(&pair.name) {
            return Ok(k.0);
        }
        let id = self.identities(pair)?.0;
        self.remembered_key(id, || self.inputs.base_key(pair))
    }

    /// Decomposes `pair`'s base into the cache unless it is there (`cache warm`): what a scan of
    /// any fine-tune of this base then reads instead of computing.
    pub fn warm(&self, pair: &TensorPair) -> Result<Warmed> {
        contain(|| {
            if !self.caches(pair) {
                return Ok(Warmed::TooSmall);
            }
            let key = self.key(
                &format!("{}/all", self.side_name()),
                &[self.base_content_key(pair)?],
            );
            if self.cache.contains(key) {
                return Ok(Warmed::Cached);
            }
            let _held = self.budget.acquire(self.base_memory_estimate(pair));
            // Another worker may have finished it while this one waited.
            if self.cache.contains(key) {
                return Ok(Warmed::Cached);
            }
            let d = self.decompose(pair, Role::Base)?;
            self.decompositions.fetch_add(1, Ordering::Relaxed);
            self.cache.put(key, &d);
            Ok(Warmed::Computed)
        })
    }

    fn side_name(&self) -> &'static str {
        match self.opts.side {
            Side::Left => "left",
            Side::Right => "right",
        }
    }

    /// Tuned vectors computed and matched per matrix by default (`--keep`); the explorer asks
    /// for more per job ([`Engine::analyze_keeping`]).
    pub fn keep(&self) -> usize {
        self.opts.keep
    }

    /// Sides of matrices (base or tuned) whose tensors this engine has hashed rather than found
    /// their key remembered.
    pub fn hashed(&self) -> usize {
        self.hashed.load(Ordering::Relaxed)
    }

    pub fn matrices(&self) -> Vec<&TensorPair> {
        self.inputs.selected().collect()
    }

    /// Decompositions (SVDs of any kind) this engine has computed rather than read from cache.
    pub fn decompositions(&self) -> usize {
        self.decompositions.load(Ordering::Relaxed)
    }

    fn key(&self, what: &str, parts: &[u128]) -> Key {
        let mut kb = KeyBuilder::new()
            .str(ALGORITHM)
            .str(match self.opts.precision {
                Precision::F32 => "f32",
                Precision::F64 => "f64",
            })
            .str(what);
        for p in parts {
            kb = kb.u128(*p);
        }
        kb.finish()
    }

    /// Whether `pair`'s results go to the cache: a matrix under [`CACHE_MIN_ELEMENTS`] is
    /// decomposed faster than its entry is written and read back (a checkpoint of 100k tiny
    /// tensors would otherwise make 500k files).
    fn caches(&self, pair: &TensorPair) -> bool {
        let (m, n) = pair.dims();
        m.saturating_mul(n) >= CACHE_MIN_ELEMENTS
    }

    fn cached(
        &self,
        pair: &TensorPair,
        key: Key,
        compute: impl FnOnce() -> Result<Decomposition>,
    ) -> Result<Decomposition> {
        let caches = self.caches(pair);
        if let Some(d) = caches.then(|| self.cache.get(key)).flatten() {
            return Ok(d);
        }
        let d = compute()?;
        self.decompositions.fetch_add(1, Ordering::Relaxed);
        if caches {
            self.cache.put(key, &d);
        }
        Ok(d)
    }

    fn decompose_as<T: Element>(&self, pair: &TensorPair, role: Role<'_>) -> Result<Decomposition> {
        // The tuned side's routes are many small products and stay on one core each, as before:
        // split across cores they gave no shorter new-adapter scan of a 7B block (2.5–2.7 s
        // either way), so only the base's whole decompositions take `opts.par`.
        let (side, par) = (self.opts.side, Par::Seq);
        let (rows, cols) = pair.dims();
        let fast = rows.min(cols) >= self.opts.fast_min_dim;
        match role {
            Role::Base => self.decompose_base(&self.inputs.base_matrix::<T>(pair)?),
            Role::Tuned(base, keep) => {
                if fast {
                    if let Some(f) = self.inputs.lora_factors(pair)? {
                        let w0 = self
                            .inputs
                            .base_matrix_into::<f64>(pair, self.budget.take_buffer())?;
                        let update = topk::LoraUpdate {
                            w0: &w0,
                            b: &f.b,
                            a: &f.a,
                            scaling: f.scaling,
                        };
                        let d = topk::lora_top(base, update, side, keep, par);
                        self.budget.give_buffer(w0.data);
                        let d = d?;
                        if let Some(d) = d {
                            return Ok(d);
                        }
                    }
                }
                let w = self.inputs.tuned_matrix::<T>(pair)?;
                if fast {
                    if let Some(d) = topk::dense_top(&w, side, keep, Some(base), par)? {
                        return Ok(d);
                    }
                }
                spectral::decompose(&w, side, keep, par)
            }
        }
    }

    /// Every vector of a base matrix: the Gram route does that in about half the time where it
    /// is accurate, and declines otherwise.
    fn decompose_base<T: Element>(&self, w: &crate::checkpoint::Dense<T>) -> Result<Decomposition> {
        let (side, par) = (self.opts.side, self.opts.par);
        if let Some(d) = spectral::decompose_gram(w, side, usize::MAX, par)? {
            return Ok(d);
        }
        spectral::decompose(w, side, usize::MAX, par)
    }

    fn decompose(&self, pair: &TensorPair, role: Role<'_>) -> Result<Decomposition> {
        if let (Role::Base, Precision::F64) = (&role, self.opts.precision) {
            // Decoded into a recycled buffer, as the tuned side's W0 is: during a scan a fresh
            // one would sit beside the idle one, a whole matrix more at the peak.
            let w = self
                .inputs
                .base_matrix_into::<f64>(pair, self.budget.take_buffer())?;
            let d = self.decompose_base(&w);
            self.budget.give_buffer(w.data);
            return d;
        }
        match self.opts.precision {
            Precision::F32 => self.decompose_as::<f32>(pair, role),
            Precision::F64 => self.decompose_as::<f64>(pair, role),
        }
    }

    /// ‖ΔW‖_F and ΔW's effective rank. The rank needs every singular value of ΔW: for a large
    /// matrix of a full fine-tune that costs several times the rest of its analysis (13 s of
    /// 14 at 4096²), so it is computed only when `want_rank` (or cached); the norm is one pass.
    fn delta_stats(
        &self,
        pair: &TensorPair,
        (base_src, tuned_src): (u128, u128),
        want_rank: bool,
    ) -> Result<(f64, Option<f64>)> {
        let key = self.key("delta", &[base_src, tuned_src]);
        let fro = |s: &[f64]| s.iter().map(|x| x * x).sum::<f64>().sqrt();
        let (rows, cols) = pair.dims();
        let factors = self.inputs.lora_factors(pair)?;
        let cheap = rows.min(cols) < self.opts.fast_min_dim.min(FAST_MIN_DIM) || factors.is_some();
        let spectrum = if cheap || want_rank {
            Some(self.cached(pair, key, || {
                let sigma = match &factors {
                    Some(f) => spectral::low_rank_singular_values(f.scaling, &f.b, &f.a)?,
                    // Only sums over the spectrum are read from these, so the Gram route's
                    // floor of ~1e-8·σ₁ on single tiny values costs nothing; 2.6× an SVD's speed.
                    None => {
                        spectral::gram_singular_values(&self.delta_matrix(pair)?, self.opts.par)?
                    }
                };
                Ok(Decomposition::values_only(sigma))
            })?)
        } else {
            self.caches(pair).then(|| self.cache.get(key)).flatten()
        };
        if let Some(d) = spectrum {
            return Ok((fro(&d.sigma), Some(spectral::effective_rank(&d.sigma))));
        }
        let key = self.key("delta-norm", &[base_src, tuned_src]);
        let caches = self.caches(pair);
        if let Some(d) = caches.then(|| self.cache.get(key)).flatten() {
            return Ok((d.sigma.first().copied().unwrap_or(0.0), None));
        }
        let norm = fro(&self.delta_matrix(pair)?.data);
        if caches {
            self.cache.put(key, &Decomposition::values_only(vec![norm]));
        }
        Ok((norm, None))
    }

    /// The effective rank of ΔW for one matrix, computed if a scan skipped it (reports ask for
    /// the matrices they show).
    pub fn delta_effective_rank(&self, pair: &TensorPair) -> Result<f64> {
        contain(|| {
            let _held = self.budget.acquire(self.memory_estimate(pair));
            let keys = self.content_keys(pair)?;
            Ok(self.delta_stats(pair, keys, true)?.1.unwrap_or(0.0))
        })
    }

    /// ΔW = W − W0, in f64 so that small updates to large weights keep their digits.
    fn delta_matrix(&self, pair: &TensorPair) -> Result<crate::checkpoint::Dense<f64>> {
        let w0 = self.inputs.base_matrix::<f64>(pair)?;
        let mut d = self.inputs.tuned_matrix::<f64>(pair)?;
        d.data.iter_mut().zip(&w0.data).for_each(|(x, y)| *x -= y);
        Ok(d)
    }

    /// Every singular value of the tuned matrix, for when the user asks (scans keep the top
    /// `keep` of large matrices): a values-only SVD of W, cached.
    pub fn full_spectrum(&self, pair: &TensorPair) -> Result<Vec<f64>> {
        contain(|| self.full_spectrum_inner(pair))
    }

    fn full_spectrum_inner(&self, pair: &TensorPair) -> Result<Vec<f64>> {
        let _held = self.budget.acquire(self.memory_estimate(pair));
        let (_, tuned_src) = self.content_keys(pair)?;
        let d = self.cached(pair, self.key("values", &[tuned_src]), || {
            // Someone is waiting on this one matrix: all cores.
            let par = Par::rayon(0);
            let sigma = match self.opts.precision {
                Precision::F32 => {
                    spectral::singular_values(&self.inputs.tuned_matrix::<f32>(pair)?, par)?
                }
                Precision::F64 => {
                    spectral::singular_values(&self.inputs.tuned_matrix::<f64>(pair)?, par)?
                }
            };
            Ok(Decomposition::values_only(sigma))
        })?;
        Ok(d.sigma)
    }

    /// Both decompositions and the match of every kept tuned vector.
    pub fn decompositions_of(&self, pair: &TensorPair) -> Result<(Decomposition, Decomposition)> {
        self.decompositions_keeping(pair, self.opts.keep)
    }

    /// [`Engine::decompositions_of`] with `keep` tuned vectors.
    pub fn decompositions_keeping(
        &self,
        pair: &TensorPair,
        keep: usize,
    ) -> Result<(Decomposition, Decomposition)> {
        contain(|| {
            let _held = self.budget.acquire(self.memory_estimate(pair));
            self.decompositions_keyed(pair, self.content_keys(pair)?, keep)
        })
    }

    /// Peak working memory of analysing `pair` when nothing is cached, from the shapes: the
    /// decoded matrix, the Gram route's copy, Gram matrix and eigenvectors, and the vectors
    /// (the SVD fallback and the tuned side need less). Measured peaks are within this.
    pub fn memory_estimate(&self, pair: &TensorPair) -> u64 {
        let (m, n, p, d, scalar) = self.sizes(pair);
        scalar * (2 * m * n + 3 * p * p + d * p) + 4 * d * p
    }

    /// (m, n, p = min, d = the compared vectors' length, bytes per number) for the estimates.
    fn sizes(&self, pair: &TensorPair) -> (u64, u64, u64, u64, u64) {
        let (m, n) = pair.dims();
        let (m, n) = (m as u64, n as u64);
        let d = match self.opts.side {
            Side::Left => m,
            Side::Right => n,
        };
        let scalar = match self.opts.precision {
            Precision::F32 => 4,
            Precision::F64 => 8,
        };
        (m, n, m.min(n), d, scalar)
    }

    /// Peak working memory of decomposing `pair`'s base alone (`cache warm`): the decoded
    /// matrix, the Gram matrix, its eigenvectors and workspace, a block of U and the f32 vectors.
    /// The tuned side and ΔW, which [`memory_estimate`](Self::memory_estimate) also covers,
    /// need up to twice the matrix, and so may the SVD fallback (an ill-conditioned base).
    pub fn base_memory_estimate(&self, pair: &TensorPair) -> u64 {
        let (m, n, p, d, scalar) = self.sizes(pair);
        scalar * (m * n + 3 * p * p + 512 * d) + 4 * d * p
    }

    fn decompositions_keyed(
        &self,
        pair: &TensorPair,
        (base_src, tuned_src): (u128, u128),
        keep: usize,
    ) -> Result<(Decomposition, Decomposition)> {
        let keep = keep.clamp(1, MAX_KEEP);
        let side = self.side_name();
        let base = self.cached(pair, self.key(&format!("{side}/all"), &[base_src]), || {
            self.decompose(pair, Role::Base)
        })?;
        let tuned = if tuned_src == base_src {
            base.clone()
        } else {
            // Full SVDs keep the whole spectrum, the top-k solvers only the top: separate keys.
            let (rows, cols) = pair.dims();
            let route = if rows.min(cols) >= self.opts.fast_min_dim {
                "top"
            } else {
                "svd"
            };
            self.cached(
                pair,
                self.key(&format!("{side}/{route}{keep}"), &[tuned_src]),
                || self.decompose(pair, Role::Tuned(&base, keep)),
            )?
        };
        Ok((base, tuned))
    }

    pub fn analyze(&self, pair: &TensorPair) -> Result<MatrixReport> {
        Ok(self.analyze_with_decompositions(pair)?.0)
    }

    /// The report plus the decompositions it came from (for heatmaps, without a second read).
    /// A panic inside (a bug) fails this matrix only, as an [`Error::Internal`](crate::error::Error).
    pub fn analyze_with_decompositions(
        &self,
        pair: &TensorPair,
    ) -> Result<(MatrixReport, Decomposition, Decomposition)> {
        self.analyze_keeping(pair, self.opts.keep)
    }

    /// [`Engine::analyze_with_decompositions`] with `keep` tuned vectors (the explorer, when
    /// the user asks for a k above `--keep`).
    pub fn analyze_keeping(
        &self,
        pair: &TensorPair,
        keep: usize,
    ) -> Result<(MatrixReport, Decomposition, Decomposition)> {
        contain(|| {
            crate::error::panic_if_asked(&pair.name);
            self.analyze_inner(pair, keep)
        })
    }

    fn analyze_inner(
        &self,
        pair: &TensorPair,
        keep: usize,
    ) -> Result<(MatrixReport, Decomposition, Decomposition)> {
        let _held = self.budget.acquire(self.memory_estimate(pair));
        let (base_src, tuned_src) = self.content_keys(pair)?;
        let (base, tuned) = self.decompositions_keyed(pair, (base_src, tuned_src), keep)?;
        let (delta_norm, delta_rank) =
            self.delta_stats(pair, (base_src, tuned_src), self.opts.delta_rank)?;
        let matches = spectral::overlap::overlaps(&base, &tuned, self.opts.degenerate_tol);
        let s1 = tuned.sigma.first().copied().unwrap_or(0.0);
        let vectors = matches
            .into_iter()
            .enumerate()
            .map(|(j, o)| VectorMatch {
                sigma: tuned.sigma[j],
                sigma_ratio: if s1 > 0.0 { tuned.sigma[j] / s1 } else { 0.0 },
                max_cos: o.max_cos,
                best_base_index: o.best,
                best_base_sigma: base.sigma[o.best],
                participation: o.participation,
                cluster_cos: o.cluster_cos,
                cluster_size: o.cluster.len(),
            })
            .collect();
        let fro = |s: &[f64]| s.iter().map(|x| x * x).sum::<f64>().sqrt();
        let w0 = fro(&base.sigma);
        let (rows, cols) = pair.dims();
        let report = MatrixReport {
            name: pair.name.clone(),
            shape: [rows, cols],
            delta_rel_norm: if w0 > 0.0 { delta_norm / w0 } else { 0.0 },
            delta_effective_rank: delta_rank,
            sigma_base: base.sigma.clone(),
            testable: spectral::rule::testable(
                &tuned.sigma,
                base.sigma.first().copied().unwrap_or(0.0),
                (rows, cols),
            ),
            sigma_tuned: tuned.sigma.clone(),
            vectors,
            weights: KeyBuilder::new()
                .str("weights-1")
                .u128(base_src)
                .u128(tuned_src)
                .finish()
                .0,
        };
        Ok((report, base, tuned))
    }
}

/// What [`Engine::warm`] did with a matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmed {
    Computed,
    /// Already in the cache.
    Cached,
    /// Under [`CACHE_MIN_ELEMENTS`]: decomposed faster than cached, so never cached.
    TooSmall,
}

/// The estimated cost of decomposing a base matrix of `dims` for `side`'s vectors, in units
/// proportional to time: with p ≤ q the dimensions, the Gram matrix's q·p² products, an
/// eigendecomposition worth [`EIGEN_WEIGHT`]·p³, and where the side's vectors are the long ones
/// (U = A·V·Σ⁻¹) [`BACK_WEIGHT`]·q·p² more. `benches/warm.rs` measures it against the route's
/// times; `docs/cluster.md` has the figures.
pub fn base_cost((m, n): (usize, usize), side: Side) -> f64 {
    let (p, q) = (m.min(n) as f64, m.max(n) as f64);
    let d = match side {
        Side::Left => m,
        Side::Right => n,
    } as f64;
    let back = if d > p { BACK_WEIGHT } else { 0.0 };
    q * p * p * (1.0 + back) + EIGEN_WEIGHT * p * p * p
}

/// Fitted on one core, f64, to the Gram route's times on 2048², 5504×2048 and 2048×5504
/// (`LORASCOPE_BENCH_SCALE=2 cargo bench --bench warm`).
const EIGEN_WEIGHT: f64 = 4.0;
const BACK_WEIGHT: f64 = 1.25;

impl Engine {
    /// [`base_cost`] of `pair` as this engine decomposes it.
    pub fn base_cost(&self, pair: &TensorPair) -> f64 {
        base_cost(pair.dims(), self.opts.side)
    }
}

/// The outcome of scanning every selected matrix: per matrix a report or its error, in order.
pub struct Scan {
    pub results: Vec<(String, Result<MatrixReport, String>)>,
}

impl Engine {
    /// Analyse every selected matrix with `jobs` matrices in flight (memory stays bounded by
    /// that number), calling `progress(done, total, name)` as each finishes.
    pub fn scan(&self, jobs: usize, progress: &(dyn Fn(usize, usize, &str) + Sync)) -> Scan {
        self.scan_with(jobs, progress, &|_, _| {})
    }

    /// [`scan`](Self::scan), handing each analysed matrix's report and tuned decomposition to
    /// `each` (repair keeps the ones it scales, so that nothing is decomposed twice without a
    /// cache).
    pub fn scan_with(
        &self,
        jobs: usize,
        progress: &(dyn Fn(usize, usize, &str) + Sync),
        each: &(dyn Fn(&MatrixReport, Decomposition) + Sync),
    ) -> Scan {
        let pairs = self.matrices();
        let total = pairs.len();
        let done = AtomicUsize::new(0);
        self.budget.set_pooling(true);
        // Largest first, so the last to finish are small ones and no core waits long on one.
        let mut order: Vec<usize> = (0..total).collect();
        order.sort_by_key(|&i| {
            let (r, c) = pairs[i].dims();
            std::cmp::Reverse(r * c)
        });
        let mut results = in_parallel(total, jobs, |k| {
            let p = pairs[order[k]];
            let r = match self.analyze_with_decompositions(p) {
                Ok((report, _, tuned)) => {
                    each(&report, tuned);
                    Ok(report)
                }
                Err(e) => Err(e.to_string()),
            };
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            progress(n, total, &p.name);
            (order[k], p.name.clone(), r)
        });
        results.sort_by_key(|r| r.0);
        let results = results.into_iter().map(|(_, name, r)| (name, r)).collect();
        self.budget.set_pooling(false);
        Scan { results }
    }
}

/// `f(0..n)` on `jobs` threads, each taking the next index as it finishes one; results in index
/// order. Plain threads, not a rayon pool: the decompositions' own parallel work runs in rayon's
/// global pool, so a thread waiting there never picks up another matrix (and its memory) the
/// way a rayon worker waiting in a join would, and a core left idle near the end helps the
/// matrices still running.
pub fn in_parallel<T: Send>(n: usize, jobs: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.clamp(1, n.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push((i, f(i)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}

impl Scan {
    pub fn reports(&self) -> impl Iterator<Item = &MatrixReport> {
        self.results.iter().filter_map(|(_, r)| r.as_ref().ok())
    }
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|(_, r)| r.is_err()).count()
    }
    /// Intruders by the rule alone.
    pub fn total(&self, rule: &Rule) -> usize {
        self.total_with(&Default::default(), rule)
    }
    /// Intruders under the user's verdicts (their flags where set, else the rule).
    pub fn total_with(&self, user: &crate::flags::UserState, rule: &Rule) -> usize {
        self.reports()
            .map(|r| user.intruders(&r.name, &r.cos(rule), rule).len())
            .sum()
    }
    /// Intruders per block (`…layer.N`), natural order; matrices outside blocks under "(other)".
    pub fn per_layer(&self, rule: &Rule) -> Vec<(String, usize)> {
        self.per_layer_with(&Default::default(), rule)
    }
    /// [`Scan::per_layer`] under the user's verdicts.
    pub fn per_layer_with(
        &self,
        user: &crate::flags::UserState,
        rule: &Rule,
    ) -> Vec<(String, usize)> {
        rule::per_block(self.reports().map(|r| {
            let n = user.intruders(&r.name, &r.cos(rule), rule).len();
            (crate::checkpoint::block_of(&r.name), n)
        }))
    }
    /// Totals at each ε of the sweep (this k), from the same c_j, by the rule alone.
    pub fn sweep(&self, rule: &Rule) -> Vec<(f64, usize)> {
        rule.sweep()
            .map(|r| (r.epsilon(), self.total(&r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(b: &Budget) -> u64 {
        b.state.lock().unwrap().free
    }

    #[test]
    fn idle_buffers_count_against_the_budget_and_yield_to_matrices() {
        let b = Budget::new(10_000);
        // Off (outside a scan) a returned buffer is dropped.
        b.give_buffer(vec![0.0; 100]);
        assert_eq!(free(&b), 10_000);
        assert!(b.take_buffer().is_empty());

        b.set_pooling(true);
        let held = b.acquire(4_000);
        b.give_buffer(Vec::with_capacity(500)); // 4000 bytes, while its matrix still holds its own
        assert_eq!(free(&b), 2_000);
        // No room left for a second one: dropped rather than exceeding the budget.
        b.give_buffer(Vec::with_capacity(500));
        assert_eq!(free(&b), 2_000);
        drop(held);
        assert_eq!(free(&b), 6_000);

        // A matrix that needs more than is free evicts the idle buffer instead of waiting for
        // ever (one thread: waiting would hang this test).
        let held = b.acquire(9_000);
        assert_eq!(free(&b), 1_000);
        assert!(b.take_buffer().is_empty());
        drop(held);

        // Taking hands the bytes back to the taker's estimate; the largest buffer comes first.
        b.give_buffer(Vec::with_capacity(100));
        b.give_buffer(Vec::with_capacity(300));
        assert_eq!(free(&b), 6_800);
        assert_eq!(b.take_buffer().capacity(), 300);
        assert_eq!(free(&b), 9_200);

        // The end of a scan frees everything idle.
        b.set_pooling(false);
        assert_eq!(free(&b), 10_000);
        assert!(b.take_buffer().is_empty());
    }
}
