#!/usr/bin/env python3
"""Ratio table: capaboost bench (JSON array) against torch_capaboost_ref.py (JSON lines),
both measured on the same GPU in the same call. usage: bench_ratio.py capaboost.json torch.jsonl"""
import json
import sys


def main(ours_path, torch_path):
    ours = json.load(open(ours_path))
    torch_rows = [json.loads(l) for l in open(torch_path) if l.strip()]
    ref = {}
    for t in torch_rows:
        if "eager_ms" in t and not t["tf32"]:
            ref[(t["n_tok"], t["k"], t["r"], t["d"])] = t
    head = next((t for t in torch_rows if "device" in t), {})
    print(f"device: {ours[0]['device'] if ours else '?'} | torch: {head.get('device', '?')} {head.get('torch', '')}")
    print(f"{'tokens':>6} {'width':>6} {'r':>3} {'d':>2} {'adapter ms':>11} {'torch adapter':>13} {'ratio':>6}"
          f" {'layer ms':>9} {'torch eager':>11} {'ratio':>6}")
    d1 = {}
    for r in (x for x in ours if x["kind"] == "layer"):
        key = (r["tokens"], r["width"], r["r"], r["d"])
        t = ref.get(key)
        if r["d"] == 1:
            d1[key[:3]] = r["adapter_ms"]
        if t is None:
            print(f"{key[0]:>6} {key[1]:>6} {key[2]:>3} {key[3]:>2} {r['adapter_ms']:>11.3f} {'-':>13} {'-':>6}")
            continue
        print(f"{key[0]:>6} {key[1]:>6} {key[2]:>3} {key[3]:>2} {r['adapter_ms']:>11.3f} {t['adapter_ms']:>13.3f}"
              f" {r['adapter_ms'] / t['adapter_ms']:>6.2f} {r['layer_ms']:>9.3f} {t['eager_ms']:>11.3f}"
              f" {r['layer_ms'] / t['eager_ms']:>6.2f}")
    for r in (x for x in ours if x["kind"] == "layer" and x["d"] == 8):
        base = d1.get((r["tokens"], r["width"], r["r"]))
        if base:
            print(f"d=8 / d=1 adapter time at {r['tokens']}x{r['width']}x{r['r']}: {r['adapter_ms'] / base:.2f}")
    gemms = [x for x in ours if x["kind"] == "gemm"]
    tg = {t["gemm"]: t for t in torch_rows if "gemm" in t and not t["tf32"]}
    for g in gemms:
        t = tg.get(g["tokens"])
        extra = f" vs cuBLAS fp32 {t['tflops']:.2f} TFLOP/s: {g['adapter_tflops'] / t['tflops']:.2f}x" if t else ""
        print(f"dense GEMM {g['tokens']}^3: {g['adapter_tflops']:.2f} TFLOP/s{extra}")
    copy = next((x for x in ours if x["kind"] == "copy"), None)
    tc = next((t for t in torch_rows if "copy_gbps" in t), None)
    if copy:
        extra = f" (torch copy {tc['copy_gbps']:.0f} GB/s)" if tc else ""
        print(f"vec4 copy: {copy['adapter_gbps']:.0f} GB/s{extra}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
