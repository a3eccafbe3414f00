#!/usr/bin/env python3
"""Cross-check `capaboost layer` against PyTorch autograd (float64).

Writes random inputs (odd shapes, bias, nonzero lora_B) to a safetensors file, runs
`capaboost layer`, then recomputes y, the gradients and delta_weight from the masks the
tool reports, with torch autograd in float64 on the unstacked form of the math
(sum over branches of masked copies), and checks the masks' kind. Exits non-zero on a
mismatch.

Needs: torch, safetensors (pip install torch safetensors).

    python3 scripts/check_layer.py --bin target/release/capaboost
"""

import argparse
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file


def check_case(binary, t, fin, fout, r, d, p, mask, alpha, rslora, seed, tmp):
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.rand(*s, generator=g, dtype=torch.float32) * 2 - 1
    inp = {
        "x": rnd(t, fin),
        "weight": rnd(fout, fin),
        "bias": rnd(fout),
        "lora_A": rnd(r, fin),
        "lora_B": rnd(fout, r),
        "grad_y": rnd(t, fout),
    }
    src, dst = os.path.join(tmp, "in.safetensors"), os.path.join(tmp, "out.safetensors")
    save_file(inp, src)
    cmd = [binary, "layer", "--input", src, "--output", dst, "--d", str(d),
           "--density", str(p), "--mask", mask, "--seed", str(seed), "--alpha", str(alpha)]
    if rslora:
        cmd += ["--rank-scaling", "rslora"]
    subprocess.run(cmd, check=True, capture_output=True)
    out = load_file(dst)

    s = alpha / (r ** 0.5 if rslora else r)
    x = inp["x"].double().requires_grad_()
    a = inp["lora_A"].double().requires_grad_()
    b = inp["lora_B"].double().requires_grad_()
    w0, b0 = inp["weight"].double(), inp["bias"].double()
    ms = [out[f"mask_A.{i}"].double() for i in range(d)]
    ns = [out[f"mask_B.{i}"].double() for i in range(d)]
    y = x @ w0.T + b0
    for m, n in zip(ms, ns):
        y = y + s * (x @ (a * m).T) @ (b * n).T
    y.backward(inp["grad_y"].double())
    delta = sum(s * (b * n) @ (a * m) for m, n in zip(ms, ns))

    def rel(name, got, want):
        e = ((got.double() - want).norm() / want.norm()).item()
        return name, e

    errs = [
        rel("y", out["y"], y.detach()),
        rel("grad_x", out["grad_x"], x.grad),
        rel("grad_lora_A", out["grad_lora_A"], a.grad),
        rel("grad_lora_B", out["grad_lora_B"], b.grad),
        rel("delta_weight", out["delta_weight"], delta.detach()),
    ]
    # Mask semantics from capaboost-math.md.
    problems = []
    for i, (m, n) in enumerate(zip(ms, ns)):
        for name, k in ((f"mask_A.{i}", m), (f"mask_B.{i}", n)):
            if mask == "exact" and int(k.sum()) != int(k.numel() * p):
                problems.append(f"{name}: {int(k.sum())} ones, want floor(numel p)")
            if mask == "2:4" and not bool((k.reshape(k.shape[0], -1, 4).sum(-1) == 2).all()):
                problems.append(f"{name}: not 2 of every 4 along the reduction dim")
    if d > 1 and all(torch.equal(ms[0], m) for m in ms[1:]):
        problems.append("all branches share one A mask")
    return errs, problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="target/release/capaboost")
    ap.add_argument("--tol", type=float, default=1e-5, help="max relative Frobenius error")
    args = ap.parse_args()
    cases = [
        # T, in, out, r, d, p, mask, alpha, rslora
        (37, 53, 29, 8, 2, 0.5, "exact", 16, False),
        (129, 300, 77, 4, 4, 0.5, "bernoulli", 8, False),
        (65, 132, 200, 8, 3, 0.5, "2:4", 16, True),
        (1, 17, 5, 3, 1, 1.0, "exact", 6, False),
    ]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for k, (t, fin, fout, r, d, p, mask, alpha, rs) in enumerate(cases):
            errs, problems = check_case(args.bin, t, fin, fout, r, d, p, mask, alpha, rs, 7 + k, tmp)
            worst = max(e for _, e in errs)
            line = ", ".join(f"{n} {e:.1e}" for n, e in errs)
            print(f"T={t} in={fin} out={fout} r={r} d={d} p={p} {mask}"
                  f"{' rslora' if rs else ''}: {line}")
            for pr in problems:
                print("  " + pr)
            ok &= worst <= args.tol and not problems
    print("ok" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
