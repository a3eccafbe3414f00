#!/usr/bin/env python3
"""Writes tests/data/kquant-golden.json: random Q4_K and Q6_K super-blocks (2 each, scales
set to sane f16 values) and the values the `gguf` package's numpy dequantization gives them
(run once; needs numpy and gguf):

    python3 scripts/make_kquant_golden.py
"""
import json
import os

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants


def main():
    rng = np.random.default_rng(16)
    out = {}
    for qtype, size, scale_at in [(Q.Q4_K, 144, [0, 2]), (Q.Q6_K, 210, [208])]:
        raw = rng.integers(0, 256, size=(2, size), dtype=np.uint8)
        for block in raw:
            for at in scale_at:
                block[at:at + 2] = np.frombuffer(np.float16(rng.uniform(0.001, 0.05)).tobytes(), np.uint8)
        values = quants.dequantize(raw.reshape(-1), qtype).reshape(-1)
        out[qtype.name] = {"bytes": raw.reshape(-1).tolist(), "values": values.astype(float).tolist()}
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "kquant-golden.json")
    with open(dest, "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
