#!/usr/bin/env bash
# README's GPU figures and the CUDA tests in one run on one GPU (an H100 or H200):
#
#   bash examples/gpu_figures.sh runs/gpu
#
# Run from the repository root, with locrob installed beside a CUDA build of torch and Triton
# (`pip install --no-deps -e .` where its other requirements are present). Each step is
# bounded in time and writes its output, and its JSON where it has one, under the folder given;
# a step that fails or runs out of time does not stop the next.
set -uo pipefail
out=${1:-runs/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 LOCROB_PROGRESS=0

step() {  # step NAME SECONDS COMMAND...: run it, its output to the screen and to NAME.txt
    local name=$1 seconds=$2
    shift 2
    echo "== $name: $*"
    timeout "$seconds" "$@" 2>&1 | tee "$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

step device 60 python -c "import torch, triton; print(torch.cuda.get_device_name(), \
'| torch', torch.__version__, '| triton', triton.__version__)"
step cuda-tests 240 python -m pytest -q -x -p no:cacheprovider tests/test_cuda.py
step separation 120 python -m locrob bench separation --device cuda --images 50000 \
    --baseline-images 5000 --out "$out/separation"
step alpha-preact-resnet18 240 python -m locrob bench alpha --device cuda \
    --model preact-resnet18 --preset paper --forward-dtype bfloat16 --compile on \
    --clever-points 0 --out "$out/alpha-preact-resnet18"
step alpha-wrn-28-10 180 python -m locrob bench alpha --device cuda --model wrn-28-10 \
    --preset paper --forward-dtype bfloat16 --compile on --clever-points 0 \
    --points 10 --draws 100 --radii 30 --out "$out/alpha-wrn-28-10"
step corruptions 240 python -m locrob bench corruptions --device cuda --images 10000 \
    --imagenet-images 1000 --imagenet-size 224 --out "$out/corruptions"
