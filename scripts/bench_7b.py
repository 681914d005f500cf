#!/usr/bin/env python3
"""End-to-end benchmark on a 2-block model of LLaMA-7B shapes (14 matrices: q,k,v,o 4096x4096,
gate,up 11008x4096, down 4096x11008 per block), bf16 base, two rank-16 PEFT adapters.

Runs, side by side on the same files and machine:
  1. lorascope scan, cold cache (base and tuned decomposed);
  2. lorascope scan of a second adapter of the same base (base warm from the cache: the case
     of a user comparing adapters or re-running after training more), once with the OS page
     cache dropped first (where allowed: root) and once with another new adapter and the files
     already in the page cache, since reading ~2 GiB from disk is a visible part of it;
  3. the same scan again (everything warm);
  4. the paper's method in NumPy: full thin SVDs (LAPACK gesdd, float32 as the authors' code)
     of W0 and of W = W0 + s*B*A, then c_j for the top 10, with a scan of yet another new
     adapter before each of its matrices and after the last: the new-adapter row is the median
     of these scans and the one in step 2, since this machine's speed drifts within minutes.
and prints the ratios, peak anonymous memory (RSS minus mapped file pages) of each scan, and the
largest c_j difference between lorascope and NumPy.

Usage: scripts/bench_7b.py [--dir /tmp/lorascope-7b] [--blocks 2] [--paper-matrices N]
                          [--reuse-cache] [--paper-sample]
Needs numpy and a release build (cargo build --release). Takes tens of minutes; not run in CI.
"""
import argparse, json, os, shutil, subprocess, sys, time
from pathlib import Path

import numpy as np

H, I, R, ALPHA = 4096, 11008, 16, 32
MODULES = [("self_attn.q_proj", H, H), ("self_attn.k_proj", H, H), ("self_attn.v_proj", H, H),
           ("self_attn.o_proj", H, H), ("mlp.gate_proj", I, H), ("mlp.up_proj", I, H),
           ("mlp.down_proj", H, I)]


def to_bf16(x):
    b = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(u):
    return (u.astype(np.uint32) << 16).view(np.float32)


def write_st(path, tensors):
    """tensors: list of (name, dtype str, shape, np array of raw bytes-compatible data)."""
    header, off, blobs = {}, 0, []
    for name, dt, shape, arr in tensors:
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)
    tmp.rename(path)


def generate(d, blocks):
    rng = np.random.default_rng(0)
    base = d / "base"
    if not (base / "model.safetensors").exists():
        base.mkdir(parents=True, exist_ok=True)
        ts = []
        for b in range(blocks):
            for mod, out, inp in MODULES:
                # Gaussian with decaying column scales: a decaying spectrum like real weights.
                scale = (1.0 / (1.0 + 0.002 * np.arange(inp, dtype=np.float32))) / np.sqrt(inp)
                w = rng.standard_normal((out, inp), dtype=np.float32) * scale
                ts.append((f"model.layers.{b}.{mod}.weight", "BF16", (out, inp), to_bf16(w)))
        write_st(base / "model.safetensors", ts)
    for tag, seed in [("lora-a", 1), ("lora-b", 2)]:
        if not (d / tag / "adapter_model.safetensors").exists():
            write_adapter(d / tag, seed, blocks)


def write_adapter(ad, seed, blocks):
    ad.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ts = []
    for b in range(blocks):
        for mod, out, inp in MODULES:
            pre = f"base_model.model.model.layers.{b}.{mod}"
            a = (rng.standard_normal((R, inp), dtype=np.float32) / np.sqrt(inp)).astype(np.float32)
            # An update of the size of the base's top singular values: a few intruders, as in practice.
            bb = (rng.standard_normal((out, R), dtype=np.float32) * 0.01).astype(np.float32)
            ts.append((f"{pre}.lora_A.weight", "F32", (R, inp), a))
            ts.append((f"{pre}.lora_B.weight", "F32", (out, R), bb))
    write_st(ad / "adapter_model.safetensors", ts)
    (ad / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "base_model_name_or_path": "synthetic-7b",
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    }))


def anon_kib(pid):
    """A process's anonymous resident memory now (KiB; 0 once it is gone)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_scan(exe, base, tuned, cache, out_json):
    """Wall time and peak anonymous RSS (sampled from /proc) of one scan."""
    env = dict(os.environ, LORASCOPE_CACHE_DIR=str(cache))
    t = time.perf_counter()
    with open(out_json, "w") as f:
        p = subprocess.Popen([exe, "scan", str(base), str(tuned), "--format", "json"], stdout=f, env=env)
        peak = 0
        while p.poll() is None:
            peak = max(peak, anon_kib(p.pid))
            time.sleep(0.02)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"scan failed with {p.returncode}")
    return dt, peak / 1024 / 1024


def drop_page_cache():
    """Empties the OS page cache (needs root); False where that is not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def paper_method(d, blocks, limit, adapter, sample, between=lambda: None):
    """Full thin SVDs of W0 and W per matrix (float32, gesdd), c_j for the top 10. Calls
    `between` before each matrix (to interleave the scans timed against it)."""
    import struct

    def load(path):
        raw = open(path, "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        hdr = json.loads(raw[8:8 + n])
        return hdr, memoryview(raw)[8 + n:]

    bh, bd = load(d / "base" / "model.safetensors")
    ah, ad = load(adapter / "adapter_model.safetensors")

    def tensor(h, data, name, dt):
        a, b = h[name]["data_offsets"]
        return np.frombuffer(data[a:b], dtype=dt).reshape(h[name]["shape"])

    out, times = {}, []
    names = [(b, m) for b in range(blocks) for m in MODULES][:limit]
    if sample:  # one matrix of each shape (q, gate, down), weighted by how often it occurs
        names = [(0, MODULES[0]), (0, MODULES[4]), (0, MODULES[6])]
    for b, (mod, _, _) in names:
        name = f"model.layers.{b}.{mod}.weight"
        w0 = from_bf16(tensor(bh, bd, name, np.uint16))
        pre = f"base_model.model.model.layers.{b}.{mod}"
        A = tensor(ah, ad, f"{pre}.lora_A.weight", np.float32)
        B = tensor(ah, ad, f"{pre}.lora_B.weight", np.float32)
        between()
        t = time.perf_counter()
        w = w0 + (ALPHA / R) * (B @ A)
        u0 = np.linalg.svd(w0, full_matrices=False)[0]
        u = np.linalg.svd(w, full_matrices=False)[0]
        c = np.abs(u0.T @ u[:, :10]).max(axis=0)
        times.append(time.perf_counter() - t)
        out[name] = c
        print(f"  paper method {name}: {times[-1]:.1f} s", flush=True)
    return out, times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/lorascope-7b")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--paper-matrices", type=int, default=99, help="time the paper's method on the first N")
    ap.add_argument("--reuse-cache", action="store_true",
                    help="keep the cache of an earlier run (its base decompositions), skip the cold scan and "
                         "scan a freshly written adapter (never cached) as the new one")
    ap.add_argument("--paper-sample", action="store_true",
                    help="time the paper's method on one matrix of each shape and weight by their counts")
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    exe = str(root / "target" / "release" / "lorascope")
    d = Path(args.dir)
    generate(d, args.blocks)
    cache = d / "cache"
    base = d / "base"
    adapter = d / "lora-b"
    if args.reuse_cache:
        cold = cold_mem = None
        adapter = d / "lora-fresh"
        shutil.rmtree(adapter, ignore_errors=True)
        write_adapter(adapter, int(time.time()), args.blocks)
    else:
        shutil.rmtree(cache, ignore_errors=True)
        print("lorascope scan, cold cache (adapter a) …", flush=True)
        cold, cold_mem = run_scan(exe, base, d / "lora-a", cache, d / "scan-a.json")
    rows = [("lorascope, cold cache", cold, cold_mem)] * (cold is not None)
    if drop_page_cache():
        print("lorascope scan, new adapter of a cached base, page cache dropped …", flush=True)
        t, mem = run_scan(exe, base, adapter, cache, d / "scan-b0.json")
        rows.append(("lorascope, new adapter, page cache dropped", t, mem))
        # Another adapter never scanned, now with the files in the page cache.
        adapter = d / "lora-fresh-warm"
        shutil.rmtree(adapter, ignore_errors=True)
        write_adapter(adapter, int(time.time()) + 1, args.blocks)
        label = "lorascope, new adapter, base cached"
    else:
        label = "lorascope, new adapter (page cache as found)"
    print("lorascope scan, new adapter of a cached base …", flush=True)
    warm_base, warm_base_mem = run_scan(exe, base, adapter, cache, d / "scan-b.json")
    print("lorascope scan, all cached (the same adapter again) …", flush=True)
    warm, warm_mem = run_scan(exe, base, adapter, cache, d / "scan-b2.json")
    # This machine's speed drifts by tens of percent within minutes: more new-adapter scans run
    # between the paper method's matrices and after them, and the row reports their median.
    warm_runs = [warm_base]

    def another_scan():
        fresh = d / "lora-fresh-more"
        shutil.rmtree(fresh, ignore_errors=True)
        write_adapter(fresh, int(time.time()) + 2 + len(warm_runs), args.blocks)
        t, _ = run_scan(exe, base, fresh, cache, d / "scan-more.json")
        warm_runs.append(t)
        print(f"  new-adapter scan {len(warm_runs)}: {t:.2f} s", flush=True)

    print("the paper's method (NumPy, float32 gesdd) on the same adapter, new-adapter scans between …",
          flush=True)
    ref, times = paper_method(d, args.blocks, args.paper_matrices, adapter, args.paper_sample,
                              another_scan)
    another_scan()
    rows.append((label + f" (median of {len(warm_runs)})", float(np.median(warm_runs)), warm_base_mem))
    rows.append(("lorascope, all cached", warm, warm_mem))
    n = 7 * args.blocks
    if args.paper_sample:
        paper = (4 * times[0] + 2 * times[1] + times[2]) * args.blocks
    else:
        paper = sum(times) * n / len(times)
    scan = json.load(open(d / "scan-b.json"))
    dc = 0.0
    for m in scan["matrices"]:
        if m["name"] in ref:
            got = np.array(m["max_cos"][:10])
            dc = max(dc, float(np.abs(got - ref[m["name"]]).max()))
    cache_bytes = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    model_bytes = (base / "model.safetensors").stat().st_size
    print()
    print(f"{n} matrices ({args.blocks} blocks of LLaMA-7B shapes), rank-{R} adapters, {os.cpu_count()} cores")
    print(f"{'run':<58} {'seconds':>9} {'ratio':>9} {'peak anon GiB':>14}")
    print(f"{'paper method (NumPy f32 gesdd, base + tuned)':<58} {paper:>9.1f} {1.0:>9.1f}   "
          + ("" if len(times) == n else f"(timed on {len(times)}, scaled by shape counts)"))
    for label, t, mem in rows:
        print(f"{label:<58} {t:>9.2f} {paper / t:>8.0f}× {mem:>14.2f}")
    print(f"new-adapter scans, in order: {', '.join(f'{t:.2f}' for t in warm_runs)} s")
    print(f"max |Δc_j| lorascope vs NumPy (top 10): {dc:.1e}")
    print(f"cache: {cache_bytes / 2**30:.2f} GiB for a {model_bytes / 2**30:.2f} GiB bf16 model")
    print(f"extrapolated to 32 blocks (224 matrices), new adapter of a cached base: "
          f"{float(np.median(warm_runs)) * 32 / args.blocks:.0f} s")


if __name__ == "__main__":
    main()
