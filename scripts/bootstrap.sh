#!/usr/bin/env bash
# Installs everything edgeq and its tests need; safe to run again (quick when nothing changed).
#   - system packages: openssh-server (the tests start real sshd's on loopback), openssh-client,
#                      shellcheck, dash and busybox (the device scripts are linted and run under both shells)
#   - .venv:                 edgeq (editable) with its test extras, on Python 3.11+
#   - .venv-tflite-runtime:  a device-like Python with tflite-runtime 2.14 and numpy 1.x,
#                            used by the probe tests as a Raspberry Pi image would have it
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

need_pkgs=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v scp >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v shellcheck >/dev/null 2>&1 || need_pkgs+=(shellcheck)
command -v dash >/dev/null 2>&1 || need_pkgs+=(dash)
command -v busybox >/dev/null 2>&1 || need_pkgs+=(busybox)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "bootstrap: installing ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

want=$(stamp pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.edgeq-stamp 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing edgeq into .venv"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > .venv/.edgeq-stamp
fi

# Byte-compile edgeq as pip does when it installs a wheel (an editable install is not compiled, and
# PYTHONDONTWRITEBYTECODE may forbid caching): every `edgeq` command would otherwise compile its modules
# again, ~45 ms of start-up (measured with scripts/bench_deploy.py). Up-to-date files are skipped.
.venv/bin/python -m compileall -q edgeq >/dev/null

want=$(echo "tflite-runtime==2.14.0 numpy<2" | sha256sum | cut -c1-16)
if [ ! -x .venv-tflite-runtime/bin/python ] || [ "$(cat .venv-tflite-runtime/.edgeq-stamp 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating .venv-tflite-runtime (tflite-runtime 2.14, numpy 1.x)"
  [ -x .venv-tflite-runtime/bin/python ] || "$PYTHON" -m venv .venv-tflite-runtime
  .venv-tflite-runtime/bin/python -m pip install -q --upgrade pip
  .venv-tflite-runtime/bin/python -m pip install -q "numpy<2" "tflite-runtime==2.14.0"
  echo "$want" > .venv-tflite-runtime/.edgeq-stamp
fi
