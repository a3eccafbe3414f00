#!/usr/bin/env python3
"""Writes tests/data/smollm2-tokens-golden.json: the token ids transformers gives for a few
prompts with the tokenizer it builds from the SmolLM2 GGUF of scripts/fetch-smollm2.sh (run
once; needs transformers, tokenizers and gguf):

    python3 scripts/make_smollm2_tokens_golden.py ~/.cache/capaboost/SmolLM2-135M-Instruct.Q4_1.gguf

Each case holds the prompt, its ids (as `tokenizer(prompt)["input_ids"]`, special tokens in
the text matched whole) and the text decoded back from the ids.
"""
import json
import os
import sys

import transformers
from transformers import AutoTokenizer

PROMPTS = [
    "Hello world!",
    "The capital of France is",
    " leading space, trailing space ",
    "Numbers: 12345 and 3.14159, years 1999-2024.",
    "Tabs\tand\nnew\n\nlines   with  runs of   spaces",
    "Unicode: café, naïve, Straße, 日本語, emoji 🙂🚀, Ελληνικά",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # code, 'quotes' and \"doubles\"",
    "Review: a gripping, beautifully acted film.\nSentiment:",
    "<|endoftext|>",
]


def main():
    path = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    cases = []
    for prompt in PROMPTS:
        ids = tok(prompt)["input_ids"]
        cases.append({"prompt": prompt, "ids": ids, "decoded": tok.decode(ids)})
    out = {
        "transformers": transformers.__version__,
        "file": os.path.basename(path),
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "vocab_size": len(tok),
        "cases": cases,
    }
    dest = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "smollm2-tokens-golden.json")
    with open(dest, "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
