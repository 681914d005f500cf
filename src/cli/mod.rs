//! The command line: a thin face over the library.

/// `println!` that ends quietly when the reader goes away (`lorascope scan … | head`).
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::emit(format_args!($($t)*)) };
}

mod cache_cmd;
mod inspect;
mod scan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lorascope::checkpoint::Selection;
use lorascope::Error;

#[derive(Parser, Debug)]
#[command(
    name = "lorascope",
    version,
    about = "What did fine-tuning do to the weights? Finds intruder dimensions (Shuttleworth et al., 2024)."
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
    /// Scan a small generated demo: a LoRA adapter with intruders and a full fine-tune.
    Demo(DemoArgs),
    /// Show or empty the decomposition cache.
    Cache(CacheCmdArgs),
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
    /// Base model: a .safetensors file or a (sharded) model folder.
    pub base: PathBuf,
    /// Fine-tuned model, or a PEFT LoRA adapter folder.
    pub tuned: PathBuf,
    /// How many top tuned singular vectors are tested.
    #[arg(long, default_value_t = lorascope::spectral::DEFAULT_K)]
    pub k: usize,
    /// A vector is an intruder if its best |cos| with every base vector is below this.
    #[arg(long, default_value_t = lorascope::spectral::DEFAULT_EPSILON)]
    pub epsilon: f64,
    #[command(flatten)]
    pub select: SelectArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub format: ScanFormat,
    /// Also count at ε = 0.1, 0.2, …, 0.9 (from the same similarities).
    #[arg(long)]
    pub sweep: bool,
    /// Exit with code 1 when the total number of intruders exceeds N.
    #[arg(long, value_name = "N")]
    pub fail_above: Option<usize>,
    /// Matrices analysed at once [default: number of cores].
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Compare left (output space, the paper's rule) or right (input space) singular vectors.
    #[arg(long, value_enum, default_value = "left")]
    pub vectors: lorascope::spectral::Side,
    /// Arithmetic of the decompositions (f32 is faster; near-tied singular vectors then move c_j by up to ~1e-3).
    #[arg(long, value_enum, default_value = "f64")]
    pub precision: lorascope::engine::Precision,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Subcommand, Debug, Clone, Copy)]
pub enum CacheAction {
    /// Location, number of entries and size.
    Info,
    /// Remove every entry.
    Clear,
}

#[derive(Args, Debug)]
pub struct CacheCmdArgs {
    #[command(subcommand)]
    pub action: CacheAction,
    #[command(flatten)]
    pub cache: CacheArgs,
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

pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Inspect(a) => inspect::run(a),
        Command::Scan(a) => scan::run(a),
        Command::Cache(a) => cache_cmd::run(a),
        Command::Demo(a) => demo(a),
    }
}

pub fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Input { .. } | Error::Mismatch(_) | Error::Usage(_) => 2,
        Error::Compute(_) => 3,
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
    for (title, tuned) in [
        ("LoRA r=4 adapter", &paths.lora),
        ("full fine-tune", &paths.full),
    ] {
        outln!(
            "== {title}: lorascope scan {} {}",
            paths.base.display(),
            tuned.display()
        );
        let args = ScanArgs {
            base: paths.base.clone(),
            tuned: tuned.clone(),
            k: lorascope::spectral::DEFAULT_K,
            epsilon: lorascope::spectral::DEFAULT_EPSILON,
            select: SelectArgs {
                include: vec![],
                exclude: vec![],
            },
            format: ScanFormat::Table,
            sweep: false,
            fail_above: None,
            jobs: None,
            vectors: lorascope::spectral::Side::Left,
            precision: lorascope::engine::Precision::F64,
            cache: a.cache.clone(),
        };
        let code = scan::run(args)?;
        if code != ExitCode::SUCCESS {
            return Ok(code);
        }
        outln!("");
    }
    Ok(ExitCode::SUCCESS)
}
