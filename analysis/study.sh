#!/usr/bin/env bash
# The paper study (figures of Sections 2 and 5): trains what is missing, makes the analyses' result
# files, then draws every figure and writes the tables, with `landscape` commands only.
#
#   analysis/study.sh [small|paper]          small (default): minutes on a 2-core CPU
#
# Each analysis/configs/*.conf is one figure's configuration for both scales, as bash arrays:
#   train_<scale>    arguments of `landscape train`, one run or sweep each (--out, --resume added)
#   analyse_<scale>  `landscape` commands that make the figure's result files
#   inputs_<scale>   what `landscape figures` reads for the figure (runs, result files or folders)
#   tables_<scale>   sweeps for `landscape table` (with and without early stopping), one table
# Everything generated goes under checkpoints/study-<scale>/ (git-ignored): runs/, results/,
# figures/ and tables/. Identical train lines are run once; finished runs are skipped (--resume).
# Environment: DEVICE (default auto), FORMATS (default pdf,png), DATA_DIR (paper scale: the folder
# holding mnist/ with the official MNIST files, default data; see README, Image data sets).
set -euo pipefail
scale=${1:-small}
case $scale in small|paper) ;; *) echo "usage: $0 [small|paper]" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
root=checkpoints/study-$scale
CHECKPOINTS=$root/runs RESULTS=$root/results
device=${DEVICE:-auto} formats=${FORMATS:-pdf,png}

declare -A seen=()
train=() analyse=() inputs=() tables=()
add() {  # add ARRAY LINE...: append the lines that ARRAY does not hold yet
  local -n into=$1
  local array=$1; shift
  for line in "$@"; do
    [[ -n ${seen[$array $line]+x} ]] || { seen[$array $line]=1; into+=("$line"); }
  done
}
for conf in analysis/configs/*.conf; do
  unset "train_$scale" "analyse_$scale" "inputs_$scale" "tables_$scale"
  source "$conf"
  declare -n t=train_$scale a=analyse_$scale i=inputs_$scale s=tables_$scale
  add train ${t[@]+"${t[@]}"}
  add analyse ${a[@]+"${a[@]}"}
  add inputs ${i[@]+"${i[@]}"}
  add tables ${s[@]+"${s[@]}"}
  unset -n t a i s
done

if [[ $scale == paper ]]; then
  echo "== Table 2's sweeps (analysis/table2/run.sh; Figure 3 reads them)"
  CHECKPOINTS=$CHECKPOINTS/table2 analysis/table2/run.sh paper
fi

echo "== training (${#train[@]} runs/sweeps; finished ones are skipped)"
for args in ${train[@]+"${train[@]}"}; do
  # shellcheck disable=SC2086  # the config lines are word lists
  landscape train $args --out "$CHECKPOINTS" --device "$device" --resume --quiet
done

echo "== analyses"
for command in ${analyse[@]+"${analyse[@]}"}; do
  # shellcheck disable=SC2086
  landscape $command --format "$formats"
done

echo "== tables (test accuracy with the flood level chosen by validation accuracy)"
mkdir -p "$root/tables"
if [[ ${#tables[@]} -gt 0 ]]; then
  landscape table "${tables[@]}" > "$root/tables/flood-selection.md"
  landscape table "${tables[@]}" --early-stopping > "$root/tables/flood-selection-early-stopping.md"
fi

echo "== figures"
landscape figures "${inputs[@]}" --section all --out "$root/figures" --format "$formats"
