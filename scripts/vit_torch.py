#!/usr/bin/env python3
"""The image recipe of README ("Image classification") in PyTorch, for comparison.

transformers' `Dinov2Model` / `ViTModel` from the same folder, the same split of one image
folder (each class's files in name order, the last `--dev-ratio` share held out, as
`capaboost finetune --task image` splits it), the model's image processor at
`--image-size` (resize to N x N), a linear head on the CLS token (or the mean of the patch
tokens), cross-entropy, AdamW (weight decay 0.01) with linear warmup (6%) and decay, then
accuracy on the held-out images. Methods: `head-only` and `lora` (peft LoRA on
query,value; the head trains too). Not in CI (needs torch, transformers, peft, pillow).

    python3 scripts/vit_torch.py --model DIR --data cifar10-test-half --method lora
"""

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, get_linear_schedule_with_warmup


def split(root, ratio):
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    train, dev = [], []
    for k, c in enumerate(classes):
        files = sorted(f for f in os.listdir(os.path.join(root, c))
                       if f.lower().endswith((".png", ".jpg", ".jpeg")))
        held = max(1, min(len(files) - 1, round(len(files) * ratio)))
        for i, f in enumerate(files):
            (dev if i >= len(files) - held else train).append((os.path.join(root, c, f), k))
    return classes, train, dev


def interleave(items):
    """Classes in turn, as capaboost orders them, so that a limit keeps them balanced."""
    by = {}
    for it in items:
        by.setdefault(it[1], []).append(it)
    longest = max(len(v) for v in by.values())
    return [by[k][i] for i in range(longest) for k in sorted(by) if i < len(by[k])]


def pixels(proc, items, size):
    imgs = [Image.open(p).convert("RGB") for p, _ in items]
    out = proc(images=imgs, size={"height": size, "width": size}, do_center_crop=False,
               return_tensors="pt")
    return out["pixel_values"], torch.tensor([k for _, k in items])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", choices=["head-only", "lora"], default="lora")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--dev-ratio", type=float, default=0.2)
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--dev-limit", type=int)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--pooling", choices=["cls", "mean"], default="cls")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    classes, train, dev = split(a.data, a.dev_ratio)
    train, dev = interleave(train)[:a.train_limit], interleave(dev)[:a.dev_limit]
    proc = AutoImageProcessor.from_pretrained(a.model)
    xt, yt = pixels(proc, train, a.image_size)
    xd, yd = pixels(proc, dev, a.image_size)
    enc = AutoModel.from_pretrained(a.model)
    for p in enc.parameters():
        p.requires_grad_(False)
    if a.method == "lora":
        from peft import LoraConfig, get_peft_model
        # transformers 5 names them q_proj / v_proj at run time, 4 query / value.
        names = [n for n, _ in enc.named_modules()]
        targets = ["query", "value"] if any(n.endswith(".query") for n in names) else ["q_proj", "v_proj"]
        enc = get_peft_model(enc, LoraConfig(r=a.r, lora_alpha=a.alpha, target_modules=targets))
    head = torch.nn.Linear(enc.config.hidden_size, len(classes))

    def logits(x):
        h = enc(pixel_values=x).last_hidden_state
        return head(h[:, 0] if a.pooling == "cls" else h[:, 1:].mean(1))

    params = [p for p in list(enc.parameters()) + list(head.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
    steps = a.epochs * ((len(train) + a.batch_size - 1) // a.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    enc.train()
    t0, seen = time.time(), 0
    for _ in range(a.epochs):
        order = torch.randperm(len(train))
        for i in range(0, len(train), a.batch_size):
            idx = order[i:i + a.batch_size]
            loss = torch.nn.functional.cross_entropy(logits(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
    rate = seen / (time.time() - t0)
    enc.eval()
    with torch.no_grad():
        pred = torch.cat([logits(xd[i:i + 64]).argmax(1) for i in range(0, len(dev), 64)])
    acc = (pred == yd).float().mean().item()
    print(f"{a.method}: {len(train)} train / {len(dev)} dev, {steps} steps, accuracy "
          f"{100 * acc:.1f}, {rate:.1f} examples/s, {sum(p.numel() for p in params)} trainable")


if __name__ == "__main__":
    main()
