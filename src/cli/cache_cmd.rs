use std::process::ExitCode;

use lorascope::Error;

use super::{scan::open_cache, CacheAction, CacheCmdArgs};

pub fn run(a: CacheCmdArgs) -> Result<ExitCode, Error> {
    let cache = open_cache(&a.cache);
    super::print_warnings(&cache.take_warnings());
    let Some(dir) = cache.dir().map(|d| d.to_path_buf()) else {
        outln!("no cache (disabled or no location)");
        return Ok(ExitCode::SUCCESS);
    };
    match a.action {
        CacheAction::Info => {
            let (n, size) = cache.info();
            outln!(
                "{}: {n} entries, {:.1} MiB",
                dir.display(),
                size as f64 / (1 << 20) as f64
            );
        }
        CacheAction::Clear => {
            let n = cache
                .clear()
                .map_err(|e| Error::file(&dir, format!("cannot clear: {e}")))?;
            outln!("{}: removed {n} files", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
