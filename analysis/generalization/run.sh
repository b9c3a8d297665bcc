#!/usr/bin/env bash
# Which landscape property predicts generalization (issue 24; analysis/RESULTS.md, "Which measure
# predicts generalization"): a sweep over flood level b x learning rate x batch size x width x seed
# per data set, then `landscape generalization` on it (every measure of the battery on every run at
# its last epoch; Kendall's tau, Psi per axis and sign-error against the gap and the test loss).
#
#   analysis/generalization/run.sh                      # both data sets, CPU scale
#   analysis/generalization/run.sh two_gaussians        # one (two_gaussians or mnist)
#   SCALE=paper analysis/generalization/run.sh          # the paper's models and data, for a GPU
#
# CPU scale: 6 b x 3 lr x 2 batch sizes x 2 widths x 3 seeds = 216 runs per data set; Two Gaussians
# (10% noise, 100 training points) with 2-layer MLPs, and the shipped MNIST subset (tests/data: 800
# training, 200 validation, 200 test images, 10% noise). Paper scale: the paper's 5 x 500 MLP on Two
# Gaussians and its 2 x 1000 MLP on MNIST (the official files under DATA_DIR, default data).
# Environment: CHECKPOINTS (default checkpoints/generalization-SCALE), DEVICE (default auto).
# Finished runs are skipped (--resume) and a killed `landscape generalization` resumes per run.
set -euo pipefail
cd "$(dirname "$0")/../.."
scale=${SCALE:-cpu}
out=${CHECKPOINTS:-checkpoints/generalization-$scale}
device=${DEVICE:-auto}
sets=("$@")
[[ ${#sets[@]} -gt 0 ]] || sets=(two_gaussians mnist)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # small models on a shared CPU: one thread is fastest

case $scale in
  cpu)
    two_gaussians=(--data two_gaussians --noise 0.1 --depth 2 --width 32 128 --epochs 200
                   --lr 1e-3 3e-3 1e-2 --batch-size 20 100 --flood 0 0.05 0.1 0.2 0.3 0.4)
    mnist=(--data mnist --data-dir tests/data --noise 0.1 --depth 2 --width 64 256 --epochs 50
           --lr 0.01 0.03 0.1 --batch-size 32 128 --flood 0 0.02 0.05 0.1 0.2 0.3)
    # the Hessian's top eigenvalue and trace with 20 probes: the measures that cost most here
    measure=(--option hessian_trace.probes=20) ;;
  paper)
    two_gaussians=(--data two_gaussians --noise 0.1 --lr 1e-4 1e-3 1e-2 --batch-size 10 100
                   --width 100 500 --flood 0 0.05 0.1 0.2 0.3 0.4)
    mnist=(--data mnist --data-dir "${DATA_DIR:-data}" --noise 0.1 --lr 0.01 0.03 0.1
           --batch-size 100 500 --width 500 1000 --flood 0 0.02 0.05 0.1 0.2 0.3)
    measure=() ;;
  *) echo "SCALE must be cpu or paper, got $scale" >&2; exit 2 ;;
esac

for set in "${sets[@]}"; do
  declare -n args=$set
  landscape train "${args[@]}" --seeds 3 --drop-resume-state --device "$device" \
    --out "$out" --name "$set" --resume --quiet
  landscape generalization "$out/$set" "${measure[@]}" --device "$device" \
    --out "$out/results" --name "$set" --quiet
done
