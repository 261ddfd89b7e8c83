#!/usr/bin/env bash
# The GPU check (tools/meshstream_tools/gpu_check.py): every engine on CUDA against the CPU
# reference, eager / torch.compile / CUDA graphs / fp16 / Torch-TensorRT timings, offline fps for
# 1 and 10 people, live p95 at 30 fps, the body layer at batch 1 and 64; one report, under 8 min.
#
# The machine with the GPU has PyTorch with CUDA and no network: `meshstream models fetch` cannot
# download the BlazePose networks there, and filterpy (the tracker's Kalman filters) is not
# installed. So, in two steps:
#
# 1. Here, in the repository root, on a machine that has the networks (make models):
#        tools/gpu_check.sh prepare
#    copies the converted networks (~33 MB) into .gpu_carry/cache/blazepose and the filterpy
#    wheel into .gpu_carry/wheels (.gpu_carry/ is ignored by git).
#
# 2. On the GPU machine, from the repository root, carrying .gpu_carry (the device tool):
#        run(command="bash tools/gpu_check.sh device", carry=[".gpu_carry"], timeout_s=560)
#    writes $OUT/gpu_check.md (the report), $OUT/gpu_check.json and $OUT/gpu_check.log.
#    Elsewhere, `tools/gpu_check.sh device` writes into out/gpu_check/ instead.
#
# `tools/gpu_check.sh cpu` runs the CPU half (what tests/test_gpu_check.py runs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CARRY=$ROOT/.gpu_carry
FILTERPY=filterpy==1.4.5

python_here() {
    if [ -x "$ROOT/.venv/bin/python" ]; then echo "$ROOT/.venv/bin/python"; else echo "${PYTHON:-python3}"; fi
}

case "${1:-}" in
prepare)
    PY=$(python_here)
    SOURCE_CACHE=${MESHSTREAM_CACHE:-$HOME/.cache/meshstream}
    if ! PYTHONPATH="$ROOT:$ROOT/tools" MESHSTREAM_CACHE="$SOURCE_CACHE" "$PY" -c \
        'import sys; from engines.models import model_status; sys.exit(0 if all(s["valid"] for s in model_status()) else 1)'; then
        echo "gpu_check: the BlazePose networks in $SOURCE_CACHE are missing or invalid: run \`make models\` (or \`meshstream models fetch\`) first" >&2
        exit 1
    fi
    rm -rf "$CARRY"
    mkdir -p "$CARRY/cache" "$CARRY/wheels"
    cp -r "$SOURCE_CACHE/blazepose" "$CARRY/cache/blazepose"
    "$PY" -m pip wheel -q --no-deps "$FILTERPY" -w "$CARRY/wheels"
    echo "gpu_check: ready to carry: $(du -sh "$CARRY" | cut -f1) in .gpu_carry ($(ls "$CARRY/cache/blazepose" | wc -l) network files, $(ls "$CARRY/wheels"))"
    echo 'gpu_check: on the GPU machine: run(command="bash tools/gpu_check.sh device", carry=[".gpu_carry"], timeout_s=560)'
    ;;
device)
    if [ ! -d "$CARRY/cache/blazepose" ]; then
        echo "gpu_check: .gpu_carry/cache/blazepose is missing: run \`tools/gpu_check.sh prepare\` where the networks are, and carry .gpu_carry" >&2
        exit 1
    fi
    OUT_DIR=${OUT:-$ROOT/out/gpu_check}
    mkdir -p "$OUT_DIR"
    SITE=$(mktemp -d /tmp/meshstream-site.XXXXXX)
    if ! python3 -c 'import filterpy' 2>/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRY"/wheels/*.whl
    fi
    export PYTHONPATH="$ROOT:$ROOT/tools:$SITE" MESHSTREAM_CACHE="$CARRY/cache" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | sed 's/^/gpu_check: /' || true
    python3 -m meshstream_tools.gpu_check --device cuda --out "$OUT_DIR/gpu_check.md" "${@:2}" 2>&1 \
        | tee "$OUT_DIR/gpu_check.log"
    ;;
cpu)
    PY=$(python_here)
    mkdir -p "$ROOT/out/gpu_check"
    PYTHONPATH="$ROOT:$ROOT/tools${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m meshstream_tools.gpu_check --device cpu --quick \
        --out "$ROOT/out/gpu_check/gpu_check_cpu.md" "${@:2}"
    ;;
*)
    echo "usage: tools/gpu_check.sh prepare | device [ARGS] | cpu [ARGS]   (see the comment at the top of this file)" >&2
    exit 2
    ;;
esac
