//! The command line: a thin face over the library.

/// `println!` that ends quietly when the reader goes away (`lorascope scan … | head`).
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::emit(format_args!($($t)*)) };
}

mod cache_cmd;
mod compare;
mod inspect;
mod repair;
mod report;
mod scan;
mod values;

pub use values::*;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lorascope::checkpoint::Selection;
use lorascope::Error;

#[derive(Parser, Debug)]
#[command(
    name = "lorascope",
    version,
    about = "What did fine-tuning do to the weights? Finds intruder dimensions (Shuttleworth et al., 2024).",
    override_usage = "lorascope BASE TUNED [OPTIONS]    explore a fine-tune (TUNED: a model or a PEFT adapter)\n       lorascope <COMMAND> [ARGS]",
    after_help = "Examples:\n  lorascope demo                          the explorer on a generated demo\n  lorascope ./base ./adapter              the explorer (same as `lorascope tui ./base ./adapter`)\n  lorascope scan ./base ./adapter --sweep intruder counts, for scripts and CI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List what a base (and tuned) checkpoint holds and how the tensors pair.
    Inspect(InspectArgs),
    /// Count intruder dimensions in every selected matrix.
    Scan(ScanArgs),
    /// The explorer on a small generated demo with intruders (`--scan`: print the scans).
    Demo(DemoArgs),
    /// Show or empty the decomposition cache.
    Cache(CacheCmdArgs),
    /// Explore interactively (also `lorascope BASE TUNED`).
    Tui(TuiArgs),
    /// Write a layer report: Markdown, self-contained HTML with plots, JSON or CSV.
    Report(ReportArgs),
    /// Write a copy of the tuned model with its intruders scaled down by λ (the paper's §5).
    Repair(RepairArgs),
    /// Compare runs of one base side by side: fine-tunes, or a run's training checkpoints
    /// (with --full-svd, also counts over fractions of each matrix's vectors, up to rank 1024).
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Base model, as for scan (a file, a folder, or a hub id in the local cache).
    pub base: PathBuf,
    /// The runs: anything scan takes as TUNED. A folder of Trainer checkpoints
    /// (checkpoint-100/, checkpoint-200/, …) stands for its checkpoints, in step order.
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// A name per run argument, in order (repeat it) [default: the run's folder or file name].
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
    /// The run whose intruders are followed through the others, by label [default: the last].
    #[arg(long, value_name = "LABEL")]
    pub reference: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ScanFormat,
    #[command(flatten)]
    pub opts: AnalysisOpts,
}

/// What every analysing command takes: the inputs, the rule, the selection, how to compute.
#[derive(Args, Debug, Clone)]
pub struct AnalysisArgs {
    /// Base model: a .safetensors file, a (sharded) model folder, or a hub id (org/name) in the
    /// local Hugging Face cache. Alone: a PEFT adapter folder, its base found from its
    /// adapter_config.json as PEFT finds it (offline).
    pub base: PathBuf,
    /// Fine-tuned model, or a PEFT LoRA adapter folder.
    pub tuned: Option<PathBuf>,
    #[command(flatten)]
    pub opts: AnalysisOpts,
}

/// How every analysing command computes and counts: the rule, the selection, the resources.
#[derive(Args, Debug, Clone)]
pub struct AnalysisOpts {
    /// How many top tuned singular vectors are tested.
    #[arg(long, default_value_t = lorascope::spectral::DEFAULT_K)]
    pub k: usize,
    /// A vector is an intruder if its best |cos| with every base vector is below this.
    #[arg(long, default_value_t = lorascope::spectral::DEFAULT_EPSILON)]
    pub epsilon: f64,
    /// Which best |cos| is compared with ε: the paper's (with single base vectors) or
    /// degenerate-aware (with clusters of base vectors whose σ are nearly equal).
    #[arg(long = "rule", value_enum, default_value = "paper")]
    pub rule_kind: RuleArg,
    /// δ of the degenerate-aware rule's clusters: base values with σ_i − σ_{i+1} ≤ δ·σ_i are
    /// one cluster.
    #[arg(long, value_name = "δ", default_value_t = lorascope::spectral::overlap::DEFAULT_DEGENERATE_TOL)]
    pub degenerate_tol: f64,
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Tuned singular vectors computed per matrix (at least k; the explorer's heatmap shows up
    /// to this many).
    #[arg(long, value_name = "N", default_value_t = lorascope::engine::DEFAULT_KEEP)]
    pub keep: usize,
    /// Full SVDs of every tuned matrix, as in the paper, instead of the top-k solvers (slow on
    /// large matrices; the same c_j to about 1e-6; gives whole tuned spectra).
    #[arg(long)]
    pub full_svd: bool,
    /// The effective rank of ΔW for every matrix. Large matrices of a full fine-tune skip it
    /// by default: it needs all of ΔW's singular values, several times the cost of the rest of
    /// the analysis (reports compute it for the matrices they show).
    #[arg(long)]
    pub delta_rank: bool,
    /// Count by the rule alone, without the flags set in the explorer.
    #[arg(long)]
    pub ignore_flags: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// How decompositions run: what the analysing commands and `cache warm` share (the side and
/// precision are part of every cache key, so a warm that should serve a scan takes the same).
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// Compare left (output space, the paper's rule) or right (input space) singular vectors.
    #[arg(long, value_enum, default_value = "left")]
    pub vectors: SideArg,
    /// Arithmetic of the decompositions (f32 is faster; near-tied singular vectors then move
    /// c_j by up to ~1e-3).
    #[arg(long, value_enum, default_value = "f64")]
    pub precision: PrecisionArg,
    /// Matrices analysed at once, and threads in use [default: cores; the explorer: cores − 1
    /// matrices].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Working memory for the matrices in flight, e.g. 8G or 512M; matrices wait for room (one
    /// always runs) [default: half the memory available at start].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,
}

impl ComputeArgs {
    pub fn defaults() -> ComputeArgs {
        ComputeArgs {
            vectors: SideArg::Left,
            precision: PrecisionArg::F64,
            jobs: None,
            memory: None,
        }
    }

    pub fn check(&self) -> Result<(), Error> {
        match self.jobs {
            Some(0) => Err(Error::Usage("--jobs must be at least 1".into())),
            Some(j) => {
                // A matrix's own parallel work runs in rayon's global pool: --jobs caps it too,
                // so that `--jobs 1` keeps to one core. Only the first call can size it.
                let _ = rayon::ThreadPoolBuilder::new()
                    .num_threads(j)
                    .build_global();
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Matrices run at once for `n` matrices: `--jobs` (else `default`), at most one per
    /// matrix, with a note when a given number is lowered (thousands of threads only cost
    /// setup time).
    pub fn jobs_for(&self, n: usize, default: usize) -> usize {
        let n = n.max(1);
        match self.jobs {
            Some(j) if j > n => {
                eprintln!("note: --jobs {j} lowered to {n}, one per matrix",);
                n
            }
            Some(j) => j,
            None => default.min(n),
        }
    }

    /// The engine's options these set (the others at their defaults).
    pub fn options(&self) -> lorascope::engine::Options {
        lorascope::engine::Options {
            side: self.vectors.into(),
            precision: self.precision.into(),
            memory: self
                .memory
                .unwrap_or_else(lorascope::engine::default_memory_budget),
            ..Default::default()
        }
    }
}

/// `8G`, `512M`, `1.5GiB`, `100000` (bytes); binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num
        .parse()
        .map_err(|_| format!("not a size: `{s}` (try 8G or 512M)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("unknown unit in `{s}` (use K, M, G or T)")),
    };
    let bytes = x * (1u64 << shift) as f64;
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("size out of range: `{s}`"));
    }
    Ok(bytes as u64)
}

impl AnalysisArgs {
    /// Defaults on given inputs (the demo).
    pub fn on(base: PathBuf, tuned: PathBuf, cache: CacheArgs) -> AnalysisArgs {
        AnalysisArgs {
            base,
            tuned: Some(tuned),
            opts: AnalysisOpts::defaults(cache),
        }
    }

    /// (BASE, TUNED) as given, a hub id found in the local cache; or with one argument, an
    /// adapter folder and the base it names.
    pub fn paths(&self) -> Result<(PathBuf, PathBuf), Error> {
        use lorascope::checkpoint::locate;
        let hub = locate::HubCache::from_env();
        match &self.tuned {
            Some(t) => Ok((locate::resolve(&self.base, &hub)?, t.clone())),
            None if lorascope::checkpoint::adapter::is_adapter_dir(&self.base) => Ok((
                locate::base_of_adapter(&self.base, &hub)?,
                self.base.clone(),
            )),
            None => Err(Error::Usage(format!(
                "{}: one argument must be a PEFT adapter folder (its config names the base); \
                 otherwise give BASE TUNED",
                self.base.display()
            ))),
        }
    }

    /// Check the options, open and pair the inputs, open the cache: everything that can fail
    /// on bad input happens here, before any work or terminal.
    pub fn engine(&self) -> Result<lorascope::engine::Engine, Error> {
        self.opts.check()?;
        let (base, tuned) = self.paths()?;
        self.opts.engine_for(&base, &tuned)
    }

    pub fn rule(&self) -> Result<lorascope::spectral::Rule, Error> {
        self.opts.rule()
    }

    pub fn jobs_for(&self, engine: &lorascope::engine::Engine, default: usize) -> usize {
        self.opts.jobs_for(engine, default)
    }
}

impl AnalysisOpts {
    /// The defaults, with this cache.
    pub fn defaults(cache: CacheArgs) -> AnalysisOpts {
        AnalysisOpts {
            k: lorascope::spectral::DEFAULT_K,
            epsilon: lorascope::spectral::DEFAULT_EPSILON,
            rule_kind: RuleArg::Paper,
            degenerate_tol: lorascope::spectral::overlap::DEFAULT_DEGENERATE_TOL,
            select: SelectArgs {
                include: vec![],
                exclude: vec![],
            },
            compute: ComputeArgs::defaults(),
            keep: lorascope::engine::DEFAULT_KEEP,
            full_svd: false,
            delta_rank: false,
            ignore_flags: false,
            cache,
        }
    }

    /// Matrices analysed at once: `--jobs` (else `default`), at most one per matrix, with a note
    /// when a given number is lowered (thousands of threads only cost setup time).
    pub fn jobs_for(&self, engine: &lorascope::engine::Engine, default: usize) -> usize {
        self.compute.jobs_for(engine.matrices().len(), default)
    }

    /// `--k`, `--epsilon` and `--rule`, checked.
    pub fn rule(&self) -> Result<lorascope::spectral::Rule, Error> {
        Ok(lorascope::spectral::Rule::new(self.k, self.epsilon)
            .map_err(Error::Usage)?
            .with_kind(self.rule_kind.into()))
    }

    /// The options checked, before any input is opened.
    pub fn check(&self) -> Result<(), Error> {
        self.rule()?;
        if !(0.0..1.0).contains(&self.degenerate_tol) {
            return Err(Error::Usage(format!(
                "--degenerate-tol must be in [0, 1), got {}",
                self.degenerate_tol
            )));
        }
        self.compute.check()?;
        if !(1..=lorascope::engine::MAX_KEEP).contains(&self.keep) {
            return Err(Error::Usage(format!(
                "--keep must be between 1 and {}, got {}",
                lorascope::engine::MAX_KEEP,
                self.keep
            )));
        }
        Ok(())
    }

    /// Open and pair these inputs and the cache: everything that can fail on bad input happens
    /// here, before any work or terminal.
    pub fn engine_for(
        &self,
        base: &std::path::Path,
        tuned: &std::path::Path,
    ) -> Result<lorascope::engine::Engine, Error> {
        let inputs = lorascope::checkpoint::Inputs::open(base, tuned, &self.select.selection()?)?;
        print_warnings(&inputs.warnings);
        if inputs.selected().next().is_none() {
            return Err(Error::Usage(
                "no matrices selected: check --include/--exclude, or run `lorascope inspect`"
                    .into(),
            ));
        }
        let cache = scan::open_cache(&self.cache);
        print_warnings(&cache.take_warnings());
        let opts = lorascope::engine::Options {
            keep: self.keep.max(self.k),
            fast_min_dim: if self.full_svd {
                usize::MAX
            } else {
                lorascope::engine::FAST_MIN_DIM
            },
            delta_rank: self.delta_rank,
            degenerate_tol: self.degenerate_tol,
            ..self.compute.options()
        };
        Ok(lorascope::engine::Engine::new(inputs, cache, opts))
    }
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// More runs of the same base: with them (or --compare) the report compares TUNED and
    /// these side by side, as `compare` does.
    #[arg(value_name = "RUN")]
    pub more_runs: Vec<PathBuf>,
    /// Compare runs: TUNED and every RUN after it (Trainer folders stand for their
    /// checkpoints), count-vs-ε curves overlaid, per-layer bars, tracked intruders, and the
    /// selected matrices' heatmaps in every run.
    #[arg(long)]
    pub compare: bool,
    /// With --compare: a name per run argument, in order (repeat it).
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
    /// With --compare: the run whose intruders are followed [default: the last].
    #[arg(long, value_name = "LABEL")]
    pub reference: Option<String>,
    /// Matrices that get a detailed section [default: those with intruders or user flags;
    /// compared runs: the reference run's matrix with the most intruders].
    #[arg(long = "select", value_name = "REGEX")]
    pub sections: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReportFormatArg,
    /// Output file; `-` for stdout [default: stdout, or a new lorascope-report.html for HTML].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// What each scaled intruder keeps of its singular value: 0 removes it, 1 changes nothing
    /// (the paper found 0.7–0.9 to cost almost no accuracy while reducing forgetting).
    #[arg(long = "lambda", value_name = "λ", allow_hyphen_values = true)]
    pub lambda: f64,
    /// Scale the highest-ranked intruder of each matrix (the paper) or every intruder in the
    /// top k (PEFT's reduce_intruder_dimension). The explorer's flags override the rule.
    #[arg(long, value_enum, default_value = "top")]
    pub scope: ScopeArg,
    /// Where to write: a folder (an adapter, or a model folder from_pretrained loads), or a
    /// .safetensors file for the merged weights alone. Written whole, then renamed into place;
    /// never inside an input.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,
    /// adapter (the default when TUNED is an adapter): a PEFT adapter whose merge equals the
    /// merged repair exactly; merged: the whole model.
    #[arg(long, value_enum)]
    pub format: Option<RepairFormatArg>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Accept λ > 1, which amplifies the intruders.
    #[arg(long)]
    pub allow_amplify: bool,
    /// Largest shard of a merged folder (a larger tensor gets a shard of its own).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "5G")]
    pub max_shard_size: u64,
    /// Scan the output against the base afterwards and show intruders before and after, per
    /// matrix and in total; exit 1 if any matrix ends with more than it had.
    #[arg(long)]
    pub verify: bool,
}

#[derive(Args, Debug)]
pub struct TuiArgs {
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    /// More runs of the same base, to switch between (1–9, r) and compare (c); a folder of
    /// Trainer checkpoints stands for its checkpoints in step order.
    #[arg(value_name = "RUN")]
    pub more_runs: Vec<PathBuf>,
    /// A name per run argument, in order (repeat it) [default: the run's folder or file name].
    #[arg(long = "label", value_name = "NAME")]
    pub labels: Vec<String>,
    #[command(flatten)]
    pub look: LookArgs,
}

/// How the explorer looks.
#[derive(Args, Debug, Clone, Copy)]
pub struct LookArgs {
    /// Colours: auto reads NO_COLOR, COLORTERM, TERM and TERM_PROGRAM, and takes 256 colours
    /// when truecolor is not known (as over SSH).
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorArg,
    /// The terminal's background: light makes text and borders readable on white.
    #[arg(long, value_enum, default_value = "dark")]
    pub theme: ThemeArg,
    /// Leave the mouse to the terminal, so that text can be selected (`m` toggles; most
    /// terminals also select with Shift held while the mouse is captured).
    #[arg(long)]
    pub no_mouse: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThemeArg {
    Dark,
    Light,
}

impl From<ThemeArg> for lorascope::tui::theme::Background {
    fn from(t: ThemeArg) -> Self {
        match t {
            ThemeArg::Dark => Self::Dark,
            ThemeArg::Light => Self::Light,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct SelectArgs {
    /// Analyse only matrices whose name matches (repeatable); replaces the default selection.
    #[arg(long, value_name = "REGEX")]
    pub include: Vec<String>,
    /// Leave out matrices whose name matches (repeatable).
    #[arg(long, value_name = "REGEX")]
    pub exclude: Vec<String>,
}

impl SelectArgs {
    pub fn selection(&self) -> Result<Selection, Error> {
        Selection::new(&self.include, &self.exclude)
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOrJson {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Base model: a .safetensors file or a (sharded) model folder.
    pub base: PathBuf,
    /// Fine-tuned model, or a PEFT LoRA adapter folder.
    pub tuned: Option<PathBuf>,
    #[command(flatten)]
    pub select: SelectArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TextOrJson,
}

#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Cache location [default: $LORASCOPE_CACHE_DIR, $XDG_CACHE_HOME/lorascope, ~/.cache/lorascope].
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
    /// Neither read nor write the cache.
    #[arg(long, global = true)]
    pub no_cache: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanFormat {
    Table,
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct ScanArgs {
    #[command(flatten)]
    pub analysis: AnalysisArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ScanFormat,
    /// Also count at ε = 0.1, 0.2, …, 0.9 (from the same similarities).
    #[arg(long)]
    pub sweep: bool,
    /// Exit with code 1 when the total number of intruders exceeds N.
    #[arg(long, value_name = "N")]
    pub fail_above: Option<usize>,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Print the scans instead of opening the explorer (the default when stdout is not a terminal).
    #[arg(long)]
    pub scan: bool,
    #[command(flatten)]
    pub look: LookArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CacheAction {
    /// Location, size, and per base: entries, size, last used.
    Info {
        #[arg(long, value_enum, default_value = "table")]
        format: TextOrJson,
    },
    /// Remove every entry.
    Clear,
    /// Decompose a base's matrices into the cache, ahead of any fine-tune; with --shard (or
    /// inside a Slurm array or a Kubernetes indexed Job) this worker's share only.
    Warm(WarmArgs),
    /// Remove the least recently used entries: those unused for DAYS, then the oldest until
    /// the cache fits in SIZE.
    Prune {
        /// Keep at most this much, e.g. 50G.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        max_size: Option<u64>,
        /// Remove entries unused for more than this many days (fractions allowed).
        #[arg(long, value_name = "DAYS")]
        older_than: Option<f64>,
    },
    /// Read every entry through and check its checksum; remove the damaged ones (exit 1 if
    /// there were any).
    Verify,
}

#[derive(Args, Debug, Clone)]
pub struct WarmArgs {
    /// Base model: a .safetensors file, a (sharded) model folder, or a hub id in the local
    /// Hugging Face cache.
    pub base: PathBuf,
    #[command(flatten)]
    pub select: SelectArgs,
    /// This worker's share, I/N with I from 0 to N−1 [default: from SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shards; else everything].
    #[arg(long, value_name = "I/N", value_parser = lorascope::shard::Shard::parse)]
    pub shard: Option<lorascope::shard::Shard>,
    /// The number of workers, where the scheduler does not say it (a Kubernetes indexed Job's
    /// completions).
    #[arg(long, value_name = "N")]
    pub shards: Option<usize>,
    // As the scans that will read the cache: --vectors and --precision must match theirs.
    #[command(flatten)]
    pub compute: ComputeArgs,
}

#[derive(Args, Debug)]
pub struct CacheCmdArgs {
    #[command(subcommand)]
    pub action: CacheAction,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Compare(a) => compare::run(a),
        Command::Cache(a) => cache_cmd::run(a),
        Command::Demo(a) => demo(a),
        Command::Tui(a) => tui(a),
        Command::Report(a) => report::run(a),
        Command::Repair(a) => repair::run(a),
    }
}

pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Input { .. } | Error::Mismatch(_) | Error::Usage(_) => 2,
        Error::Compute(_) | Error::Internal(_) => 3,
    }
}

/// The explorer's stored flags for this pair (see [`lorascope::flags`]), read once, with its
/// warnings on stderr; none with `--ignore-flags`.
pub fn stored_flags(engine: &lorascope::engine::Engine, ignore: bool) -> lorascope::flags::Stored {
    use lorascope::flags;
    if ignore {
        return Default::default();
    }
    if let Some(w) = engine
        .cache
        .dir()
        .and_then(|d| d.parent())
        .and_then(flags::legacy_warning)
    {
        eprintln!("warning: {w}");
    }
    let Some(dir) = flags::default_dir() else {
        return Default::default();
    };
    let file = flags::StateFile::open(flags::state_path(&dir, &engine.inputs));
    if let Some(w) = &file.warning {
        eprintln!("warning: {w}");
    }
    file.stored
}

/// The verdicts `stored` gives these analysed matrices, so that scan, report and repair follow
/// the user where they override the rule; said on stderr, with what was not applied.
pub fn apply_flags(
    stored: &lorascope::flags::Stored,
    matrices: &[(&str, u128)],
) -> lorascope::flags::UserState {
    let user = stored.user_for(matrices.iter().copied());
    if user.overrides() > 0 {
        eprintln!(
            "{} applied; --ignore-flags for the rule alone",
            lorascope::report::count(user.overrides(), "explorer flag", "explorer flags")
        );
    }
    let stale = stored.stale(matrices.iter().copied());
    if stale > 0 {
        eprintln!(
            "warning: {} stored for these matrices belong to other weights (another run of \
             this architecture, or a changed adapter config) and are not applied",
            lorascope::report::count(stale, "flag", "flags")
        );
    }
    user
}

/// [`stored_flags`] then [`apply_flags`]: the explorer's verdicts for a finished scan.
pub fn user_state(
    engine: &lorascope::engine::Engine,
    scan: &lorascope::engine::Scan,
    ignore: bool,
) -> lorascope::flags::UserState {
    apply_flags(&stored_flags(engine, ignore), &analysed(scan))
}

/// (name, weights) of a scan's analysed matrices, for [`user_state`].
pub fn analysed(scan: &lorascope::engine::Scan) -> Vec<(&str, u128)> {
    scan.results
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|m| (n.as_str(), m.weights)))
        .collect()
}

/// Above this the cache says on stderr how to shrink it (`LORASCOPE_CACHE_WARN_SIZE`).
pub const CACHE_WARN_SIZE: u64 = 50 << 30;

/// Warns when the cache has grown past `LORASCOPE_CACHE_WARN_SIZE` (a size; `off` never)
/// [default: 50 GiB]. Said after commands that wrote to it.
pub fn warn_if_cache_large(cache: &lorascope::cache::Cache) {
    if cache.dir().is_none() {
        return;
    }
    let limit = match std::env::var("LORASCOPE_CACHE_WARN_SIZE") {
        Ok(v) if v.trim().eq_ignore_ascii_case("off") => return,
        Ok(v) => match parse_size(&v) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("warning: LORASCOPE_CACHE_WARN_SIZE: {e}; using 50G");
                CACHE_WARN_SIZE
            }
        },
        Err(_) => CACHE_WARN_SIZE,
    };
    if let Some(w) = cache.size_warning(limit) {
        eprintln!("warning: {w}");
    }
}

pub fn print_warnings(w: &[String]) {
    for w in w {
        eprintln!("warning: {w}");
    }
}

pub fn emit(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|_| o.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(2);
    }
}

fn demo(a: DemoArgs) -> Result<ExitCode, Error> {
    let root = if a.cache.no_cache {
        std::env::temp_dir().join("lorascope-demo")
    } else {
        a.cache
            .cache_dir
            .clone()
            .or_else(lorascope::cache::default_dir)
            .unwrap_or_else(|| std::env::temp_dir().join("lorascope-demo"))
    };
    let paths = lorascope::demo::ensure(&root)
        .map_err(|e| Error::file(&root, format!("cannot write the demo: {e}")))?;
    use std::io::IsTerminal;
    if !a.scan && std::io::stdout().is_terminal() {
        let analysis = AnalysisArgs::on(paths.base, paths.lora, a.cache);
        return tui(TuiArgs {
            analysis,
            more_runs: vec![],
            labels: vec![],
            look: a.look,
        });
    }
    for (title, tuned) in [
        ("LoRA r=4 adapter", &paths.lora),
        ("full fine-tune", &paths.full),
    ] {
        outln!(
            "== {title}: lorascope scan {} {}",
            paths.base.display(),
            tuned.display()
        );
        let analysis = AnalysisArgs::on(paths.base.clone(), tuned.clone(), a.cache.clone());
        let code = scan::run(ScanArgs {
            analysis,
            format: ScanFormat::Table,
            sweep: false,
            fail_above: None,
        })?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
        outln!("");
    }
    Ok(ExitCode::SUCCESS)
}

/// `lorascope BASE TUNED …` means `lorascope tui BASE TUNED …`.
pub fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    if let Some(first) = args.get(1).and_then(|a| a.to_str()) {
        // The subcommands as clap knows them, so a new one is never taken for a path.
        let known = first == "help"
            || Cli::command()
                .get_subcommands()
                .any(|c| c.get_name() == first);
        if !first.starts_with('-') && !known {
            args.insert(1, "tui".into());
        }
    }
    args
}

fn tui(a: TuiArgs) -> Result<ExitCode, Error> {
    use lorascope::tui::{self, theme::Depth, Settings};
    // Bad input fails here, before the terminal is touched: every run is opened (headers only).
    let runs = tui_runs(&a)?;
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "the explorer needs a terminal; use `lorascope scan` for text output".into(),
        ));
    }
    let state_dir = lorascope::flags::default_dir();
    let depth = Depth::detect(a.look.color.into(), &|k| std::env::var(k).ok());
    // One core stays free for the interface.
    let workers = a
        .analysis
        .jobs_for(&runs[0].1, scan::default_jobs().saturating_sub(1).max(1));
    let settings = Settings {
        rule: a.analysis.rule()?,
        depth,
        background: a.look.theme.into(),
        mouse: !a.look.no_mouse,
        state_dir,
        workers,
    };
    Ok(ExitCode::from(tui::run_many(runs, settings)?))
}

/// The explorer's runs, opened: BASE TUNED, or BASE and several runs (a Trainer folder stands
/// for its checkpoints), each with its label.
fn tui_runs(a: &TuiArgs) -> Result<Vec<(String, lorascope::engine::Engine)>, Error> {
    use lorascope::compare;
    let several = !a.more_runs.is_empty()
        || a.analysis
            .tuned
            .as_deref()
            .is_some_and(compare::is_trainer_folder);
    if !several {
        if !a.labels.is_empty() {
            return Err(Error::Usage(
                "--label names runs: give several (lorascope BASE RUN1 RUN2 …)".into(),
            ));
        }
        return Ok(vec![(String::new(), a.analysis.engine()?)]);
    }
    a.analysis.opts.check()?;
    let args: Vec<PathBuf> = a
        .analysis
        .tuned
        .iter()
        .chain(&a.more_runs)
        .cloned()
        .collect();
    // Every run must open: the first that cannot stops here, before the terminal.
    self::compare::open_runs(&a.analysis.base, &args, &a.labels, &a.analysis.opts)?
        .into_iter()
        .map(|(s, e)| Ok((s.label, e?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        // repair's --max-shard-size default is the explorer's.
        assert_eq!(parse_size("5G"), Ok(lorascope::repair::DEFAULT_MAX_SHARD));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("100000"), Ok(100_000));
        assert_eq!(parse_size("2 KB"), Ok(2048));
        assert!(parse_size("8X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("G").unwrap_err().contains("not a size"));
        assert!(parse_size("0").is_err());
    }
}
