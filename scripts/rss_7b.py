#!/usr/bin/env python3
"""Time and memory of the scans a user runs on one LLaMA-7B-shaped block (q, k, v, o 4096x4096,
gate, up 11008x4096, down 4096x11008; bf16 base, rank-16 PEFT adapters), at the default --memory
unless --memory is given. Generated (by bench_7b.py's generator), never shipped. In one cache:
  scan (cold)          nothing cached: every base and tuned matrix decomposed;
  scan (new adapter)   the base cached, an adapter never seen (the everyday case), twice;
  scan (all cached)    the first adapter again;
then, in an empty cache, a cold `cache warm` of the base.

Each command runs under /usr/bin/time -v (wall, user and system time; "Maximum resident set
size", which counts the mapped checkpoints' file pages) while /proc/PID/status is sampled for the
peak of RssAnon (memory that is the process's own, not file pages).

Usage: scripts/rss_7b.py [--dir /tmp/lorascope-7b-1] [--exe target/release/lorascope]
                         [--memory 8G] [--jobs N] [--cache DIR] [--repeat N]
--cache DIR keeps the scans' cache there; with --warm-only only the warm rows are timed (the first
run fills DIR), each the best of --repeat runs.
Needs numpy and a release build. About two minutes per cold command on 2 cores.
"""
import argparse, importlib.util, os, re, shutil, subprocess, sys, tempfile, time
from pathlib import Path

here = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("bench_7b", here / "bench_7b.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def measure(cmd, env):
    t = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-v"] + cmd, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anon, child = 0, None
    while p.poll() is None:
        if child is None:
            try:
                kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
                child = int(kids[0]) if kids else None
            except OSError:
                pass
        if child is not None:
            peak_anon = max(peak_anon, bench.anon_kib(child))
        time.sleep(0.02)
    err = p.stderr.read()
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({p.returncode}):\n{err}")
    field = lambda name: float(re.search(name + r": ([\d.]+)", err).group(1))
    return (time.perf_counter() - t, field("User time \\(seconds\\)"),
            field("System time \\(seconds\\)"),
            field("Maximum resident set size \\(kbytes\\)") / 2**20, peak_anon / 2**20)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/lorascope-7b-1")
    ap.add_argument("--exe", default=str(here.parent / "target/release/lorascope"))
    ap.add_argument("--memory")
    ap.add_argument("--jobs")
    ap.add_argument("--cache")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--warm-only", action="store_true", help="with --cache: no cold rows")
    a = ap.parse_args()
    d = Path(a.dir)
    bench.generate(d, 1)
    base = d / "base"
    files = sum(f.stat().st_size for f in [base / "model.safetensors",
                                           d / "lora-a" / "adapter_model.safetensors"])
    extra = (["--memory", a.memory] if a.memory else []) + (["--jobs", a.jobs] if a.jobs else [])
    print(f"checkpoint files: {files / 2**30:.2f} GiB; options: {' '.join(extra) or 'defaults'}")
    print(f"{'command':<22} {'wall s':>7} {'user s':>7} {'sys s':>6} {'sys %':>6}"
          f" {'max RSS GiB':>12} {'peak anon GiB':>14}")

    def row(name, cmds, cache):
        env = dict(os.environ, LORASCOPE_CACHE_DIR=str(cache))
        wall, user, sys_, rss, anon = min((measure([a.exe] + c + extra, env) for c in cmds),
                                          key=lambda r: r[0])
        print(f"{name:<22} {wall:>7.2f} {user:>7.2f} {sys_:>6.2f} {100 * sys_ / wall:>5.0f}%"
              f" {rss:>12.2f} {anon:>14.2f}", flush=True)

    scan = lambda tag: ["scan", str(base), str(d / tag), "--format", "json"]
    cache = Path(a.cache) if a.cache else Path(tempfile.mkdtemp(prefix="lorascope-rss-"))
    cache.mkdir(parents=True, exist_ok=True)
    try:
        if a.warm_only:
            # Fills the cache if it is empty; not timed.
            subprocess.run([a.exe] + scan("lora-a") + extra, check=True, stdout=subprocess.DEVNULL,
                           env=dict(os.environ, LORASCOPE_CACHE_DIR=str(cache)))
        else:
            row("scan (cold)", [scan("lora-a")], cache)
        # An adapter never seen for each run: its own decompositions are not cached yet.
        fresh = []
        for _ in range(a.repeat):
            tag = f"lora-new-{time.time_ns()}"
            bench.write_adapter(d / tag, time.time_ns() % 2**32, 1)
            fresh.append(tag)
        try:
            row("scan (new adapter)", [scan(t) for t in fresh], cache)
        finally:
            for t in fresh:
                shutil.rmtree(d / t)
        row("scan (all cached)", [scan("lora-a")] * a.repeat, cache)
    finally:
        if not a.cache:
            shutil.rmtree(cache)
    if a.warm_only:
        return
    empty = Path(tempfile.mkdtemp(prefix="lorascope-rss-"))
    try:
        row("cache warm (cold)", [["cache", "warm", str(base)]], empty)
    finally:
        shutil.rmtree(empty)


main()
