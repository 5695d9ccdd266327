#!/usr/bin/env bash
# The Ant comparison at SHAC's budget, seed 2 of the gradient agents, resumed (2026-12-05, session 4):
# apg seed 2 resumes from its checkpoint at update 1,000; seeds 0-1 and finished runs are read back.
export TQDM_MININTERVAL=30
out=/work/main/runs/ant-4M
echo "=== apg,shac,ahac seeds 0-2 (resumed): $(date -u)"
cd /work/ant_snapshot && PYTHONPATH=/work/ant_snapshot nice -n 10 /work/main/.venv/bin/chaosgym compare \
    --tasks ChaosAnt-v0 --agents apg,shac,ahac --seeds 3 --env-steps 4096000 --out $out \
    && cp $out/results.csv $out/results_gradient_seeds012.csv
echo "=== exit $? $(date -u)"
