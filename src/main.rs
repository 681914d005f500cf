use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    keep_freed_memory();
    let args = cli::Cli::parse_from(cli::with_default_command(std::env::args_os().collect()));
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(cli::exit_code(&e))
        }
    }
}

/// glibc returns freed blocks of a few MB (the solvers' work matrices) to the kernel and gets
/// them back zeroed on the next fault; a warm 7B scan spent 3–7 % of its CPU on that. Blocks up
/// to 32 MiB now come from the heap, and heaps are not trimmed (a worker's heap is at most
/// 64 MiB, so this holds little); decoded weight matrices, larger, are still returned at once.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
