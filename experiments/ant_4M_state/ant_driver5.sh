#!/usr/bin/env bash
# The Ant comparison at SHAC's budget, seed 2 (2026-12-05, session 3, after seeds 0-1 finished): the model-free agents first
# (brax-ppo is not resumable, so it runs while the session surely lasts), then apg, shac and ahac seed 2.
export TQDM_MININTERVAL=30
out=/work/main/runs/ant-4M
echo "=== ppo,brax-ppo seeds 0-2: $(date -u)"
cd /work/ant_snapshot2 && PYTHONPATH=/work/ant_snapshot2 nice -n 10 /work/main/.venv/bin/chaosgym compare \
    --tasks ChaosAnt-v0 --agents ppo,brax-ppo --seeds 3 --env-steps 4096000 --out $out \
    && cp $out/results.csv $out/results_modelfree_seeds012.csv
echo "=== exit $? $(date -u)"
echo "=== apg,shac,ahac seeds 0-2: $(date -u)"
cd /work/ant_snapshot && PYTHONPATH=/work/ant_snapshot nice -n 10 /work/main/.venv/bin/chaosgym compare \
    --tasks ChaosAnt-v0 --agents apg,shac,ahac --seeds 3 --env-steps 4096000 --out $out \
    && cp $out/results.csv $out/results_gradient_seeds012.csv
echo "=== exit $? $(date -u)"
