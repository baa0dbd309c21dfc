#!/usr/bin/env bash
# README command 1: install edgeq into .venv and run its main job on the bundled example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
mkdir -p build/example
.venv/bin/python scripts/build_example.py build/example/digits.keras
.venv/bin/edgeq convert build/example/digits.keras \
  --calib calibration_data/digits/calib.npz \
  --eval calibration_data/digits/eval.npz \
  -o build/example/digits_int8.tflite
