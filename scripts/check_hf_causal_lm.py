#!/usr/bin/env python3
"""Checks a causal-lm run's PEFT export in transformers + peft.

Loads the GGUF base with transformers (`gguf_file=`, dequantized to float32), applies the
exported adapter with `PeftModel.from_pretrained`, and computes on a JSONL file exactly
what `capaboost eval --run RUN --data FILE` reports: the mean negative log-likelihood of
the learned tokens (the response and the EOS after it; prompt/response examples only),
the share of examples whose every learned token is the argmax, and the first learned
token's accuracy. Token ids come from capaboost's own tokenization rule (prompt and
response tokenized separately, BOS only if the file asks for it, EOS appended).

    python scripts/check_hf_causal_lm.py --gguf FILE.gguf --peft EXPORT_DIR --data F.jsonl \
        [--ours '{"loss": ...}']   # capaboost eval's JSON: compared within --tol
"""
import argparse
import json
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--peft", help="export --format peft folder (omit: the base model)")
    ap.add_argument("--data", required=True)
    ap.add_argument("--ours", help="capaboost eval's JSON output to compare with")
    ap.add_argument("--tol", type=float, default=1e-3, help="relative tolerance of the loss")
    a = ap.parse_args()
    d, f = os.path.split(os.path.abspath(a.gguf))
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    if a.peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, a.peft)
    model.eval()
    nll, tokens, exact, first, n = 0.0, 0, 0, 0, 0
    for line in open(a.data, encoding="utf-8"):
        if not line.strip():
            continue
        ex = json.loads(line)
        p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
        r = tok(ex["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        ids = torch.tensor([p + r])
        with torch.no_grad():
            logits = model(ids).logits[0].double()
        rows = logits[len(p) - 1 : len(p) + len(r) - 1]
        logp = torch.log_softmax(rows, -1)
        tgt = torch.tensor(r)
        nll += -logp[torch.arange(len(r)), tgt].sum().item()
        hits = rows.argmax(-1) == tgt
        exact += int(hits.all())
        first += int(hits[0])
        tokens += len(r)
        n += 1
    loss = nll / tokens
    got = {
        "loss": loss,
        "perplexity": math.exp(loss),
        "exact_match": exact / n,
        "first_token_accuracy": first / n,
    }
    print(json.dumps(got))
    if a.ours:
        ours = json.loads(a.ours)
        rel = abs(ours["loss"] - loss) / loss
        print(f"loss: capaboost {ours['loss']:.6f}, transformers {loss:.6f}, relative {rel:.2e}")
        assert rel < a.tol, "loss differs"
        for k in ("exact_match", "first_token_accuracy"):
            assert abs(ours[k] - got[k]) <= 1.0 / n + 1e-9, f"{k} differs by more than one example"


if __name__ == "__main__":
    main()
