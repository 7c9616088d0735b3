#!/usr/bin/env bash
# Set up .venv (idempotent) and run the demo or the test suite.
#   bash scripts/quickstart.sh demo   # slots of the bundled model on the bundled image -> glmix-viz-demo/
#   bash scripts/quickstart.sh test   # the whole test suite (what CI runs)
# Needs only Python >= 3.10 with pip and venv (test: also Chromium, installed with apt-get when missing).
# Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-demo}"; shift || true
case "$what" in demo|test) ;; *) echo "usage: bash scripts/quickstart.sh demo|test [args...]" >&2; exit 2;; esac

py="${PYTHON:-python3}"
venv=".venv"
hash="$(cat pyproject.toml constraints.txt build-constraints.txt | sha1sum | cut -c1-12)"
if [ "$what" = test ]; then extras=".[test]"; ready=("$venv/.installed-$hash-test")
else extras="."; ready=("$venv/.installed-$hash-demo" "$venv/.installed-$hash-test"); fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[quickstart] creating $venv with $("$py" --version)"
  "$py" -m venv "$venv"
fi
installed=false
for f in "${ready[@]}"; do [ -f "$f" ] && installed=true; done
if [ "$installed" = false ]; then
  cons=()
  [ "$(uname -m)" = x86_64 ] && cons=(-c constraints.txt)
  echo "[quickstart] installing glmix-viz${extras#.} into $venv (first time: a few minutes)"
  # scikit-learn-extra (test extra) has no numpy-2 wheel: build it from source against numpy 2
  PIP_NO_BINARY=scikit-learn-extra PIP_CONSTRAINT="$PWD/build-constraints.txt" \
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "${cons[@]}" -e "$extras"
  touch "${ready[0]}"
fi

if [ "$what" = test ] && [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1 \
    && ! command -v chromium-browser >/dev/null 2>&1; then
  # tests/test_report.py renders the HTML reports in headless Chromium; without it that test fails, it never skips
  sudo=(); [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo=(sudo)
  if command -v apt-get >/dev/null 2>&1; then
    echo "[quickstart] installing chromium (apt-get) for the browser tests of the HTML reports"
    "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q chromium \
      || echo "[quickstart] could not install chromium: the browser tests will fail" >&2
  else
    echo "[quickstart] no chromium and no apt-get: install Chromium (or set CHROMIUM) for the browser tests" >&2
  fi
fi

if [ "$what" = demo ]; then
  exec "$venv/bin/glmix-viz" --demo --out glmix-viz-demo "$@"
else
  exec "$venv/bin/python" -m pytest "$@"
fi
