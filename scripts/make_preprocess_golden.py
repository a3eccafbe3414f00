#!/usr/bin/env python3
"""Writes tests/data/preprocess-golden.json: transformers' pixel_values for two CIFAR-10
JPEGs of ../shared/data/cifar10-test-half under the preprocessor configs of
tests/data/tiny-vit (bilinear 32x32) and tests/data/tiny-dinov2 (bicubic shortest edge 28,
center crop 24). transformers 5 without torchvision uses its PIL image processors
(`*ImageProcessorPil`), which these values come from.

    python3 scripts/make_preprocess_golden.py
"""
import json
import os

from PIL import Image
from transformers import AutoImageProcessor

ROOT = os.path.join(os.path.dirname(__file__), "..")
FILES = ["cat/0000.jpg", "ship/0001.jpg"]

out = []
for model in ["tiny-vit", "tiny-dinov2"]:
    proc = AutoImageProcessor.from_pretrained(os.path.join(ROOT, "tests/data", model))
    for f in FILES:
        img = Image.open(os.path.join(ROOT, "../shared/data/cifar10-test-half", f))
        pv = proc(images=img, return_tensors="np")["pixel_values"][0]
        out.append({"model": model, "file": f, "shape": list(pv.shape),
                    "pixel_values": [round(float(v), 5) for v in pv.flatten()]})
with open(os.path.join(ROOT, "tests/data/preprocess-golden.json"), "w") as fh:
    json.dump(out, fh)
