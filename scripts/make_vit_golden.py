#!/usr/bin/env python3
"""Writes the tiny random ViTModel and Dinov2Model folders of tests/data/ and their golden
last_hidden_state for two images (run once; needs torch + transformers):

    python3 scripts/make_vit_golden.py tests/data

Each folder holds config.json, model.safetensors, preprocessor_config.json and golden.json
(`image_size`, `pixel_values` [2, 3, S, S] flattened, `last_hidden_state` [2, N+1, H]
flattened). Norms, layer scales and biases are randomized so that every tensor matters;
the Dinov2 model is fed at a smaller size than its position grid so that the bicubic
interpolation of the position embeddings is exercised.
"""
import json
import os
import sys

import torch
from transformers import (BitImageProcessor, Dinov2Config, Dinov2Model, ViTConfig,
                          ViTImageProcessor, ViTModel)


def randomize(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "lambda1" in name or name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if name.endswith(
                    ("weight", "lambda1")) else 0.0))
            elif "token" in name or "position" in name:
                p.copy_(torch.randn(p.shape, generator=gen))


def write(model, processor, out, image_size, gen, **kw):
    os.makedirs(out, exist_ok=True)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    pixels = torch.randn((2, 3, image_size, image_size), generator=gen)
    with torch.no_grad():
        last = model(pixel_values=pixels, **kw).last_hidden_state
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump({
            "image_size": image_size,
            "pixel_values": [round(v, 7) for v in pixels.flatten().tolist()],
            "shape": list(last.shape),
            "last_hidden_state": [round(v, 7) for v in last.flatten().tolist()],
        }, f)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "tests/data"
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64, image_size=32, patch_size=8,
                             num_channels=3, qkv_bias=True), add_pooling_layer=False)
    randomize(vit, gen)
    vit_proc = ViTImageProcessor(size={"height": 32, "width": 32}, resample=2,
                                 image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    write(vit, vit_proc, os.path.join(root, "tiny-vit"), 32, gen)

    dino = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    mlp_ratio=2, image_size=28, patch_size=4, num_channels=3,
                                    layerscale_value=0.5))
    randomize(dino, gen)
    dino_proc = BitImageProcessor(size={"shortest_edge": 28}, resample=3, do_center_crop=True,
                                  crop_size={"height": 24, "width": 24},
                                  image_mean=[0.485, 0.456, 0.406],
                                  image_std=[0.229, 0.224, 0.225])
    write(dino, dino_proc, os.path.join(root, "tiny-dinov2"), 24, gen)


if __name__ == "__main__":
    main()
