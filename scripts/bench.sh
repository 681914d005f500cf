#!/usr/bin/env bash
# Side-by-side benchmarks: the base decomposition (lorascope's SVD and Gram routes, and NumPy's
# LAPACK SVD, gesdd, f64, same sizes), the tuned top-k and LoRA routes against a full SVD, and
# the explorer's frame time; one run, same machine. scripts/bench_7b.py is the end-to-end one.
# Needs numpy (pip install numpy). LORASCOPE_BENCH_BIG=1 adds 4096×4096.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench decompose
cargo bench --bench topk
cargo bench --bench render
# OPENBLAS_CORETYPE/L2_SIZE slow a current numpy on some machines: unset for this command only.
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 - <<'PY'
import os, time, numpy as np
sizes = [(768, 768), (768, 3072), (3072, 768), (2048, 2048)] + ([(4096, 4096)] if os.environ.get("LORASCOPE_BENCH_BIG") else [])
print(f"{'matrix':>11}  {'numpy gesdd s':>13}")
for m, n in sizes:
    w = np.random.default_rng(42).standard_normal((m, n)) / np.sqrt(n)
    runs = 3 if m * n >= 2048 * 2048 else 5
    t = []
    for _ in range(runs):
        s = time.perf_counter(); np.linalg.svd(w, full_matrices=False); t.append(time.perf_counter() - s)
    print(f"{m}×{n:>6}  {sorted(t)[len(t)//2]:>13.3f}")
PY
