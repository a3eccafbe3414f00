#!/usr/bin/env python3
"""Checks an image run's exports in transformers against the logits of
`capaboost eval --predictions` (not in CI; needs torch, transformers, peft, pillow):

- the PEFT folder: where it saves the classifier (`modules_to_save` = ["classifier"]:
  ViT with CLS pooling, any DINOv2 run), `PeftModel.from_pretrained` on
  `AutoModelForImageClassification.from_pretrained(base, num_labels=N, id2label=...)`
  restores adapters and classifier and gives the logits itself; otherwise (ViT with mean
  pooling) the adapters go on the base `ViTModel` and the exported head is applied here;
- the merged folder: a `*ForImageClassification` folder loaded with
  `AutoModelForImageClassification`, or a plain encoder with the head beside it.

Each is checked to match within --tol (default 1e-4) with the same predictions; the exit
status is 1 otherwise. Feed it images already at the model's input size (PNG) and a base
whose preprocessor resizes to exactly that size, so that no stack resamples (PIL and the
image crate resample differently):

    python3 scripts/check_hf_vit.py --base BASE --peft PEFT --merged MERGED \\
        --predictions preds.tsv
"""
import argparse
import csv
import json
import os
import sys

import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageClassification


def head_logits(model, head_dir, pixels):
    cfg = json.load(open(os.path.join(head_dir, "head_config.json")))
    head = load_file(os.path.join(head_dir, "head.safetensors"))
    h = model(pixel_values=pixels).last_hidden_state
    pooled = h[:, 0] if cfg["pooling"] == "cls" else h[:, 1:].mean(1)
    return pooled @ head["weight"].T + head["bias"]


def classifier_base(base, labels):
    return AutoModelForImageClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
    )


def peft_logits(base, peft_dir, labels, pixels):
    from peft import PeftModel

    cfg = json.load(open(os.path.join(peft_dir, "adapter_config.json")))
    if cfg.get("modules_to_save") == ["classifier"]:
        model = PeftModel.from_pretrained(classifier_base(base, labels), peft_dir).eval()
        return f"PEFT on {type(model.base_model.model).__name__}", model(pixel_values=pixels).logits
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(base), peft_dir).eval()
    return "PEFT on the encoder + head file", head_logits(model, peft_dir, pixels)


def merged_logits(merged, pixels):
    arch = json.load(open(os.path.join(merged, "config.json")))["architectures"][0]
    if arch.endswith("ForImageClassification"):
        model = AutoModelForImageClassification.from_pretrained(merged).eval()
        return f"merged {arch}", model(pixel_values=pixels).logits
    model = AutoModel.from_pretrained(merged).eval()
    return f"merged {arch} + head file", head_logits(model, merged, pixels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--peft")
    ap.add_argument("--merged")
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    rows = list(csv.DictReader(open(a.predictions), delimiter="\t"))
    cols = [c for c in rows[0] if c.startswith("logit_")]
    labels = [c[len("logit_"):] for c in cols]
    want = torch.tensor([[float(r[c]) for c in cols] for r in rows])
    proc = AutoImageProcessor.from_pretrained(a.base)
    imgs = [Image.open(r["path"]).convert("RGB") for r in rows]
    pixels = proc(images=imgs, do_resize=False, do_center_crop=False,
                  return_tensors="pt")["pixel_values"]
    ok = True
    with torch.no_grad():
        base = AutoModel.from_pretrained(a.base).eval()
        moved = (head_logits(base, a.peft or a.merged, pixels) - want).abs().max().item()
        print(f"{len(rows)} images at {tuple(pixels.shape[2:])}, {len(labels)} classes; "
              f"the adapters move the logits by up to {moved:.3g}")
        checks = []
        if a.peft:
            checks.append(peft_logits(a.base, a.peft, labels, pixels))
        if a.merged:
            checks.append(merged_logits(a.merged, pixels))
        for what, got in checks:
            diff = (got - want).abs().max().item()
            same = bool((got.argmax(1) == want.argmax(1)).all())
            good = diff <= a.tol and same
            ok &= good
            print(f"{what}: max |logit difference| {diff:.3g}, same predictions: {same}"
                  f"{'' if good else '  <-- FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
