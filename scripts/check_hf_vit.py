#!/usr/bin/env python3
"""Checks an image run's exports in transformers: the PEFT folder applied to the base
`Dinov2Model` / `ViTModel` with `PeftModel.from_pretrained`, and the merged folder loaded
as a plain model, each with the exported head, against the logits of
`capaboost eval --predictions` (not in CI; needs torch, transformers, peft, pillow).

Feed it images already at the model's input size (PNG), so that preprocessing is the same
in both stacks (no resize; PIL and the image crate resample differently):

    python3 scripts/check_hf_vit.py --base BASE --peft PEFT --merged MERGED \\
        --predictions preds.tsv --image-size 56
"""
import argparse
import csv
import json
import os

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel


def head_logits(model, head_dir, pixels):
    cfg = json.load(open(os.path.join(head_dir, "head_config.json")))
    head = load_file(os.path.join(head_dir, "head.safetensors"))
    with torch.no_grad():
        h = model(pixel_values=pixels).last_hidden_state
        pooled = h[:, 0] if cfg["pooling"] == "cls" else h[:, 1:].mean(1)
        return pooled @ head["weight"].T + head["bias"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--peft")
    ap.add_argument("--merged")
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--image-size", type=int, required=True)
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.predictions), delimiter="\t"))
    cols = [c for c in rows[0] if c.startswith("logit_")]
    want = torch.tensor([[float(r[c]) for c in cols] for r in rows])
    proc = AutoImageProcessor.from_pretrained(a.base)
    imgs = [Image.open(r["path"]).convert("RGB") for r in rows]
    n = a.image_size
    pixels = proc(images=imgs, size={"height": n, "width": n}, do_center_crop=False,
                  return_tensors="pt")["pixel_values"]
    base = AutoModel.from_pretrained(a.base).eval()
    with torch.no_grad():
        moved = (head_logits(base, a.peft or a.merged, pixels) - want).abs().max().item()
    print(f"{len(rows)} images; the adapters move the logits by up to {moved:.3g}")
    if a.peft:
        from peft import PeftModel
        model = PeftModel.from_pretrained(AutoModel.from_pretrained(a.base), a.peft).eval()
        got = head_logits(model, a.peft, pixels)
        print(f"PEFT:   max |logit difference| {(got - want).abs().max().item():.3g}, "
              f"same predictions: {bool((got.argmax(1) == want.argmax(1)).all())}")
    if a.merged:
        model = AutoModel.from_pretrained(a.merged).eval()
        got = head_logits(model, a.merged, pixels)
        print(f"merged: max |logit difference| {(got - want).abs().max().item():.3g}, "
              f"same predictions: {bool((got.argmax(1) == want.argmax(1)).all())}")


if __name__ == "__main__":
    main()
