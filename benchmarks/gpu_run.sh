#!/usr/bin/env bash
# segcli's own path (pipeline, loss, metrics, callbacks, run folder) on a GPU machine that has JAX and PyTorch but
# no TensorFlow (the device tool's nvidia-h200 image: Python 3.12, jax, torch, opencv, matplotlib, rich, typer,
# psutil, h5py; no keras, namex, optree, tomli-w). One script, a few minutes, every figure in one log.
#
# Here, on a machine that reaches PyPI, once (.whl/ is in .gitignore; 2.8 MB):
#   bash benchmarks/gpu_run.sh --download
# There (the device tool's `run`, carry [".whl"]), from the repository root:
#   bash benchmarks/gpu_run.sh            # the log and the run folders go to $OUT (else ./gpu_run)
# A dry run on a CPU with segcli installed (the same commands at tiny sizes, to catch a typo before the GPU):
#   bash benchmarks/gpu_run.sh --quick
#
# On jax it trains sample_data's U-Net (the README's main job), predicts and evaluates the run, and benchmarks
# the tutorial's nets (lambda-fcn, lambda-unet: 368x480, batch 16, synthetic PNGs) with mixed_float16 and
# float32; then the same on torch while time is left. Each step has its own time limit and all of them share
# BUDGET (480 s); a failed step is logged and the next one runs.
set -uo pipefail
cd "$(dirname "$0")/.."
KERAS_WHEELS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 tomli-w==1.2.0)

if [[ "${1:-}" == "--download" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${KERAS_WHEELS[@]}"
    exit
fi
QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
OUT=${OUT:-gpu_run}
mkdir -p "$OUT"
LOG="$OUT/gpu_run.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3

if ! KERAS_BACKEND=jax python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || { echo "gpu_run: the wheels in .whl/ did not install"; exit 1; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

BUDGET=${BUDGET:-480}  # seconds for all steps: the device tool allows 600 a command, 15 minutes a task
step() {  # step SECONDS NAME COMMAND...: run it within its limit and what is left of BUDGET; log time and status
    local limit=$1 name=$2 left=$((BUDGET - SECONDS))
    shift 2
    if ((left < 30)); then
        echo "=== $name: skipped, ${left} s of the budget left"
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== $name ($(date -u +%H:%M:%S), limit ${limit} s): $*"
    local start=$SECONDS
    timeout "$limit" "$@"
    echo "=== $name: exit $? after $((SECONDS - start)) s"
}

step 30 devices bash -c 'nvidia-smi -L; python3 -c "import jax; print(jax.devices())"; lscpu | grep "Model name"'
if ((QUICK)); then
    EPOCHS=(--epochs 2) BENCH=(--quick --skip torch,tiled,precision) BUDGET=1200
else
    EPOCHS=() BENCH=(--size 368x480 --batch-size 16 --skip tiled,precision,torch)
fi
train_predict_evaluate() {  # BACKEND: the README's main job, then predict and evaluate its best.keras
    local run="$OUT/sample-$1"
    step 150 "train $1" env KERAS_BACKEND=$1 python3 -m segcli train unet sample_data --recipe sample-unet \
        "${EPOCHS[@]}" --out "$run" --force
    step 60 "predict $1" env KERAS_BACKEND=$1 python3 -m segcli predict "$run/best.keras" sample_data/val \
        --out "$run/masks"
    step 60 "evaluate $1" env KERAS_BACKEND=$1 python3 -m segcli evaluate "$run/best.keras" sample_data \
        --out "$run/evaluation"
}
bench() {  # BACKEND PRECISION: the tutorial's nets through segcli's train path and a bare fit, and predict
    step 150 "bench $1 $2" env KERAS_BACKEND=$1 python3 -m segcli bench "${BENCH[@]}" \
        --models lambda-fcn,lambda-unet --precisions "$2" --json "$OUT/bench-$1-$2.json"
}
# the issue's order: JAX first (train, then bench with mixed_float16), then what time allows
train_predict_evaluate jax
bench jax mixed_float16
bench jax float32
train_predict_evaluate torch
bench torch mixed_float16
echo "=== done ($(date -u +%H:%M:%S), ${SECONDS} s); figures: $OUT/bench-*.json, run folders: $OUT/sample-*"
