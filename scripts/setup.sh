#!/usr/bin/env bash
# README command 1: install edgeq into .venv and run its main job on the bundled example:
# train the example model on the bundled digits data, convert it to int8 (size/accuracy table),
# then measure float32 against int8 on this machine (the `host` target) and write the report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
mkdir -p build/example
.venv/bin/python scripts/build_example.py build/example/digits.keras
.venv/bin/edgeq convert build/example/digits.keras \
  --calib calibration_data/digits/calib.npz \
  --eval calibration_data/digits/eval.npz \
  -o build/example/digits_int8.tflite
.venv/bin/edgeq bench build/example/digits.keras \
  --calib calibration_data/digits/calib.npz \
  --eval calibration_data/digits/eval.npz \
  --target host -o build/example/bench
