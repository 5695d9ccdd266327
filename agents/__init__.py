"""Agents trained on chaosgym tasks: gradient estimators through the simulator, ES, and SB3 baselines."""
