"""The pure-JAX side of chaosgym: the functional `Env` (reset/step of a task on MJX), `rollout`
(one `lax.scan` with the gradient flow as a parameter), the gradient estimators, the policies, and
what they share (batch sharding, the trace cache). Importing this package imports no JAX:
its `settings` module (names and settings of flows and estimators) is read by command lines."""
