"""Why gradients fail: Lyapunov exponents, Jacobian spectra, gradient variance against horizon and
loss-landscape slices (`measures`), their figures (`plots`) and the `chaosgym diagnose` command
(`command`, its settings in `config`, JAX-free).

The measures are reachable from the package itself (`chaosgym.diagnostics.lyapunov_exponents`),
imported on first use, so that the command line's settings load without JAX.
"""

import importlib


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    measures = importlib.import_module("chaosgym.diagnostics.measures")
    try:
        return getattr(measures, name)
    except AttributeError:
        raise AttributeError(f"module 'chaosgym.diagnostics' has no attribute {name!r}") from None
