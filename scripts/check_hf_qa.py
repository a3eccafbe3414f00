#!/usr/bin/env python3
"""Check a capaboost QA run's exports in the Hugging Face stack itself.

Loads `AutoModelForQuestionAnswering` from the base model folder and applies the PEFT
export with `PeftModel.from_pretrained` (the span head comes back as `qa_outputs` through
PEFT's `modules_to_save`; the wrapped model is called directly, because peft 0.21's
`PeftModelForQuestionAnswering.forward` drops `token_type_ids`), and loads the merged folder as a plain
`BertForQuestionAnswering`. Both are run on exactly the windows capaboost scored (the
`input_ids` / `token_type_ids` of `eval --logits`); their start/end logits are compared
with capaboost's, and the answers are decoded again here (n-best start/end pairs inside
the context, end >= start, at most --max-answer-len tokens, best over windows, text cut
by character offsets) and compared with `eval --predictions`. Exits non-zero on a
difference.

Needs: torch, transformers, peft.

    capaboost export --run RUN --format peft --out PEFT
    capaboost merge --run RUN --out MERGED
    capaboost eval --run RUN --data FILE --predictions preds.json --logits logits.jsonl
    python3 scripts/check_hf_qa.py --model MODEL --peft PEFT --merged MERGED \
        --data FILE --predictions preds.json --logits logits.jsonl
"""

import argparse
import json
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForQuestionAnswering


def contexts(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    out = {}
    for article in doc["data"]:
        for p in article["paragraphs"]:
            for q in p["qas"]:
                out[q["id"]] = p["context"]
    return out


def windows_by_question(path, limit):
    by_id = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            w = json.loads(line)
            if w["id"] not in by_id and len(by_id) == limit:
                break
            by_id.setdefault(w["id"], []).append(w)
    return by_id


def top_n(v, n):
    return sorted(range(len(v)), key=lambda i: (-v[i], i))[:n]


def decode(context, windows, logits, n_best, max_answer_len):
    best = None
    for w, (start, end) in zip(windows, logits):
        offs = w["offsets"]
        for si in top_n(start, n_best):
            for ei in top_n(end, n_best):
                if offs[si] is None or offs[ei] is None:
                    continue
                if ei < si or ei - si + 1 > max_answer_len:
                    continue
                score = start[si] + end[ei]
                if best is None or score > best[0]:
                    best = (score, offs[si][0], offs[ei][1])
    if best is None:
        return ""
    return context[best[1] : best[2]]


@torch.no_grad()
def run_model(model, windows):
    out = []
    for w in windows:
        ids = torch.tensor([w["input_ids"]])
        types = torch.tensor([w["token_type_ids"]])
        r = model(input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids))
        out.append((r.start_logits[0].tolist(), r.end_logits[0].tolist()))
    return out


def compare(name, model, by_id, ctx, preds, args):
    worst, wrong = 0.0, []
    for qid, windows in by_id.items():
        got = run_model(model, windows)
        for w, (s, e) in zip(windows, got):
            for a, b in ((s, w["start_logits"]), (e, w["end_logits"])):
                worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
        answer = decode(ctx[qid], windows, got, args.n_best, args.max_answer_len)
        if answer != preds[qid]:
            wrong.append((qid, answer, preds[qid]))
    n = sum(len(w) for w in by_id.values())
    print(f"{name}: {len(by_id)} questions, {n} windows: max |logit diff| {worst:.3g}, "
          f"{len(by_id) - len(wrong)}/{len(by_id)} answers equal")
    for qid, a, b in wrong[:5]:
        print(f"  {qid}: HF {a!r} vs capaboost {b!r}")
    return worst <= args.tol and not wrong


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="base model folder")
    ap.add_argument("--peft", required=True, help="capaboost export --format peft folder")
    ap.add_argument("--merged", help="capaboost merge folder")
    ap.add_argument("--data", required=True, help="the SQuAD file that was scored")
    ap.add_argument("--predictions", required=True, help="eval --predictions JSON")
    ap.add_argument("--logits", required=True, help="eval --logits JSON lines")
    ap.add_argument("--limit", type=int, default=50, help="questions to compare")
    ap.add_argument("--n-best", type=int, default=20)
    ap.add_argument("--max-answer-len", type=int, default=30)
    ap.add_argument("--tol", type=float, default=1e-5, help="max abs logit difference")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(max(1, torch.get_num_threads()))

    ctx = contexts(args.data)
    with open(args.predictions, encoding="utf-8") as f:
        preds = json.load(f)
    by_id = windows_by_question(args.logits, args.limit)

    base = AutoModelForQuestionAnswering.from_pretrained(args.model).eval()
    peft = PeftModel.from_pretrained(base, args.peft).eval()
    # peft 0.21's PeftModelForQuestionAnswering.forward does not pass token_type_ids on
    # to the model (every token is typed 0, the logits move by ~0.1): the model it wraps,
    # with the adapters and the restored head in place, is called directly.
    ok = compare("PEFT", peft.base_model.model, by_id, ctx, preds, args)
    if args.merged:
        merged = AutoModelForQuestionAnswering.from_pretrained(args.merged).eval()
        ok = compare("merged", merged, by_id, ctx, preds, args) and ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
