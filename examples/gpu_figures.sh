#!/usr/bin/env bash
# README's GPU figures and the CUDA tests in one run on one GPU (an H100 or H200):
#
#   bash examples/gpu_figures.sh runs/gpu                  # every step, in the order below
#   bash examples/gpu_figures.sh runs/gpu corruptions wrn  # only these
#
# Run from the repository root, with locrob installed beside a CUDA build of torch and Triton
# (offline: `pip install --no-deps --no-build-isolation -e .` where its other requirements are
# present). The `device` step names any that are missing: torchattacks for the CUDA tests,
# RobustBench for WideResNet-28-10, imagecorruptions for the frost photographs.
# The steps run most telling first, within LOCROB_GPU_BUDGET seconds in all (570 by default):
# each is bounded by its own limit and by the time left, and one that fails, runs out of
# time or is skipped for want of it does not stop the next. Everything printed goes to
# log.txt under the folder given, each benchmark's JSON to a folder of its own there
# (written as it measures, where the benchmark measures in parts), and a last line per step
# says how it ended and in how many seconds.
set -uo pipefail
out=${1:-runs/gpu}
shift $(($# > 0 ? 1 : 0))
mkdir -p "$out"
export PYTHONUNBUFFERED=1 LOCROB_PROGRESS=0
deadline=$((SECONDS + ${LOCROB_GPU_BUDGET:-570}))
wanted=" ${*:-device separation alpha cuda-tests corruptions wrn} "
ended=()

step() {  # step NAME SECONDS COMMAND...: run it if asked for and time is left, output to the log
    local name=$1 limit=$2 left=$((deadline - SECONDS)) start=$SECONDS code late
    shift 2
    [[ $wanted == *" $name "* ]] || return 0
    if ((left < 30)); then
        ended+=("$name: skipped, ${left} s left")
        return 0
    fi
    echo "== $name: $*" | tee -a "$out/log.txt"
    # killed outright 10 s after the signal to stop, should a stuck device call not stop
    timeout -k 10 $((limit < left ? limit : left)) "$@" 2>&1 | tee -a "$out/log.txt"
    code=${PIPESTATUS[0]}
    late=$( ((code == 124 || code == 137)) && echo ' (out of time)')
    ended+=("$name: exit $code$late in $((SECONDS - start)) s")
}

step device 60 python3 -c "
import importlib.util, torch, triton
needed = ('locrob', 'torchattacks', 'robustbench', 'imagecorruptions')
missing = [m for m in needed if not importlib.util.find_spec(m)]
print('missing:', ', '.join(missing) or 'nothing', '| torch', torch.__version__, '| triton',
      triton.__version__)
print(torch.cuda.get_device_properties(0))"
step separation 150 python3 -m locrob bench separation --device cuda --images 50000 \
    --baseline-images 5000 --out "$out/separation"
# the authors' loop on 10 draws per radius: its images/s do not depend on the draws, and its
# full 3 M images at its speed would take minutes
step alpha 270 python3 -m locrob bench alpha --device cuda --model preact-resnet18 \
    --preset paper --forward-dtype bfloat16 --compile on --clever-points 0 \
    --authors-draws 10 --out "$out/alpha"
step cuda-tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
# the CPU beside the GPU on 200 images of each batch: its rates per image hold at that size,
# and all 1,000 224x224 images at all 75 settings would take minutes on the CPU
step corruptions 180 python3 -m locrob bench corruptions --device cuda --images 10000 \
    --imagenet-images 1000 --imagenet-size 224 --cpu-images 200 --reference-images 0 \
    --out "$out/corruptions"
step wrn 150 python3 -m locrob bench alpha --device cuda --model wrn-28-10 --preset paper \
    --forward-dtype bfloat16 --compile on --clever-points 0 --points 10 --draws 100 \
    --radii 30 --authors-draws 10 --out "$out/wrn"
printf '%s\n' "${ended[@]}" | tee -a "$out/log.txt"
