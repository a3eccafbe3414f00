#!/usr/bin/env python3
"""Writes tests/data/smollm2-logits-golden.json: transformers' float64 logits of the last
position for one short prompt, on the SmolLM2 GGUF of scripts/fetch-smollm2.sh loaded with
`gguf_file=` (dequantized weights): the ids, the 20 largest logits with their ids, and the
logits of 64 fixed ids (run once; needs torch, transformers, gguf):

    python3 scripts/make_smollm2_logits_golden.py ~/.cache/capaboost/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "The capital of France is"


def main():
    path = sys.argv[1]
    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).double().eval()
    ids = tok(PROMPT)["input_ids"]
    with torch.no_grad():
        last = model(torch.tensor([ids])).logits[0, -1]
    top = torch.topk(last, 20)
    probe = list(range(0, 49152, 768))
    out = {"prompt": PROMPT, "ids": ids, "top_ids": top.indices.tolist(),
           "top_logits": top.values.tolist(), "probe_ids": probe,
           "probe_logits": [last[i].item() for i in probe]}
    dest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                        "smollm2-logits-golden.json")
    with open(dest, "w") as f:
        json.dump(out, f)
        f.write("\n")
    print(tok.decode(top.indices[:5]), top.values[:5])


if __name__ == "__main__":
    main()
