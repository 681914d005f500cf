#!/usr/bin/env python3
"""Cut the small test fixtures in tests/fixtures/minilm/ out of ../shared/checkpoints/.

Pure standard library: tensors are copied byte for byte, so values are exactly the originals.
Run from the repository root: python3 scripts/make_fixtures.py [SHARED_CHECKPOINTS_DIR]
"""
import json
import os
import struct
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "../shared/checkpoints"
DST = "tests/fixtures/minilm"
MATRICES = [
    "bert.encoder.layer.5.attention.output.dense.weight",  # the LoRA run's one intruder at eps=0.5
    "bert.encoder.layer.5.attention.self.query.weight",
]
HEAD = ["classifier.weight", "classifier.bias"]
# The full fine-tune's only two intruders at eps 0.8-0.9: query vectors 3 and 4, a rotation
# inside a near-degenerate base pair (the degenerate-aware rule's case). Files of their own, so
# the fixtures above keep their two matrices.
DEGENERATE = "bert.encoder.layer.1.attention.self.query.weight"


def read(path):
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8 : 8 + n])
    return header, buf[8 + n :]


def write(path, tensors, metadata):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, off = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))


def cut(src, names, rename=lambda n: n):
    header, data = read(src)
    out = []
    for n in names:
        info = header[n]
        a, b = info["data_offsets"]
        out.append((rename(n), info["dtype"], info["shape"], data[a:b]))
    return out, header.get("__metadata__")


def main():
    os.makedirs(f"{DST}/lora-r8", exist_ok=True)
    os.makedirs(f"{DST}/headers", exist_ok=True)
    for run, names in [("base", MATRICES + HEAD), ("full-ft", MATRICES + HEAD), ("lora-r8-merged", MATRICES)]:
        t, meta = cut(f"{SRC}/minilm-{run}/model.safetensors", names)
        write(f"{DST}/{run}.safetensors", t, meta)
    os.makedirs(f"{DST}/layer1-query", exist_ok=True)
    for run in ["base", "full-ft"]:
        t, meta = cut(f"{SRC}/minilm-{run}/model.safetensors", [DEGENERATE])
        write(f"{DST}/layer1-query/{run}.safetensors", t, meta)
    lora = []
    for m in MATRICES:
        mod = m[: -len(".weight")]
        lora += [f"base_model.model.{mod}.lora_A.weight", f"base_model.model.{mod}.lora_B.weight"]
    lora += [f"base_model.model.{h}" for h in HEAD]
    t, meta = cut(f"{SRC}/minilm-lora-r8/adapter_model.safetensors", lora)
    write(f"{DST}/lora-r8/adapter_model.safetensors", t, meta)
    with open(f"{SRC}/minilm-lora-r8/adapter_config.json") as f:
        cfg = f.read()
    with open(f"{DST}/lora-r8/adapter_config.json", "w") as f:
        f.write(cfg)
    # Whole headers (names, shapes, dtypes, offsets) of the real files, for pairing tests.
    for run, file in [("base", "minilm-base/model.safetensors"), ("full-ft", "minilm-full-ft/model.safetensors"),
                      ("lora-r8", "minilm-lora-r8/adapter_model.safetensors")]:
        header, _ = read(f"{SRC}/{file}")
        with open(f"{DST}/headers/{run}.json", "w") as f:
            json.dump(header, f, indent=0, sort_keys=True)
    # The NumPy reference's figures for the fixture matrices.
    ref = {}
    for run in ["full-ft", "lora-r8"]:
        with open(f"{SRC}/reference/minilm-{run}.json") as f:
            r = json.load(f)
        ref[run] = {m["name"]: {"left": m["left"]["max_cos"], "right": m["right"]["max_cos"]}
                    for m in r["matrices"] if m["name"] in MATRICES}
        ref[run + "/totals"] = r["totals"]["encoder_linear"]
    with open(f"{DST}/reference.json", "w") as f:
        json.dump(ref, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
