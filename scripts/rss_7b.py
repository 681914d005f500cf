#!/usr/bin/env python3
"""Peak memory of a cold scan and of a cold `cache warm` on one LLaMA-7B-shaped block (q, k, v, o
4096x4096, gate, up 11008x4096, down 4096x11008; bf16 base, a rank-16 PEFT adapter), at the
default --memory unless --memory is given. Generated (by bench_7b.py's generator), never shipped.

Each command runs under /usr/bin/time -v (its "Maximum resident set size", which counts the
mapped checkpoints' file pages) while /proc/PID/status is sampled for the peak of RssAnon (memory
that is the process's own, not file pages). The target: peak anonymous memory <= 2 GiB.

Usage: scripts/rss_7b.py [--dir /tmp/lorascope-7b-1] [--exe target/release/lorascope]
                         [--memory 8G] [--jobs N]
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
    max_rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    return time.perf_counter() - t, max_rss / 2**20, peak_anon / 2**20


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/lorascope-7b-1")
    ap.add_argument("--exe", default=str(here.parent / "target/release/lorascope"))
    ap.add_argument("--memory")
    ap.add_argument("--jobs")
    a = ap.parse_args()
    d = Path(a.dir)
    bench.generate(d, 1)
    base, adapter = d / "base", d / "lora-a"
    files = sum(f.stat().st_size for f in [base / "model.safetensors",
                                           adapter / "adapter_model.safetensors"])
    extra = (["--memory", a.memory] if a.memory else []) + (["--jobs", a.jobs] if a.jobs else [])
    print(f"checkpoint files: {files / 2**30:.2f} GiB; options: {' '.join(extra) or 'defaults'}")
    print(f"{'command':<22} {'seconds':>8} {'max RSS GiB':>12} {'peak anon GiB':>14}")
    for name, cmd in [
        ("scan (cold)", ["scan", str(base), str(adapter), "--format", "json"]),
        ("cache warm (cold)", ["cache", "warm", str(base)]),
    ]:
        cache = Path(tempfile.mkdtemp(prefix="lorascope-rss-"))
        try:
            env = dict(os.environ, LORASCOPE_CACHE_DIR=str(cache))
            secs, rss, anon = measure([a.exe] + cmd + extra, env)
        finally:
            shutil.rmtree(cache)
        print(f"{name:<22} {secs:>8.1f} {rss:>12.2f} {anon:>14.2f}")


main()
