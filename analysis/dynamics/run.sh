#!/usr/bin/env bash
# The landscape during training and between solutions (issue 25; analysis/RESULTS.md, "Flooding
# and the edge of stability" and "Are flooded solutions connected?"):
#   (a) full-batch gradient descent (SGD without momentum, one batch = the training set) with and
#       without flooding, the top Hessian eigenvalue tracked against 2/lr (Cohen et al. 2021);
#       Adam with its preconditioned sharpness against 38/lr (Cohen et al. 2022);
#   (b) the loss along the linear path and a fitted Bezier curve (Garipov et al. 2018) between the
#       plain and the flooded solution of one seed, and between the solutions of two seeds (one data
#       draw: --data-seed 0; the seeds differ in initialization and batch order).
#
#   analysis/dynamics/run.sh                 # both data sets, CPU scale
#   analysis/dynamics/run.sh two_gaussians   # one (two_gaussians or mnist)
#
# Environment: CHECKPOINTS (default checkpoints/dynamics), DEVICE (default auto). Finished runs
# are skipped (--resume); finished connections are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${CHECKPOINTS:-checkpoints/dynamics}
device=${DEVICE:-auto}
sets=("$@")
[[ ${#sets[@]} -gt 0 ]] || sets=(two_gaussians mnist)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# CPU scale. Two Gaussians: 100 training points (10% noise), a 2 x 128 MLP; MNIST: the shipped
# subset (800 training images, 10% noise), a 2 x 128 MLP, the top eigenvalue on 400 of them.
two_gaussians=(--data two_gaussians --noise 0.1 --depth 2 --width 128 --batch-size 100)
two_gaussians_gd=(--lr 0.05 0.2 --epochs 600 --flood 0 0.1 0.2 0.3)
two_gaussians_adam=(--lr 1e-3 --epochs 600 --flood 0 0.2)
mnist=(--data mnist --data-dir tests/data --noise 0.1 --depth 2 --width 128 --batch-size 800
       --track-samples 400)
mnist_gd=(--lr 0.05 0.2 --epochs 300 --flood 0 0.05 0.1 0.2)
mnist_adam=(--lr 1e-3 --epochs 300 --flood 0 0.1)
# (b) connects the runs of one learning rate: one where plain training gets below every b
# (MNIST at 0.05 is still at loss 0.36 after 300 full-batch steps: flooding never acts there)
declare -A connect_lr=([two_gaussians]=0.05 [mnist]=0.2)
results=$out/results
for set in "${sets[@]}"; do
  declare -n common=$set gd=${set}_gd adam=${set}_adam
  landscape train "${common[@]}" "${gd[@]}" --optimizer sgd --momentum 0 --seeds 2 --data-seed 0 \
    --track top_eigenvalue --track-every 5 --save last --eval-test every --drop-resume-state \
    --device "$device" --out "$out" --name "$set-gd" --resume --quiet
  landscape train "${common[@]}" "${adam[@]}" --optimizer adam --seeds 1 \
    --track top_eigenvalue --track-every 5 --save last --eval-test every --drop-resume-state \
    --device "$device" --out "$out" --name "$set-adam" --resume --quiet
  landscape figures "$out/$set-gd" --section dynamics --out "$results/$set-gd"
  landscape figures "$out/$set-adam" --section dynamics --out "$results/$set-adam"
  # (b) plain vs flooded (the largest b, seed 0), and the solutions of seeds 0 and 1
  runs=$out/$set-gd lr=${connect_lr[$set]}
  b=$(ls "$runs" | sed -n "s/.*-flood\(0\.[0-9]*\)-seed0-lr$lr\.h5\$/\1/p" | sort -g | tail -1)
  pick() { ls "$runs"/*-flood"$1"-seed"$2"-lr"$lr".h5; }
  landscape connect "$(pick 0 0)" "$(pick "$b" 0)" --device "$device" --quiet \
    --out "$results/$set-connect" --name "plain-flood$b-seed0"
  landscape connect "$(pick "$b" 0)" "$(pick "$b" 1)" --device "$device" --quiet \
    --out "$results/$set-connect" --name "flood$b-seed0-seed1"
  landscape connect "$(pick 0 0)" "$(pick 0 1)" --device "$device" --quiet \
    --out "$results/$set-connect" --name "plain-seed0-seed1"
done
