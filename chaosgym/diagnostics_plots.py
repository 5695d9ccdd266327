"""Figures of `chaosgym.diagnostics` results (matplotlib, Agg backend: files only, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from chaosgym.diagnostics import (GradientStats, JacobianSpectrum, LossLandscape, LyapunovResult,  # noqa: E402
                                  mean_and_stderr)

DPI = 90  # small files: the figures go into the docs


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_lyapunov(results: dict[str, LyapunovResult], dt: float, path: Path, title: str = "") -> Path:
    """Running estimate of the maximal exponent against time, one line per start, per mode
    (log time axis: a converged estimate is flat over the last decade)."""
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (mode, result) in zip(axes[0], results.items()):
        running = np.asarray(result.running[..., 0])
        time = dt * np.arange(1, running.shape[-1] + 1)
        for line in running:
            ax.plot(time, line, lw=0.8, alpha=0.7)
        mean, stderr = mean_and_stderr(result.exponents[:, 0])
        ax.axhline(0.0, color="k", lw=0.6)
        steps = int(np.min(result.steps))
        blown = f"\n(physics blew up: as few as {steps} steps)" if steps < running.shape[-1] else ""
        ax.set(xscale="log", xlabel="time [s]", ylabel="running $\\lambda_1$ [1/s]",
               title=f"{mode}: $\\lambda_1$ = {mean:.3g} ± {stderr:.2g} /s{blown}")
    fig.suptitle(title)
    return _save(fig, path)


def plot_jacobian(results: dict[str, JacobianSpectrum], dt: float, path: Path, title: str = "") -> Path:
    """Per mode: spectral radius and extreme singular values of the one-step Jacobian along the
    trajectory (log scale, median over starts), and log of the norm of their product."""
    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 6.4), squeeze=False)
    for column, (mode, spectrum) in enumerate(results.items()):
        radius = np.abs(np.asarray(spectrum.eigenvalues[..., 0]))
        singular = np.asarray(spectrum.singular_values)
        time = dt * np.arange(1, radius.shape[-1] + 1)
        top = axes[0, column]
        top.plot(time, np.median(singular[..., 0], axis=0), label="largest singular value")
        top.plot(time, np.median(radius, axis=0), label="spectral radius")
        top.plot(time, np.median(singular[..., -1], axis=0), label="smallest singular value")
        top.axhline(1.0, color="k", lw=0.6)
        top.set(yscale="log", xlabel="time [s]", title=f"{mode}: one-step Jacobian")
        top.legend(fontsize=7)
        bottom = axes[1, column]
        for line in np.asarray(spectrum.log_norm_product):
            bottom.plot(time, line, lw=0.8, alpha=0.7)
        bottom.set(xlabel="time [s]", ylabel="log ‖J_t ⋯ J_1‖", title=f"{mode}: product of Jacobians")
    fig.suptitle(title)
    return _save(fig, path)


def plot_gradient_variance(stats: dict[tuple[str, int], GradientStats], path: Path, title: str = "") -> Path:
    """Gradient norm (median, min-max band), mean per-parameter variance and signal-to-noise
    ratio against horizon, one line per estimator, all log-log."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name in dict.fromkeys(name for name, _ in stats):
        horizons = sorted(h for n, h in stats if n == name)
        summaries = [stats[name, h].summary() for h in horizons]
        norms = [np.asarray(stats[name, h].norms) for h in horizons]
        median = [s["norm_median"] for s in summaries]
        (line,) = axes[0].plot(horizons, median, "o-", label=name)
        axes[0].fill_between(horizons, [np.nanmin(n) for n in norms], [np.nanmax(n) for n in norms],
                             color=line.get_color(), alpha=0.15)
        axes[1].plot(horizons, [s["variance"] for s in summaries], "o-", label=name)
        axes[2].plot(horizons, [s["snr"] for s in summaries], "o-", label=name)
    for ax, label in zip(axes, ("gradient norm", "per-parameter variance", "signal-to-noise ratio")):
        ax.set(xscale="log", yscale="log", xlabel="horizon [steps]", ylabel=label)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_landscape(landscape: LossLandscape, horizons: Sequence[int], path: Path, title: str = "") -> Path:
    """Top: 1-D slices per horizon; bottom (if computed): 2-D slices as filled contours."""
    has_plane = landscape.plane.shape[-1] > 1
    rows = 2 if has_plane else 1
    fig, axes = plt.subplots(rows, len(horizons), figsize=(3.6 * len(horizons), 3.2 * rows), squeeze=False)
    offsets, plane_offsets = np.asarray(landscape.offsets), np.asarray(landscape.plane_offsets)
    for column, horizon in enumerate(horizons):
        axes[0, column].plot(offsets, np.asarray(landscape.line[column]), lw=0.9)
        axes[0, column].set(xlabel="offset along $d_1$", ylabel="loss", title=f"horizon {horizon}")
        if has_plane:
            ax = axes[1, column]
            filled = ax.contourf(plane_offsets, plane_offsets, np.asarray(landscape.plane[column]).T, levels=20)
            fig.colorbar(filled, ax=ax)
            ax.set(xlabel="$d_1$", ylabel="$d_2$")
    fig.suptitle(title)
    return _save(fig, path)
