"""What the tests read from a traced program (not a test file: the agents' tests import it)."""

import jax
import jax.extend

HIGHEST = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)


def dot_precisions(jaxpr) -> list:
    """The precision of every matrix product in `jaxpr`, sub-programs (scans, conds, ...) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn.params["precision"])
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += dot_precisions(sub)
    return found
