#!/usr/bin/env bash
# Table 2 of the paper with `landscape` commands only: train the sweeps over the b grid (table2.conf),
# then print the table without and with early stopping.
#
#   analysis/table2/run.sh cpu                              # the CPU subset: Two Gaussians
#   analysis/table2/run.sh rest                             # Sinusoid and Spiral, 2 trials
#   analysis/table2/run.sh demo                             # Two Gaussians 10%, --sizes demo
#   analysis/table2/run.sh paper                            # 9 settings x 51 b x 10 trials (GPU)
#   JOBS=2 OMP_NUM_THREADS=1 analysis/table2/run.sh cpu     # two processes of one thread each
#
# Environment: CHECKPOINTS (default checkpoints/table2-<scale>), JOBS (processes side by side,
# default 1), DEVICE (default auto), FORMAT (md or latex, default md). Finished runs are skipped and
# killed ones continue where they stopped (--resume), so the script can be rerun at any time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
scale="${1:-cpu}"
case $scale in cpu|rest|demo|paper) ;; *) echo "usage: $0 [cpu|rest|demo|paper]" >&2; exit 2 ;; esac
source "$here/table2.conf"
declare -n settings="SETTINGS_$scale" trials="TRIALS_$scale" split="SPLIT_$scale"
sizes_var="SIZES_$scale"
sizes="${!sizes_var:-paper}"
CHECKPOINTS="${CHECKPOINTS:-checkpoints/table2-$scale}"
JOBS="${JOBS:-1}" DEVICE="${DEVICE:-auto}" FORMAT="${FORMAT:-md}"

common="--flood $FLOODS --epochs $EPOCHS --sizes $sizes --device $DEVICE --out $CHECKPOINTS --resume --quiet"
jobs=()
if [[ $split == yes ]]; then  # trial-major: every setting gets its first trial before a second
  for ((seed = 0; seed < trials; seed++)); do
    for setting in "${settings[@]}"; do
      read -r data noise <<<"$setting"
      jobs+=("--data $data --noise $noise --seed $seed --name $data-noise$noise-seed$seed $common")
    done
  done
else
  for setting in "${settings[@]}"; do
    read -r data noise <<<"$setting"
    jobs+=("--data $data --noise $noise --seeds $trials --name $data-noise$noise $common")
  done
fi
printf '%s\n' "${jobs[@]}" | xargs -P "$JOBS" -I{} sh -c 'landscape train {}'

for stopping in "" "--early-stopping"; do
  landscape table "$CHECKPOINTS" $stopping --format "$FORMAT"
  echo
done
