#!/usr/bin/env bash
# Issue 15's GPU check as one prepared script (about 10 minutes on one H100/H200), for a session
# that is lent the device: the stacked-sweep benchmark at width 500 with K = 510 (one Table 2
# setting's grid x 10 trials), then one full Table 2 setting trained end to end with its wall time.
# What to record in benchmarks/RESULTS.md comes back in $OUT; the run files stay on the machine.
# It runs from the repository root without an install (python -m landscape).
#
#   bash benchmarks/device_check.sh                         # on the GPU machine (the device tool)
#   DEVICE=cpu EPOCHS=3 TRIALS=1 FLOODS=0:0.5:0.25 WIDTHS=32 K=4 bash benchmarks/device_check.sh
#                                                           # a dry run of the script's logic here
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/device-out}"
runs="${RUNS:-/tmp/landscape-device-runs}"
DEVICE="${DEVICE:-cuda}" EPOCHS="${EPOCHS:-500}" TRIALS="${TRIALS:-10}" FLOODS="${FLOODS:-0:0.5:0.01}"
WIDTHS="${WIDTHS:-500}" K="${K:-510}"
mkdir -p "$out"
{ date -u; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"; } | tee "$out/device.txt"

# 1. Stacked against one at a time, training steps (benchmarks/sweep.py, its section (a)).
python benchmarks/sweep.py --device "$DEVICE" --widths "$WIDTHS" --floods "$K" --epochs 20 \
    --sweep-epochs 0 --repeat 3 | tee "$out/sweep.txt"

# 2. One Table 2 setting end to end: Two Gaussians at 10% noise, the b grid x TRIALS, EPOCHS epochs.
rm -rf "$runs"
start=$(date +%s.%N)
python -m landscape train --data two_gaussians --noise 0.1 --seeds "$TRIALS" --flood $FLOODS \
    --epochs "$EPOCHS" --device "$DEVICE" --out "$runs" --name setting --quiet
end=$(date +%s.%N)
python -c "print(f'one Table 2 setting ($TRIALS trials, grid $FLOODS, $EPOCHS epochs, $DEVICE): ' \
f'{$end - $start:.1f} s wall')" | tee "$out/setting.txt"
{ python -m landscape table "$runs/setting"; echo
  python -m landscape table "$runs/setting" --early-stopping; } | tee "$out/table.md"
python analysis/table2/archive.py save "$runs/setting" "$out/two_gaussians-noise0.1-$DEVICE.npz"
