#!/usr/bin/env bash
# The GPU checks as one prepared script, for a session that is lent the device (about 7 minutes
# on one H200). Sections (SECTIONS, in this order):
#   curvature  issue 23: benchmarks/curvature.py on the GPU against PyHessian, curvlinops and
#              hessian-eigenthings (their wheels from PEERS, installed without dependencies:
#              here, `pip download --no-deps -d .whl PyHessian==0.1 curvlinops-for-pytorch==3.0.1
#              hessian-eigenthings==1.0.0a5 backpack-for-pytorch einconv unfoldNd`, .whl in
#              .git/info/exclude, and `carry` it), the CUDA-only tests of the operators, and
#              benchmarks/replay.py (CUDA graphs)
#   sweep      issue 15: the stacked-sweep benchmark at width 500 with K = 510 (one Table 2
#              setting's grid x 10 trials), training steps stacked against one at a time
#   setting    one Table 2 setting trained end to end (EPOCHS epochs) with its wall time
# Each section has its own time limit (seconds: CURVATURE_S, SWEEP_S, SETTING_S) and what it
# prints is kept in $OUT; a section cut short does not stop the next. It runs from the
# repository root without an install (python3 -m landscape; PYTHON names another).
#
#   bash benchmarks/device_check.sh                         # on the GPU machine (the device tool)
#   DEVICE=cpu SECTIONS=setting EPOCHS=3 TRIALS=1 FLOODS=0:0.5:0.25 bash benchmarks/device_check.sh
#                                                           # a dry run of a section here
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/device-out}"
runs="${RUNS:-/tmp/landscape-device-runs}"
DEVICE="${DEVICE:-cuda}" EPOCHS="${EPOCHS:-100}" TRIALS="${TRIALS:-10}" FLOODS="${FLOODS:-0:0.5:0.01}"
WIDTHS="${WIDTHS:-500}" K="${K:-510}" SECTIONS="${SECTIONS:-curvature sweep setting}"
PEERS="${PEERS:-.whl}" PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
{ date -u; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"; } | tee "$out/device.txt"

for section in $SECTIONS; do case "$section" in
curvature)
    if ls "$PEERS"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/peers "$PEERS"/PyHessian*.whl "$PEERS"/curvlinops*.whl \
            "$PEERS"/hessian_eig*.whl "$PEERS"/backpack*.whl "$PEERS"/einconv*.whl \
            "$PEERS"/unfoldNd*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/peers"
    fi
    timeout 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_operators.py \
        -k "cuda or batched or products_equal" 2>&1 | tail -3 \
        | tee "$out/operators-tests.txt"
    timeout 60 "$PY" benchmarks/replay.py 2>&1 | tee "$out/replay.txt"
    timeout "${CURVATURE_S:-260}" "$PY" benchmarks/curvature.py --device "$DEVICE" 2>&1 \
        | tee "$out/curvature.txt" ;;
sweep)
    timeout "${SWEEP_S:-60}" "$PY" benchmarks/sweep.py --device "$DEVICE" --widths "$WIDTHS" \
        --floods "$K" --epochs 20 --sweep-epochs 0 --repeat 3 2>&1 | tee "$out/sweep.txt" ;;
setting)  # Two Gaussians at 10% noise, the b grid x TRIALS
    rm -rf "$runs"
    start=$(date +%s.%N)
    timeout "${SETTING_S:-120}" "$PY" -m landscape train --data two_gaussians --noise 0.1 \
        --seeds "$TRIALS" --flood $FLOODS --epochs "$EPOCHS" --device "$DEVICE" --out "$runs" \
        --name setting --quiet && {
        end=$(date +%s.%N)
        "$PY" -c "print(f'one Table 2 setting ($TRIALS trials, grid $FLOODS, $EPOCHS epochs, \
$DEVICE): {$end - $start:.1f} s wall')" | tee "$out/setting.txt"
        "$PY" -m landscape table "$runs/setting" | tee "$out/table.md"; } ;;
*) echo "unknown section $section" >&2; exit 2 ;;
esac; done
