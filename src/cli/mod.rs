//! The command line: a thin face over the library.

/// `println!` that ends quietly when the reader goes away (`lorascope scan … | head`).
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::emit(format_args!($($t)*)) };
}

mod inspect;

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
