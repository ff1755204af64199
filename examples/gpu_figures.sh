#!/usr/bin/env bash
# README's GPU figures and the CUDA tests in one run on one GPU (an H100 or H200):
#
#   bash examples/gpu_figures.sh runs/gpu                  # every step, in the order below
#   bash examples/gpu_figures.sh runs/gpu corruptions wrn  # only these
#
# Run from the repository root, with locrob installed beside a CUDA build of torch and Triton
# (offline: `pip install --no-deps --no-build-isolation -e .` where its other requirements are
# present). The `device` step (examples/gpu_node_check.py) imports each framework a step
# needs and names any that does not import, with the module it lacks.
# The steps run most telling first, within LOCROB_GPU_BUDGET seconds in all (570 by default):
# each is bounded by its own limit and by the time left, and one that fails, runs out of
# time or is skipped for want of it does not stop the next. Everything printed goes to
# log.txt under the folder given, each benchmark's JSON to a folder of its own there
# (written as it measures, where the benchmark measures in parts), and a last line per step
# says how it ended and in how many seconds. It exits with 1 when a step failed, ran out of
# time or was skipped, and with 2, running nothing, on a step name it lacks.
set -uo pipefail
steps=" device separation alpha cuda-tests corruptions wrn "
out=${1:-runs/gpu}
shift $(($# > 0 ? 1 : 0))
for name in "$@"; do
    [[ $steps == *" $name "* ]] || { echo "no step '$name'; the steps:$steps" >&2; exit 2; }
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1 LOCROB_PROGRESS=0
deadline=$((SECONDS + ${LOCROB_GPU_BUDGET:-570}))
wanted=" ${*:-$steps} "
ended=()
failed=0

step() {  # step NAME SECONDS COMMAND...: run it if asked for and time is left, output to the log
    local name=$1 limit=$2 left=$((deadline - SECONDS)) start=$SECONDS code seconds late
    shift 2
    [[ $wanted == *" $name "* ]] || return 0
    if ((left < 30)); then
        ended+=("$name: skipped, $((left > 0 ? left : 0)) s left")
        failed=1
        return 0
    fi
    ((limit < left)) || limit=$left
    echo "== $name: $*" | tee -a "$out/log.txt"
    # killed outright 10 s after the signal to stop, should a stuck device call not stop
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$out/log.txt"
    code=${PIPESTATUS[0]} seconds=$((SECONDS - start))
    # 124: stopped at the limit; 137: killed, at the limit or by something else (memory)
    late=$( ((code == 124 || (code == 137 && seconds >= limit))) && echo ' (out of time)')
    ((code == 0)) || failed=1
    ended+=("$name: exit $code$late in $seconds s")
}

step device 60 python3 examples/gpu_node_check.py
step separation 150 python3 -m locrob bench separation --device cuda --images 50000 \
    --baseline-images 5000 --out "$out/separation"
# the authors' loop on 10 draws per radius: its images/s do not depend on the draws, and its
# full 3 M images at its speed would take minutes
step alpha 270 python3 -m locrob bench alpha --device cuda --model preact-resnet18 \
    --preset paper --forward-dtype bfloat16 --compile on --clever-points 0 \
    --authors-draws 10 --out "$out/alpha"
step cuda-tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py
# the CPU beside the GPU on 200 of the 224x224 images (its rate per image holds on batches
# of that size, and all 1,000 at all 75 settings would take minutes on the CPU); the
# imagecorruptions baseline, a CPU figure, is left to the CPU column
step corruptions 180 python3 -m locrob bench corruptions --device cuda --images 10000 \
    --imagenet-images 1000 --imagenet-size 224 --cpu-imagenet-images 200 \
    --reference-images 0 --out "$out/corruptions"
step wrn 150 python3 -m locrob bench alpha --device cuda --model wrn-28-10 --preset paper \
    --forward-dtype bfloat16 --compile on --clever-points 0 --points 10 --draws 100 \
    --radii 30 --authors-draws 10 --out "$out/wrn"
printf '%s\n' "${ended[@]}" | tee -a "$out/log.txt"
exit $failed  # 1 when a step failed, ran out of time or was skipped
