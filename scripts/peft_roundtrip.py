#!/usr/bin/env python3
"""Loads lorascope's two repair outputs with transformers and PEFT and compares them.

Not part of CI (it needs torch, transformers and peft). Usage:

    lorascope repair BASE ADAPTER --lambda 0.5 --epsilon 0.7 -o repaired-adapter
    lorascope repair BASE ADAPTER --lambda 0.5 --epsilon 0.7 --format merged -o repaired-merged
    python scripts/peft_roundtrip.py --base BASE --adapter ADAPTER \
        --repaired-adapter repaired-adapter --repaired-merged repaired-merged

Checks, and prints the figures:
1. the repaired adapter loads with PeftModel.from_pretrained, and merge_and_unload gives the
   merged folder's weights (largest difference relative to the largest |weight|, per matrix);
2. the merged folder loads with from_pretrained with no missing or unexpected weights;
3. logits on a few sentences: repaired adapter (unmerged, as served) vs merged folder, and vs
   the original adapter (the repair changed something).
Exit 1 on a failed check.
"""

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from peft import PeftModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

SENTENCES = [
    "A gripping, beautifully shot film with a terrific cast.",
    "Tedious and overlong; I checked my watch twice.",
    "Not the best of the series, but it has its moments.",
    "The plot makes no sense and the jokes fall flat.",
]


def merged_weights(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        import json

        files = sorted(set(json.load(open(index))["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    out = {}
    for f in files:
        out.update(load_file(os.path.join(folder, f)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--repaired-adapter", required=True)
    ap.add_argument("--repaired-merged", required=True)
    a = ap.parse_args()
    ok = True
    torch.manual_seed(0)

    def base_model():
        return AutoModelForSequenceClassification.from_pretrained(a.base).eval()

    # 1. The adapter, merged by PEFT, against lorascope's merged weights.
    peft_repaired = PeftModel.from_pretrained(base_model(), a.repaired_adapter).eval()
    merged_by_peft = PeftModel.from_pretrained(base_model(), a.repaired_adapter).merge_and_unload()
    sd = {k: v.detach() for k, v in merged_by_peft.state_dict().items()}
    ours = merged_weights(a.repaired_merged)
    worst, worst_name, compared = 0.0, None, 0
    for name, w in ours.items():
        if name not in sd:
            print(f"not in PEFT's merged model: {name}")
            ok = False
            continue
        p = sd[name].to(torch.float64)
        q = w.to(torch.float64)
        rel = ((p - q).abs().max() / q.abs().max().clamp_min(1e-30)).item()
        compared += 1
        if rel > worst:
            worst, worst_name = rel, name
    print(f"1. PEFT merge_and_unload(repaired adapter) vs lorascope merged: {compared} tensors, "
          f"largest difference {worst:.2e} of max|W| ({worst_name})")
    if worst > 1e-5:
        ok = False

    # 2. The merged folder loads whole.
    merged_model, info = AutoModelForSequenceClassification.from_pretrained(
        a.repaired_merged, output_loading_info=True
    )
    merged_model.eval()
    missing, unexpected = info["missing_keys"], info["unexpected_keys"]
    print(f"2. from_pretrained(merged folder): missing {len(missing)}, unexpected {len(unexpected)}"
          + (f" {missing[:3]} {unexpected[:3]}" if missing or unexpected else ""))
    if missing or unexpected:
        ok = False

    # 3. Logits.
    tok = AutoTokenizer.from_pretrained(a.repaired_merged)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    original = PeftModel.from_pretrained(base_model(), a.adapter).eval()
    with torch.no_grad():
        l_adapter = peft_repaired(**batch).logits
        l_merged = merged_model(**batch).logits
        l_original = original(**batch).logits
    d_same = (l_adapter - l_merged).abs().max().item()
    d_changed = (l_adapter - l_original).abs().max().item()
    print(f"3. logits, repaired adapter vs merged folder: max |diff| {d_same:.2e}; "
          f"repaired vs original adapter: {d_changed:.2e}; "
          f"largest |logit| {l_merged.abs().max().item():.3f}")
    if d_same > 1e-4:
        ok = False
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
