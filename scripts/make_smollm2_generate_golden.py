#!/usr/bin/env python3
"""Writes tests/data/smollm2-generate-golden.json: transformers' greedy continuation (20 new
tokens: argmax of the last position, no EOS handling, float32) of two prompts on the SmolLM2 GGUF of scripts/fetch-smollm2.sh
loaded with `gguf_file=` (dequantized weights), and of one prompt on tests/data/tiny-llama.gguf
(run once; needs torch, transformers, gguf):

    python3 scripts/make_smollm2_generate_golden.py ~/.cache/capaboost/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = ["The capital of France is", "def fibonacci(n):"]
NEW = 20
HERE = os.path.dirname(os.path.abspath(__file__))


def greedy(model, ids):
    """Argmax of the last position, NEW times, without EOS handling (`generate` with
    `min_new_tokens` would mask EOS instead and pick the runner-up)."""
    ids = list(ids)
    new = []
    with torch.no_grad():
        for _ in range(NEW):
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
            new.append(nxt)
            ids.append(nxt)
    return new


def main():
    path = sys.argv[1]
    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    print("dtype", model.dtype)
    cases = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        new = greedy(model, ids)
        cases.append({"prompt": p, "ids": ids, "new_ids": new, "text": tok.decode(new)})
        print(repr(p), "->", repr(tok.decode(new)))
    data = os.path.join(HERE, "..", "tests", "data")
    tiny = AutoModelForCausalLM.from_pretrained(data, gguf_file="tiny-llama.gguf").eval()
    tiny_ids = [5, 17, 42, 3]
    out = {"smollm2": cases, "tiny": {"ids": tiny_ids, "new_ids": greedy(tiny, tiny_ids)}}
    with open(os.path.join(data, "smollm2-generate-golden.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")


if __name__ == "__main__":
    main()
