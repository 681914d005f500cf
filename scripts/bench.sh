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
# The Lanczos solvers a Python user has (scipy.sparse.linalg.svds), on matrices made as the topk
# bench makes them, against gesdd: what an accurate iterative top-10 costs elsewhere. Optional.
if env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 -c "import scipy" 2>/dev/null; then
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 - <<'PY'
import os, time, warnings, numpy as np, scipy.linalg as la, scipy.sparse.linalg as sla
warnings.simplefilter("ignore")
rng = np.random.default_rng(7)
sizes = [2048] + ([4096] if os.environ.get("LORASCOPE_BENCH_BIG") else [])
print("\nscipy svds, k = 10, W = W0 + small noise, against gesdd of W (median of 3; gesdd: faster of 2)")
print(f"{'n':>6} {'spectrum':>9} {'solver':>8}  {'gesdd s':>8}  {'svds s':>8}  {'speedup':>8}  {'max|Δc_j|':>10}")
for n in sizes:
    for kind in ["gaussian", "decaying"]:
        if kind == "gaussian":
            w0 = rng.standard_normal((n, n)) / np.sqrt(n)
        else:
            u = np.linalg.qr(rng.standard_normal((n, n)))[0]
            v = np.linalg.qr(rng.standard_normal((n, n)))[0]
            w0 = (u / (1 + 0.02 * np.arange(n))) @ v.T
        w = w0 + 0.05 * rng.standard_normal((n, n)) / np.sqrt(n)
        u0 = np.linalg.svd(w0)[0]
        cj = lambda u: np.abs(u0.T @ u).max(axis=0)
        t_svd = []
        for _ in range(2):
            s = time.perf_counter(); U = la.svd(w, full_matrices=False, lapack_driver="gesdd")[0]
            t_svd.append(time.perf_counter() - s)
        t_svd, exact = min(t_svd), cj(U[:, :10])
        for solver in ["arpack", "propack", "lobpcg"]:
            try:
                ts = []
                for _ in range(3):
                    s = time.perf_counter()
                    u, sv, _ = sla.svds(w, k=10, solver=solver, random_state=0)
                    ts.append(time.perf_counter() - s)
                t = sorted(ts)[1]
                err = np.abs(cj(u[:, np.argsort(-sv)]) - exact).max()
                print(f"{n:>6} {kind:>9} {solver:>8}  {t_svd:>8.3f}  {t:>8.3f}  {t_svd / t:>7.1f}×  {err:>10.1e}")
            except Exception as e:
                print(f"{n:>6} {kind:>9} {solver:>8}  failed: {str(e).splitlines()[0][:60]}")
PY
else
echo "(scipy not installed: skipping the svds comparison)"
fi
