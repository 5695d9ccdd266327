#!/usr/bin/env bash
# The Ant comparison at SHAC's budget, seed 1 (2026-12-05, session 3): the model-free agents first
# (brax-ppo is not resumable, so it runs while the session surely lasts), then ahac seed 1 resumed
# from its checkpoint at update 150. Same snapshots as ant_driver3.sh.
export TQDM_MININTERVAL=30
out=/work/main/runs/ant-4M
echo "=== ppo,brax-ppo seeds 0-1: $(date -u)"
cd /work/ant_snapshot2 && PYTHONPATH=/work/ant_snapshot2 nice -n 10 /work/main/.venv/bin/chaosgym compare \
    --tasks ChaosAnt-v0 --agents ppo,brax-ppo --seeds 2 --env-steps 4096000 --out $out \
    && cp $out/results.csv $out/results_modelfree_seeds01.csv
echo "=== exit $? $(date -u)"
echo "=== apg,shac,ahac seeds 0-1: $(date -u)"
cd /work/ant_snapshot && PYTHONPATH=/work/ant_snapshot nice -n 10 /work/main/.venv/bin/chaosgym compare \
    --tasks ChaosAnt-v0 --agents apg,shac,ahac --seeds 2 --env-steps 4096000 --out $out \
    && cp $out/results.csv $out/results_gradient_seeds01.csv
echo "=== exit $? $(date -u)"
