#!/usr/bin/env bash
# Choosing b without the full grid (issue 8): on Two Gaussians, test accuracy and compute cost of
#   grid      the exhaustive grid of b with validation selection (paper Sec. 4)
#   adaptive  one run whose b follows the adaptive schedule (landscape/training/schedule.py)
#   adaflood  one run with AdaFlood's per-sample levels, plus its auxiliary models (adaflood.py)
#   iflood    iFlood over the same grid with the same validation selection
#   adaptive-step0.05  the adaptive schedule with alpha = 0.05 instead of 0.01
# then the table (compare.py). Each command's wall and CPU seconds go to OUT/timings.txt.
#
#   analysis/choosing_b/run.sh                       # all noise levels, one after another
#   analysis/choosing_b/run.sh 0.1                   # one noise level (run several side by side)
#   analysis/choosing_b/compare.py checkpoints/choosing-b   # the table of what has finished
#
# Environment: CHECKPOINTS (default checkpoints/choosing-b); SEEDS, EPOCHS, WIDTH, N_TEST, GRID
# (defaults: the CPU scale below). Finished runs are skipped (--resume); a rerun's timing then
# counts only what it trained.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${CHECKPOINTS:-checkpoints/choosing-b}
noises=("$@")
[[ ${#noises[@]} -gt 0 ]] || noises=(0.01 0.05 0.1)
# CPU scale: 5 x WIDTH MLPs (the paper: 500), EPOCHS epochs (500), GRID (0:0.5:0.01), SEEDS trials
# (10), N_TEST test points (20000); 100/100 training/validation points as the paper.
common="--data two_gaussians --width ${WIDTH:-100} --epochs ${EPOCHS:-300} --n-test ${N_TEST:-5000}
        --seeds ${SEEDS:-3} --eval-test best --out $out --resume --quiet"
grid=${GRID:-0:0.5:0.05}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny models on a shared CPU: one thread is fastest
mkdir -p "$out"

timed() {  # timed METHOD NOISE ARGS...: one `landscape train`, its seconds appended to timings.txt
  local method=$1 noise=$2; shift 2
  /usr/bin/time -f "$method $noise %e %U %S" -a -o "$out/timings.txt" \
    landscape train $common --noise "$noise" --name "$method-noise$noise" "$@"
}
for noise in "${noises[@]}"; do
  timed grid "$noise" --flood "$grid"
  timed adaptive "$noise" --flood-schedule adaptive
  timed adaflood "$noise" --objective adaflood
  timed iflood "$noise" --objective iflood --flood "$grid"
  timed adaptive-step0.05 "$noise" --flood-schedule adaptive --flood-step 0.05
done
python analysis/choosing_b/compare.py "$out"
