#!/bin/bash
# The sweep behind this folder (from the repository root, on the 2-core CPU machine):
# dense-5m (the embedded model's shape, random init) and moe-8x (the same with 8 experts of half
# the MLP width, top-2: the same active parameters, 2.4x the total), ZeRO-2 and ZeRO-3, SFT on
# the shipped sample, 2 ranks; ZeRO-3 once with DeepSpeed's default persistence threshold (tiny
# tensors stay whole on every rank) and once with 0 (every tensor partitioned, as in a real model).
set -euo pipefail
d=results/reference/cpu-2core-moe-zero
./sb bench --model $d/models/dense-5m,$d/models/moe-8x --zero 2,3 --tasks sft --nodes 1 \
    --ds zero_optimization.stage3_param_persistence_threshold=100000 \
    --ds zero_optimization.stage3_param_persistence_threshold=0 \
    --steps 12 --warmup 3 --results $d --sweep sweep
./sb report --results $d/sweep --out $d/report
