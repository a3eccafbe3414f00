#!/usr/bin/env python3
"""Replay an image `capaboost finetune --task image --trace DIR` run in PyTorch.

The image twin of `scripts/replay_torch.py` (which replays GLUE runs): the model folder
loaded as a plain transformers `Dinov2Model` / `ViTModel` (eager attention, dropout 0),
LoRA / CapaBoost as explicit masked low-rank updates on the traced projections, a linear
head on the CLS token or the mean of the patch tokens, `torch.optim.AdamW` and
transformers' schedule, fp32 with TF32 off. It starts from the trace's `init.safetensors`,
rebuilds the training images as capaboost lists them (each class's files in name order,
the last `dev_ratio` share held out, the classes in turn, `--train-limit`), preprocesses
them with the model's transformers image processor (PIL: its JPEG decoder and resampling
differ from ours by about half an 8-bit step, so per-step losses agree to about 1e-4, not
to rounding), and prints per step our loss, its loss, their relative difference and the
gradient norms; at the end the relative difference of every final tensor.

The question it answers: does the same initialization, the same batches and the same
optimizer train the same way in PyTorch? (README: our LoRA beat `scripts/vit_torch.py`'s.)

Needs torch, transformers, safetensors, pillow. Image-folder traces without augmentation.

    capaboost finetune --task image --data DIR --model M --trace TRACE ...
    python3 scripts/replay_vit.py TRACE [--steps N] [--json out.json]
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from replay_torch import (  # noqa: E402
    PREFIX, MaskedLoRA, masks_of, rel, report, schedule, setup_torch, trainable)
from vit_torch import interleave, split  # noqa: E402

# Checkpoint module names (the trace's) -> transformers 5's run-time names.
RENAMES = [
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
]


def submodule(model, name):
    """The module of a checkpoint name, trying transformers 5's run-time renames."""
    try:
        return name, model.get_submodule(name)
    except AttributeError:
        pass
    for old, new in RENAMES:
        if name.endswith(old):
            alt = name[: -len(old)] + new
            for cand in (alt, alt.replace("encoder.layer.", "layers.")):
                try:
                    return cand, model.get_submodule(cand)
                except AttributeError:
                    continue
    sys.exit(f"{name}: no such module in {type(model).__name__}")


def build(recipe, init, dtype):
    enc = AutoModel.from_pretrained(recipe["model"]["dir"], attn_implementation="eager")
    enc = enc.to(dtype)
    enc.eval()
    enc.requires_grad_(False)
    params = trainable(init, dtype)
    if any(".down.weight" in n for n in params):
        sys.exit("bottleneck adapters are not replayed for images")
    for module in sorted({n.rsplit(".", 2)[0] for n in params if ".lora_A." in n}):
        name, base = submodule(enc, module[len(PREFIX):])
        ma, mb = masks_of(init, module, dtype)
        a, b = params[f"{module}.lora_A.weight"], params[f"{module}.lora_B.weight"]
        wrap = MaskedLoRA(base, a, b, ma, mb, recipe["method"]["scale"])
        parent, leaf = name.rsplit(".", 1)
        setattr(enc.get_submodule(parent), leaf, wrap)
    return enc, params


def images(recipe, dtype, part="train"):
    """The training (or evaluation) images as capaboost lists them, preprocessed by
    transformers."""
    cfg = recipe["config"]
    data = recipe["data"]["dir"]
    if os.path.isdir(os.path.join(data, "train")):
        # Every file of train/ (or dev/): split() always holds one out, so join them again
        # (interleave keeps each class's files in name order).
        classes, kept, held = split(os.path.join(data, part), 0.0)
        items = interleave(kept + held)
    else:
        classes, train, dev = split(data, cfg["dev_ratio"])
        items = interleave(train if part == "train" else dev)
    limit = cfg["train_limit"] if part == "train" else cfg["dev_limit"]
    items = items[:limit] if limit else items
    if classes != recipe["task"]["classes"]:
        sys.exit(f"classes {classes} differ from the trace's {recipe['task']['classes']}")
    proc = AutoImageProcessor.from_pretrained(recipe["model"]["dir"])
    n = recipe["task"]["image_size"]
    x = proc(images=[Image.open(p).convert("RGB") for p, _ in items],
             size={"height": n, "width": n}, do_center_crop=False,
             return_tensors="pt")["pixel_values"].to(dtype)
    return x, torch.tensor([k for _, k in items])


def replay(trace, dtype, steps, quiet, evaluate=False):
    recipe = json.load(open(os.path.join(trace, "recipe.json")))
    if recipe["method"]["dropout"] > 0 or recipe["task"]["augment"] != "none":
        sys.exit("the trace has dropout or augmentation: its random draws are not in it")
    init = load_file(os.path.join(trace, "init.safetensors"))
    enc, params = build(recipe, init, dtype)
    x, y = images(recipe, dtype)
    cls = recipe["config"]["pooling"] == "cls"
    o = recipe["optimizer"]
    opt = torch.optim.AdamW(list(params.values()), lr=o["lr"], betas=tuple(o["betas"]),
                            eps=o["eps"], weight_decay=o["weight_decay"], foreach=False)
    sched = schedule(opt, recipe["schedule"])
    clip = o["max_grad_norm"]
    out = []
    for rec in steps:
        idx = torch.tensor(rec["examples"]) - 1
        lr = opt.param_groups[0]["lr"]
        if rel(lr, rec["lr"]) > 1e-6 and abs(lr - rec["lr"]) > 1e-12:
            sys.exit(f"step {rec['step']}: lr {lr}, the trace has {rec['lr']}")
        opt.zero_grad(set_to_none=True)
        h = enc(pixel_values=x[idx]).last_hidden_state
        logits = F.linear(pool(h, cls), params["head.weight"], params["head.bias"])
        loss = F.cross_entropy(logits, y[idx])
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()),
                                              clip if clip is not None else float("inf"))
        opt.step()
        sched.step()
        out.append((loss.item(), norm.item()))
        if not quiet:
            print(f"{rec['step']:>5} {rec['loss']:>12.8f} {loss.item():>12.8f} "
                  f"{rel(rec['loss'], loss.item()):>9.2e} {rec['grad_norm']:>11.6f} "
                  f"{norm.item():>11.6f} {rel(rec['grad_norm'], norm.item()):>9.2e}", flush=True)
    if evaluate:
        enc.eval()
        xd, yd = images(recipe, dtype, "dev")
        with torch.no_grad():
            pred = torch.cat([F.linear(pool(enc(pixel_values=xd[i:i + 50]).last_hidden_state, cls),
                                       params["head.weight"], params["head.bias"]).argmax(1)
                              for i in range(0, len(yd), 50)])
        print(f"replayed model: dev accuracy {(pred == yd).float().mean().item():.4f} "
              f"on {len(yd)} images")
    return out, {n: p.detach() for n, p in params.items()}


def pool(h, cls):
    return h[:, 0] if cls else h[:, 1:].mean(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace", help="the --trace folder of an image run")
    ap.add_argument("--steps", type=int, help="replay only the first N steps")
    ap.add_argument("--json", help="write the measurements to this file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quiet", action="store_true", help="no per-step lines")
    ap.add_argument("--eval", action="store_true",
                    help="then score the replayed model on the run's evaluation images")
    args = ap.parse_args()
    setup_torch(args.threads)
    steps = [json.loads(l) for l in open(os.path.join(args.trace, "steps.jsonl")) if l.strip()]
    traced = len(steps)
    steps = steps[: args.steps] if args.steps else steps
    ours_final = load_file(os.path.join(args.trace, "final.safetensors"))
    if not args.quiet:
        print(" step     our loss   torch loss  rel diff   our |g|   torch |g|  rel diff")
    r32, f32 = replay(args.trace, torch.float32, steps, args.quiet, args.eval)
    res = report("torch float32", steps, r32, ours_final, f32)
    if len(steps) != traced:
        print("(a partial replay: final tensors are compared after fewer steps than traced)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
