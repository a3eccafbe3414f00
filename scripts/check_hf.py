#!/usr/bin/env python3
"""Check capaboost's exports in the Hugging Face stack itself.

Loads the base model with transformers, applies the PEFT export with
`PeftModel.from_pretrained`, and loads the merged model as a plain BERT; runs each
example of a GLUE-format file through both (mean pooling over the tokens, then the
exported head) and compares the logits with the ones `capaboost eval --predictions`
wrote for the same run. Exits non-zero when they disagree.

Needs: torch, transformers, peft (pip install torch transformers peft).

    capaboost export --run RUN --format peft --out PEFT
    capaboost merge --run RUN --out MERGED
    capaboost eval --run RUN --data DATA --predictions preds.tsv
    python3 scripts/check_hf.py --model MODEL --peft PEFT --merged MERGED \
        --data DATA/dev.tsv --predictions preds.tsv --max-len 64
"""

import argparse
import csv
import json
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoTokenizer, BertModel

TEXT_COLUMNS = ["sentence", "content", "text", "sentence1", "question", "question1"]
PAIR_COLUMNS = ["sentence2", "question2", "hypothesis"]


def read_rows(path):
    """The file's rows keyed by their 1-based line number (the header is line 1)."""
    with open(path, newline="", encoding="utf-8") as f:
        text = f.read().replace("\r\n", "\n")
    lines = text.split("\n")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    rows = {}
    for i, line in enumerate(lines[1:], start=2):
        if line:
            rows[i] = line.split("\t")
    return header, rows


def pick(header, names, given):
    if given:
        return header.index(given.lower())
    for n in names:
        if n in header:
            return header.index(n)
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="base model folder")
    ap.add_argument("--peft", required=True, help="capaboost export --format peft folder")
    ap.add_argument("--merged", help="capaboost merge folder")
    ap.add_argument("--data", required=True, help="the GLUE TSV file that was scored")
    ap.add_argument("--predictions", required=True, help="capaboost eval --predictions TSV")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--text-a")
    ap.add_argument("--text-b")
    ap.add_argument("--limit", type=int, default=64, help="examples to compare")
    ap.add_argument("--tol", type=float, default=1e-3, help="max abs logit difference")
    args = ap.parse_args()

    torch.manual_seed(0)
    header, rows = read_rows(args.data)
    col_a = pick(header, TEXT_COLUMNS, args.text_a)
    col_b = pick(header, PAIR_COLUMNS, args.text_b)
    if col_a is None:
        sys.exit(f"no text column among {header}; pass --text-a")

    with open(args.predictions, newline="", encoding="utf-8") as f:
        preds = list(csv.reader(f, delimiter="\t"))
    pred_header, preds = preds[0], preds[1 : 1 + args.limit]
    n_out = len(pred_header) - 2

    head_cfg = json.load(open(f"{args.peft}/head_config.json"))
    head = load_file(f"{args.peft}/head.safetensors")
    w, b = head["weight"].double(), head["bias"].double()
    names = head_cfg["labels"]
    assert head_cfg["pooling"] == "mean", head_cfg

    tok = AutoTokenizer.from_pretrained(args.model)
    models = {}
    base = BertModel.from_pretrained(args.model, dtype=torch.float32)
    models["peft"] = PeftModel.from_pretrained(base, args.peft).eval()
    if args.merged:
        models["merged"] = BertModel.from_pretrained(args.merged, dtype=torch.float32).eval()
    plain = BertModel.from_pretrained(args.model, dtype=torch.float32).eval()

    worst = {k: 0.0 for k in models}
    agree = {k: 0 for k in models}
    moved = 0.0
    for p in preds:
        row = rows[int(p[0])]
        a = row[col_a]
        bb = row[col_b] if col_b is not None else None
        enc = tok(a, bb, truncation=True, max_length=args.max_len, return_tensors="pt")
        want = torch.tensor([float(v) for v in p[2 : 2 + n_out]], dtype=torch.float64)
        with torch.no_grad():
            ref = plain(**enc).last_hidden_state.double().mean(1)[0] @ w.T + b
            moved = max(moved, (ref - want).abs().max().item())
            for k, m in models.items():
                h = m(**enc).last_hidden_state.double().mean(1)[0]
                got = h @ w.T + b
                worst[k] = max(worst[k], (got - want).abs().max().item())
                agree[k] += int(names[int(got.argmax())] == p[1]) if names else 1
    n = len(preds)
    print(f"{n} examples; logits of the base model without adapters differ by up to {moved:.3e}")
    ok = True
    for k in models:
        print(f"{k}: max |logit - capaboost| = {worst[k]:.3e}, same prediction {agree[k]}/{n}")
        ok &= worst[k] <= args.tol and agree[k] == n
    if moved <= args.tol:
        print("warning: the adapters barely change the logits; the check proves little")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
