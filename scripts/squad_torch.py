#!/usr/bin/env python3
"""The QA recipe of README ("Question answering") in PyTorch, for comparison.

transformers' `AutoModelForQuestionAnswering` on the same base model, the same SQuAD file
split by article, windows as transformers' reference `run_qa.py` builds them
(`truncation="only_second"`, `stride`, overflowing tokens, offsets; windows without the
whole answer point at [CLS]), the span loss of `BertForQuestionAnswering`, AdamW with a
linear schedule and warmup, then n-best decoding and the official EM/F1. Methods:
`head-only` (only `qa_outputs` trains) and `lora` (peft LoRA on query,value; the head
trains too). Not in CI (needs torch, transformers, peft).

    python3 scripts/squad_torch.py --model MODEL --data FILE --method lora
"""

import argparse
import collections
import json
import re
import string
import time

import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, get_linear_schedule_with_warmup


def articles(spec):
    out = set()
    for part in spec.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


def questions(path, picked, limit=None):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    out = []
    for i, a in enumerate(doc["data"]):
        if i not in picked:
            continue
        for p in a["paragraphs"]:
            for q in p["qas"]:
                out.append((q["id"], q["question"], p["context"], q["answers"]))
    return out[:limit] if limit else out


def windows(tok, qs, max_len, stride):
    enc = tok([q[1].lstrip() for q in qs], [q[2] for q in qs], truncation="only_second",
              max_length=max_len, stride=stride, return_overflowing_tokens=True,
              return_offsets_mapping=True, padding=False)
    out = []
    for i, ids in enumerate(enc["input_ids"]):
        qi = enc["overflow_to_sample_mapping"][i]
        seq = enc.sequence_ids(i)
        offs = [o if s == 1 else None for o, s in zip(enc["offset_mapping"][i], seq)]
        start = end = 0
        answers = qs[qi][3]
        if answers:
            a0 = answers[0]["answer_start"]
            a1 = a0 + len(answers[0]["text"])
            ctx = [k for k, o in enumerate(offs) if o is not None]
            if offs[ctx[0]][0] <= a0 and offs[ctx[-1]][1] >= a1:
                start = next(k for k in ctx if offs[k][1] > a0)
                end = next(k for k in reversed(ctx) if offs[k][0] < a1)
        out.append(dict(q=qi, ids=ids, types=enc["token_type_ids"][i], offs=offs,
                        start=start, end=end))
    return out


def pad(batch):
    n = max(len(w["ids"]) for w in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    types = torch.zeros_like(ids)
    mask = torch.zeros_like(ids)
    for r, w in enumerate(batch):
        k = len(w["ids"])
        ids[r, :k] = torch.tensor(w["ids"])
        types[r, :k] = torch.tensor(w["types"])
        mask[r, :k] = 1
    return ids, types, mask


def normalize(s):
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1(pred, gold):
    p, g = normalize(pred).split(), normalize(gold).split()
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


@torch.no_grad()
def evaluate(model, qs, ws, args):
    model.eval()
    best = {}
    for k in range(0, len(ws), 32):
        chunk = ws[k : k + 32]
        ids, types, mask = pad(chunk)
        r = model(input_ids=ids, token_type_ids=types, attention_mask=mask)
        for row, w in enumerate(chunk):
            n = len(w["ids"])
            s, e = r.start_logits[row, :n].tolist(), r.end_logits[row, :n].tolist()
            top = lambda v: sorted(range(n), key=lambda i: -v[i])[: args.n_best]
            for si in top(s):
                for ei in top(e):
                    if w["offs"][si] is None or w["offs"][ei] is None:
                        continue
                    if ei < si or ei - si + 1 > args.max_answer_len:
                        continue
                    score = s[si] + e[ei]
                    if w["q"] not in best or score > best[w["q"]][0]:
                        best[w["q"]] = (score, w["offs"][si][0], w["offs"][ei][1])
    em = f = 0.0
    for qi, (_, _, ctx, answers) in enumerate(qs):
        pred = ctx[best[qi][1] : best[qi][2]] if qi in best else ""
        golds = [a["text"] for a in answers]
        em += max(float(normalize(pred) == normalize(g)) for g in golds)
        f += max(f1(pred, g) for g in golds)
    return 100 * em / len(qs), 100 * f / len(qs)


def build(args):
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model
        cfg = LoraConfig(r=args.r, lora_alpha=args.alpha, target_modules=["query", "value"],
                         lora_dropout=0.0, task_type="QUESTION_ANS")
        return get_peft_model(model, cfg)
    for n, p in model.named_parameters():
        p.requires_grad = n.startswith("qa_outputs")
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--method", choices=["head-only", "lora"], default="lora")
    ap.add_argument("--train-articles", default="0-19")
    ap.add_argument("--eval-articles", default="20-23")
    ap.add_argument("--dev-limit", type=int, default=200)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--doc-stride", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-steps", type=int, default=80)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.06)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--n-best", type=int, default=20)
    ap.add_argument("--max-answer-len", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.model)
    train_q = questions(args.data, articles(args.train_articles))
    eval_q = questions(args.data, articles(args.eval_articles), args.dev_limit)
    train_w = windows(tok, train_q, args.max_len, args.doc_stride)
    eval_w = windows(tok, eval_q, args.max_len, args.doc_stride)
    model = build(args)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    sched = get_linear_schedule_with_warmup(
        opt, int(args.warmup_ratio * args.max_steps), args.max_steps)
    order = torch.randperm(len(train_w)).tolist()
    model.train()
    t0 = time.time()
    for step in range(args.max_steps):
        idx = order[(step * args.batch_size) % len(order):][: args.batch_size]
        batch = [train_w[i] for i in idx]
        ids, types, mask = pad(batch)
        out = model(input_ids=ids, token_type_ids=types, attention_mask=mask,
                    start_positions=torch.tensor([w["start"] for w in batch]),
                    end_positions=torch.tensor([w["end"] for w in batch]))
        out.loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        if (step + 1) % 10 == 0:
            print(f"step {step + 1} loss {out.loss.item():.4f}", flush=True)
    secs = time.time() - t0
    em, f = evaluate(model, eval_q, eval_w, args)
    print(json.dumps({"method": args.method, "train_windows": len(train_w),
                      "eval_questions": len(eval_q), "exact_match": em, "f1": f,
                      "examples_per_s": args.max_steps * args.batch_size / secs,
                      "trainable": sum(p.numel() for p in params),
                      "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
