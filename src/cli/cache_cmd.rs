use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lorascope::cache::{human_bytes, Cache};
use lorascope::engine::{Engine, Warmed};
use lorascope::shard::{self, Shard};
use lorascope::Error;

use super::{print_warnings, scan::open_cache, CacheAction, CacheCmdArgs, TextOrJson, WarmArgs};

pub fn run(a: CacheCmdArgs) -> Result<ExitCode, Error> {
    if let CacheAction::Warm(w) = &a.action {
        return warm(w, &a);
    }
    let cache = open_cache(&a.cache);
    print_warnings(&cache.take_warnings());
    let Some(dir) = cache.dir().map(|d| d.to_path_buf()) else {
        outln!("no cache (disabled or no location)");
        return Ok(ExitCode::SUCCESS);
    };
    match a.action {
        CacheAction::Info { format } => info(&cache, format),
        CacheAction::Clear => {
            let n = cache
                .clear()
                .map_err(|e| Error::file(&dir, format!("cannot clear: {e}")))?;
            outln!("{}: removed {n} files", dir.display());
        }
        CacheAction::Prune {
            max_size,
            older_than,
        } => {
            if max_size.is_none() && older_than.is_none() {
                return Err(Error::Usage(
                    "cache prune: give --max-size SIZE, --older-than DAYS, or both".into(),
                ));
            }
            let older = match older_than {
                Some(d) if !(d.is_finite() && d >= 0.0) => {
                    return Err(Error::Usage(format!(
                        "--older-than must be a number of days ≥ 0, got {d}"
                    )))
                }
                d => d.map(|d| Duration::from_secs_f64(d * 86400.0)),
            };
            let p = cache
                .prune(max_size, older)
                .map_err(|e| Error::file(&dir, format!("cannot prune: {e}")))?;
            outln!(
                "{}: removed {} ({}); {} ({}) kept",
                dir.display(),
                files(p.removed),
                human_bytes(p.removed_bytes),
                files(p.kept),
                human_bytes(p.kept_bytes)
            );
        }
        CacheAction::Verify => {
            let pb = super::scan::progress_bar(0);
            pb.set_message("checking entries");
            let v = cache
                .verify(&|n, of| {
                    pb.set_length(of as u64);
                    pb.set_position(n as u64)
                })
                .map_err(|e| Error::file(&dir, format!("cannot verify: {e}")))?;
            pb.finish_and_clear();
            for p in &v.removed {
                eprintln!("removed damaged entry {}", p.display());
            }
            outln!(
                "{}: checked {} ({}), {} damaged{}",
                dir.display(),
                files(v.checked),
                human_bytes(v.bytes),
                v.removed.len(),
                if v.removed.is_empty() {
                    ""
                } else {
                    " (removed: scans recompute them)"
                }
            );
            if !v.removed.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        CacheAction::Warm(_) => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn files(n: usize) -> String {
    lorascope::report::count(n, "file", "files")
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `just now`, `12 min ago`, `5 h ago`, `3 days ago`.
fn ago(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match s {
        0..60 => "just now".into(),
        60..3600 => format!("{} min ago", s / 60),
        3600..172800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

fn info(cache: &Cache, format: TextOrJson) {
    let dir = cache.dir().unwrap();
    let usage = cache.usage();
    let (n, size) = (
        usage.iter().map(|u| u.entries).sum::<usize>(),
        usage.iter().map(|u| u.size).sum::<u64>(),
    );
    let base = |u: &lorascope::cache::BaseUsage| {
        u.label.clone().unwrap_or_else(|| match u.group {
            Some(g) => format!("(a base, layout {:032x})", g),
            None => "(unknown base)".into(),
        })
    };
    match format {
        TextOrJson::Json => {
            let bases: Vec<serde_json::Value> = usage
                .iter()
                .map(|u| {
                    serde_json::json!({
                        "base": u.label,
                        "layout_key": u.group.map(|g| format!("{g:032x}")),
                        "entries": u.entries,
                        "bytes": u.size,
                        "last_used": unix(u.last_used),
                    })
                })
                .collect();
            let v = serde_json::json!({
                "dir": dir.display().to_string(),
                "entries": n,
                "bytes": size,
                "bases": bases,
            });
            outln!("{}", serde_json::to_string_pretty(&v).unwrap());
        }
        TextOrJson::Table => {
            outln!("{}: {n} entries, {}", dir.display(), human_bytes(size));
            if usage.is_empty() {
                return;
            }
            outln!(
                "{:>8}  {:>10}  {:>12}  base",
                "entries",
                "size",
                "last used"
            );
            for u in &usage {
                outln!(
                    "{:>8}  {:>10}  {:>12}  {}",
                    u.entries,
                    human_bytes(u.size),
                    ago(u.last_used),
                    lorascope::report::shown_name(&base(u), None)
                );
            }
        }
    }
}

/// This worker's shard: `--shard`, else the scheduler's variables, else everything.
fn which_shard(w: &WarmArgs) -> Result<Shard, Error> {
    if let Some(s) = w.shard {
        if w.shards.is_some_and(|n| n != s.count) {
            return Err(Error::Usage(format!(
                "--shard {s} and --shards {} disagree",
                w.shards.unwrap()
            )));
        }
        return Ok(s);
    }
    let from_env = shard::from_env(&|k| std::env::var(k).ok(), w.shards).map_err(Error::Usage)?;
    match (from_env, w.shards) {
        (Some(s), _) => Ok(s),
        (None, Some(n)) => Err(Error::Usage(format!(
            "--shards {n} without an index: give --shard I/{n}, or run inside a Slurm array or \
             a Kubernetes indexed Job"
        ))),
        (None, None) => Ok(Shard::WHOLE),
    }
}

fn warm(w: &WarmArgs, a: &CacheCmdArgs) -> Result<ExitCode, Error> {
    if a.cache.no_cache {
        return Err(Error::Usage(
            "cache warm fills the cache: drop --no-cache".into(),
        ));
    }
    w.compute.check()?;
    let shard = which_shard(w)?;
    let base = lorascope::checkpoint::locate::resolve(
        &w.base,
        &lorascope::checkpoint::locate::HubCache::from_env(),
    )?;
    let inputs = lorascope::checkpoint::Inputs::base_only(&base, &w.select.selection()?)?;
    print_warnings(&inputs.warnings);
    if inputs.selected().next().is_none() {
        return Err(Error::Usage(
            "no matrices selected: check --include/--exclude, or run `lorascope inspect`".into(),
        ));
    }
    let cache = open_cache(&a.cache);
    print_warnings(&cache.take_warnings());
    let Some(dir) = cache.dir().map(|d| d.to_path_buf()) else {
        return Err(Error::Usage(
            "cache warm: no cache location (set --cache-dir or LORASCOPE_CACHE_DIR)".into(),
        ));
    };
    let engine = Engine::new(inputs, cache, w.compute.options());
    let all = engine.matrices();
    let items: Vec<(&str, f64)> = all
        .iter()
        .map(|p| (p.name.as_str(), engine.base_cost(p)))
        .collect();
    let mine = shard::select(&items, shard);
    let total_cost: f64 = items.iter().map(|i| i.1).sum();
    let my_cost: f64 = mine.iter().map(|&i| items[i].1).sum();
    outln!(
        "shard {shard}: {} of {} matrices, {:.1} % of the estimated cost",
        mine.len(),
        all.len(),
        100.0 * my_cost / total_cost.max(f64::MIN_POSITIVE)
    );
    let jobs = w.compute.jobs_for(mine.len(), super::scan::default_jobs());
    let start = Instant::now();
    let pb = super::scan::progress_bar(mine.len());
    let (done, computed, cached, small) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    // Largest first, so the last matrices to finish are small ones.
    let mut order = mine.clone();
    order.sort_by(|&x, &y| items[y].1.total_cmp(&items[x].1));
    let failures: Vec<(String, String)> = lorascope::engine::in_parallel(order.len(), jobs, |k| {
        let p = all[order[k]];
        let r = engine.warm(p);
        match r {
            Ok(Warmed::Computed) => computed.fetch_add(1, Ordering::Relaxed),
            Ok(Warmed::Cached) => cached.fetch_add(1, Ordering::Relaxed),
            Ok(Warmed::TooSmall) => small.fetch_add(1, Ordering::Relaxed),
            Err(_) => 0,
        };
        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
        pb.set_position(n as u64);
        pb.set_message(p.name.clone());
        r.err().map(|e| (p.name.clone(), e.to_string()))
    })
    .into_iter()
    .flatten()
    .collect();
    pb.finish_and_clear();
    engine.inputs.check_intact()?;
    print_warnings(&engine.cache.take_warnings());
    if !engine.cache.writable() {
        return Err(Error::file(
            &dir,
            "cannot write to the cache: nothing was warmed",
        ));
    }
    for (name, e) in &failures {
        eprintln!("error: {}: {e}", lorascope::report::shown_name(name, None));
    }
    let small = small.into_inner();
    outln!(
        "cache warm: {} decomposed, {} already cached, {} failed{} in {:.1} s",
        computed.into_inner(),
        cached.into_inner(),
        failures.len(),
        if small > 0 {
            format!(", {small} too small to cache")
        } else {
            String::new()
        },
        start.elapsed().as_secs_f64()
    );
    super::warn_if_cache_large(&engine.cache);
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
