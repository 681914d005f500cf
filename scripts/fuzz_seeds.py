#!/usr/bin/env python3
"""Seed corpora for the fuzz targets (fuzz/corpus/<target>/), from tests/fixtures and small
files written here. Run by scripts/fuzz.sh when a target's corpus is empty."""
import json, pathlib, struct, sys

root = pathlib.Path(__file__).resolve().parent.parent
fx = root / "tests/fixtures/minilm"
corpus = root / "fuzz/corpus"


def st(tensors, meta=None):
    """A safetensors file: [(name, dtype, shape, bytes)]."""
    h = {"__metadata__": meta or {"format": "pt"}}
    off, data = 0, b""
    for name, dtype, shape, raw in tensors:
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        data += raw
    j = json.dumps(h).encode()
    j += b" " * (-len(j) % 8)
    return struct.pack("<Q", len(j)) + j + data


def f32(n, scale=1.0):
    return b"".join(struct.pack("<f", (i % 7 - 3) * scale) for i in range(n))


def put(target, name, data):
    d = corpus / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main(targets):
    if "safetensors" in targets:
        put("safetensors", "f32", st([("w", "F32", [4, 4], f32(16))]))
        put("safetensors", "f16", st([("w", "F16", [2, 3], bytes(range(12)))]))
        put("safetensors", "bf16", st([("a.weight", "BF16", [3, 2], bytes(range(12))),
                                       ("b.weight", "F32", [2, 2], f32(4))]))
        put("safetensors", "f64", st([("w", "F64", [2, 2], b"\0" * 32)]))
        put("safetensors", "adapter", (fx / "lora-r8/adapter_model.safetensors").read_bytes())
    if "index" in targets:
        idx = {"metadata": {"total_size": 128},
               "weight_map": {"x.weight": "a.safetensors", "y.weight": "b.safetensors"}}
        put("index", "two", json.dumps(idx).encode())
        idx["weight_map"] = {"x.weight": "a.safetensors"}
        put("index", "one", json.dumps(idx).encode())
    if "adapter" in targets:
        config = (fx / "lora-r8/adapter_config.json").read_bytes()
        tensors = (fx / "lora-r8/adapter_model.safetensors").read_bytes()
        put("adapter", "minilm-r8", struct.pack("<H", len(config)) + config + tensors)
        c = json.loads(config)
        c.update(use_rslora=True, use_dora=False, lora_alpha=8)
        c = json.dumps(c).encode()
        put("adapter", "rslora", struct.pack("<H", len(c)) + c + tensors)
    if "cache_entry" in targets:
        dim, keep, sigma = 3, 2, [3.0, 2.0, 1.0]
        # Magic, the base's group (16 bytes), then the sizes.
        body = b"LSCDEC02" + bytes(16) + struct.pack("<3Q", dim, keep, len(sigma))
        body += b"".join(struct.pack("<d", s) for s in sigma) + f32(dim * keep, 0.5)
        put("cache_entry", "small", body)
        put("cache_entry", "values-only", b"LSCDEC02" + bytes(16) + struct.pack("<3Q", 0, 0, 2)
            + struct.pack("<2d", 1.0, 0.5))


main(sys.argv[1:] or ["safetensors", "index", "adapter", "cache_entry"])
