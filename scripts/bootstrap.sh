#!/usr/bin/env bash
# Installs everything edgeq and its tests need; safe to run again (quick when nothing changed).
#   - system packages: openssh-server (the tests start real sshd's on loopback), openssh-client,
#                      shellcheck, dash and busybox (the device scripts are linted and run under both shells)
#   - .venv:                 edgeq (editable) with its test extras, on Python 3.11+
#   - .venv-tflite-runtime:  a device-like Python with tflite-runtime 2.14 and numpy 1.x,
#                            used by the probe tests as a Raspberry Pi image would have it
#   - ~/.cache/edgeq-tests/wheels: runtime wheels of the test devices' kinds, for `edgeq provision --offline`
#   - emulated Raspberry Pi OS devices (tests/test_emulated_devices.py): qemu-user-static, binfmt-support and
#                            debootstrap; binfmt_misc handlers for arm64/armhf; the images built once into
#                            ~/.cache/edgeq/devices by scripts/emulated_devices.py (as root only: ~3 min, ~400 MB)
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
[ -x /usr/bin/qemu-aarch64-static ] || need_pkgs+=(qemu-user-static)
command -v update-binfmts >/dev/null 2>&1 || [ -x /usr/sbin/update-binfmts ] || need_pkgs+=(binfmt-support)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need_pkgs+=(debootstrap)
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

# Wheels for `edgeq provision --offline` in the tests (the suite never reaches PyPI itself): the test devices'
# kinds, resolved exactly as edgeq provision resolves them, cached in ~/.cache/edgeq-tests/wheels (one run per
# change of the resolver or its list of kinds; a failure leaves those tests skipped).
wheels=${EDGEQ_TEST_WHEELS:-$HOME/.cache/edgeq-tests/wheels}
want=$(stamp scripts/fetch_device_wheels.py edgeq/provision.py)
if [ "$(cat "$wheels/.edgeq-stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: fetching the test devices' runtime wheels into $wheels"
  if .venv/bin/python scripts/fetch_device_wheels.py --cache "$wheels" >/dev/null; then
    echo "$want" > "$wheels/.edgeq-stamp"
  else
    echo "bootstrap: WARNING: some test wheels could not be fetched (the provision tests will be skipped)"
  fi
fi

# Emulated devices: arm64 (and armhf) programs run by qemu-user through binfmt_misc. The handlers need flag F
# (qemu opened at registration) to work inside the devices' chroots: Debian's files under /usr/lib/binfmt.d have it.
# Nothing here stops the bootstrap: without them, tests/test_emulated_devices.py says why (skipped, or failed).
if [ "$(id -u)" -eq 0 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || echo "bootstrap: WARNING: cannot mount binfmt_misc"
  fi
  for arch in aarch64 arm; do
    if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$arch" ] \
      && [ -r "/usr/lib/binfmt.d/qemu-$arch.conf" ]; then
      echo "bootstrap: registering the qemu-$arch binfmt_misc handler"
      cat "/usr/lib/binfmt.d/qemu-$arch.conf" > /proc/sys/fs/binfmt_misc/register \
        || echo "bootstrap: WARNING: cannot register the qemu-$arch handler"
    fi
  done
  # builds what the cache lacks (the first time: Debian's mirror and PyPI are needed); one line when all is cached
  .venv/bin/python scripts/emulated_devices.py build \
    || echo "bootstrap: WARNING: the emulated Raspberry Pi images are not built (their tests will try again)"
else
  echo "bootstrap: not root: the emulated Raspberry Pi devices are not prepared (their tests will be skipped)"
fi
