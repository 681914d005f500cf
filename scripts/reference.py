#!/usr/bin/env python3
"""Independent reference for `lorascope scan`: the paper's method in NumPy (float64).

Reads safetensors with the standard library only (no torch, no safetensors package), applies a
PEFT adapter as W0 + (alpha/r)·B·A when TUNED is an adapter folder (plain LoRA only), takes thin
SVDs of W0 and W as stored (out, in), and for each of the top k left singular vectors of W
computes c_j = max_i |<u0_i, u_j>| over all base left singular vectors.

    python3 scripts/reference.py BASE TUNED [--k 10] [--compare scan.json]

With --compare it reads `lorascope scan --format json` output and prints the largest |Δc_j|;
exit 1 if it is above 1e-4. Not run by CI (NumPy may be absent).
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8 : 8 + n])
    data = buf[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = data[a:b]
        if info["dtype"] == "BF16":
            x = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            x = np.frombuffer(raw, dtype=np.dtype(DT[info["dtype"]]).newbyteorder("<"))
        out[name] = x.reshape(info["shape"]).astype(np.float64)
    return out


def selected(name):
    return (name.endswith(".weight") and re.search(r"(^|\.)(layers|layer|h|blocks|block)\.\d+\.", name)
            and not re.search(r"(?i)(norm|embed|lm_head|pooler|classifier)", name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("tuned")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--compare")
    a = ap.parse_args()
    base = load(a.base)
    if os.path.isfile(os.path.join(a.tuned, "adapter_config.json")):
        cfg = json.load(open(os.path.join(a.tuned, "adapter_config.json")))
        ad = load(os.path.join(a.tuned, "adapter_model.safetensors"))
        tuned = {}
        for name, A in ad.items():
            if name.endswith(".lora_A.weight"):
                mod = name[len("base_model.model."):-len(".lora_A.weight")]
                B = ad[name.replace("lora_A", "lora_B")]
                tuned[mod + ".weight"] = base[mod + ".weight"] + (cfg["lora_alpha"] / A.shape[0]) * (B @ A)
    else:
        tuned = {n: w for n, w in load(a.tuned).items() if selected(n)}
    result = {}
    for name in sorted(tuned):
        w0, w = base[name], tuned[name]
        u0 = np.linalg.svd(w0, full_matrices=False)[0]
        u = np.linalg.svd(w, full_matrices=False)[0]
        result[name] = np.abs(u[:, : a.k].T @ u0).max(axis=1).tolist()
    total = sum(sum(c < 0.5 for c in cs) for cs in result.values())
    print(f"{len(result)} matrices, {total} intruders at k={a.k}, eps=0.5")
    if a.compare:
        ours = {m["name"]: m["max_cos"] for m in json.load(open(a.compare))["matrices"]}
        worst = max(abs(x - y) for n, cs in result.items() for x, y in zip(cs, ours[n]))
        print(f"largest |c_j(numpy) - c_j(lorascope)| = {worst:.2e}")
        sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main()
