#!/usr/bin/env bash
# On a GPU machine: `capaboost bench --autotune` (tuning cache discarded first) and the
# PyTorch reference in one call, then the ratio table (ours / PyTorch eager, same machine,
# same run).
# usage: scripts/gpu-bench.sh [CAPABOOST_BIN] [TORCH_SCRIPT] [OUT_DIR]
# With the device tool: carry target/release/capaboost, .gl (the Vulkan loader .debs) and a
# copy of ../shared/bench inside the repo, e.g.
#   run(command="bash scripts/gpu-bench.sh target/release/capaboost bench-ref/torch_capaboost_ref.py $OUT",
#       carry=["target/release/capaboost", ".gl", "bench-ref"])
set -euo pipefail
bin="${1:-target/release/capaboost}"
torch_py="${2:-../shared/bench/torch_capaboost_ref.py}"
out="${3:-${OUT:-bench-out}}"
mkdir -p "$out"
if [ -d .gl ] && ! ldconfig -p | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$icd" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then
    export VK_DRIVER_FILES="$icd"
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
"$bin" info | tee "$out/info.txt"
# The GEMM autotuner from a clean slate: its cache is discarded first. The reference
# kernel's figures, then `--autotune` (tunes every shape, prints every candidate's time),
# then the tuned kernels from the cache it filled.
export CAPABOOST_CACHE_DIR="$out/cache"
rm -rf "$CAPABOOST_CACHE_DIR"
CAPABOOST_AUTOTUNE=off "$bin" bench --json "$out/capaboost-reference.json" \
    | tee "$out/capaboost-reference.txt"
"$bin" bench --autotune | tee "$out/autotune.txt"
"$bin" bench --json "$out/capaboost.json" | tee "$out/capaboost.txt"
python3 "$torch_py" > "$out/torch.jsonl"
python3 "$(dirname "$0")/bench_ratio.py" "$out/capaboost.json" "$out/torch.jsonl" | tee "$out/ratio.txt"
echo "== with the reference GEMM (CAPABOOST_AUTOTUNE=off)"
python3 "$(dirname "$0")/bench_ratio.py" "$out/capaboost-reference.json" "$out/torch.jsonl" \
    | tee "$out/ratio-reference.txt"
