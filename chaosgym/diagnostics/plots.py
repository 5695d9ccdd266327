"""Figures of `chaosgym.diagnostics.measures` results (matplotlib, Agg backend: files only, no display).

A figure is drawn in memory and written whole (`chaosgym.files.write_atomic`): a full disk keeps the
previous file, and a symbolic link in its place is refused.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from chaosgym.diagnostics.measures import (GradientStats, JacobianSpectrum, LossLandscape, LyapunovResult,  # noqa: E402
                                           mean_and_stderr)
from chaosgym.files import write_atomic  # noqa: E402

DPI = 90  # small files: the figures go into the docs


def exponent_text(mean: float, stderr: float) -> str:
    """A Lyapunov exponent as the console and every legend show it: mean ± standard error per second."""
    return f"{mean:.3g} ± {stderr:.2g} /s"


def _figure_legend(fig, axes, columns: int = 6) -> None:
    """One legend for the whole figure, below the panels, from the labelled artists of `axes`."""
    handles = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(columns, len(handles)), fontsize=8,
               frameon=False)
    rows = -(-len(handles) // columns)
    fig.tight_layout(rect=(0, 0.06 * rows, 1, 1))


def _save(fig, path: Path) -> Path:
    image = io.BytesIO()
    try:
        fig.savefig(image, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    write_atomic(path, image.getvalue())
    return path


def plot_lyapunov(results: dict[str, LyapunovResult], dt: float, path: Path, title: str = "") -> Path:
    """Running estimate of the maximal exponent against time, one line per start, per mode
    (log time axis: a converged estimate is flat over the last decade)."""
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.2), squeeze=False)
    for ax, (mode, result) in zip(axes[0], results.items()):
        running = np.asarray(result.running[..., 0])
        time = dt * np.arange(1, running.shape[-1] + 1)
        for start, line in enumerate(running):
            ax.plot(time, line, lw=0.8, alpha=0.7, color=plt.cm.viridis(start / max(1, len(running) - 1)),
                    label=f"start {start}")
        mean, stderr = mean_and_stderr(result.exponents[:, 0])
        ax.axhline(mean, color="C3", lw=1.2, ls="--", label="mean final estimate")
        ax.axhline(0.0, color="k", lw=0.6, label="$\\lambda_1$ = 0 (chaos above)")
        steps = int(np.min(result.steps))
        blown = f"\n(physics blew up: as few as {steps} steps)" if steps < running.shape[-1] else ""
        ax.set(xscale="log", xlabel="time [s]", ylabel="running estimate of $\\lambda_1$ [1/s]",
               title=f"{mode}: $\\lambda_1$ = {exponent_text(mean, stderr)}{blown}")
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, axes, columns=5)
    return _save(fig, path)


def plot_jacobian(results: dict[str, JacobianSpectrum], dt: float, path: Path, title: str = "") -> Path:
    """Per mode: spectral radius and extreme singular values of the one-step Jacobian along the
    trajectory (log scale, median over starts), and log of the norm of their product."""
    fig, axes = plt.subplots(2, len(results), figsize=(5 * len(results), 6.8), squeeze=False)
    for column, (mode, spectrum) in enumerate(results.items()):
        radius = np.abs(np.asarray(spectrum.eigenvalues[..., 0]))
        singular = np.asarray(spectrum.singular_values)
        time = dt * np.arange(1, radius.shape[-1] + 1)
        top = axes[0, column]
        top.plot(time, np.median(singular[..., 0], axis=0), label="largest singular value (median over starts)")
        top.plot(time, np.median(radius, axis=0), label="spectral radius (median)")
        top.plot(time, np.median(singular[..., -1], axis=0), label="smallest singular value (median)")
        top.axhline(1.0, color="k", lw=0.6)
        top.set(yscale="log", xlabel="time [s]", title=f"{mode}: one-step Jacobian")
        bottom = axes[1, column]
        for line in np.asarray(spectrum.log_norm_product):
            bottom.plot(time, line, lw=0.8, alpha=0.7, color="C4")
        bottom.lines[0].set_label("log ‖J_t ⋯ J_1‖, one line per start")
        bottom.set(xlabel="time [s]", ylabel="log ‖J_t ⋯ J_1‖", title=f"{mode}: product of Jacobians")
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, axes, columns=2)
    return _save(fig, path)


MARKERS = {"full": "o", "es": "s", "truncated": "^", "modified": "v", "stopped": "D", "combined": "P"}
LINESTYLES = {"full": "-", "es": "--", "truncated": ":", "modified": "-.", "stopped": ":", "combined": "-."}


def _symlog_threshold(values) -> float:
    """Linear range of a symlog axis: the decade of the smallest nonzero magnitude shown."""
    magnitudes = np.abs(np.asarray([v for v in values if np.isfinite(v) and v != 0]))
    if magnitudes.size == 0:
        return 1e-3
    return float(10 ** np.floor(np.log10(np.clip(magnitudes.min(), 1e-8, 1e-1))))


def plot_gradient_variance(stats: dict[tuple[str, int, float], GradientStats],
                           exponents: dict[float, tuple[float, float, int]], path: Path, title: str = "") -> Path:
    """Against horizon, per estimator (marker, line style) and policy weight scale (colour, labelled
    with the closed loop's maximal Lyapunov exponent): gradient norm (median, min-max band) and
    mean per-parameter variance on log axes, and the signal-to-noise ratio with ± 2 standard
    errors on a symlog axis, so that values at or below zero stay visible."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    scales = sorted(dict.fromkeys(scale for _, _, scale in stats))
    shown = []
    series = list(dict.fromkeys((name, scale) for name, _, scale in stats))
    for index, (name, scale) in enumerate(series):
        horizons = sorted(h for n, h, s in stats if (n, s) == (name, scale))
        summaries = [stats[name, h, scale].summary() for h in horizons]
        if len(scales) > 1:
            colour = plt.cm.plasma(0.8 * scales.index(scale) / (len(scales) - 1))
        else:
            colour = f"C{list(MARKERS).index(name)}"
        mean, stderr, _ = exponents[scale]
        label = f"{name}, weights ×{scale:g} ($\\lambda_1$ = {exponent_text(mean, stderr)})"
        style = dict(color=colour, marker=MARKERS[name], ls=LINESTYLES[name], label=label)
        finite = [stats[name, h, scale] for h in horizons]
        norms = [s.norms[s.finite] for s in finite]
        axes[0].plot(horizons, [s["norm_median"] for s in summaries], **style)
        axes[0].fill_between(horizons, [n.min() if n.size else np.nan for n in norms],
                             [n.max() if n.size else np.nan for n in norms], color=colour, alpha=0.12)
        axes[1].plot(horizons, [s["variance"] for s in summaries], **style)
        snr = np.array([s["snr"] for s in summaries])
        snr_stderr = np.array([s["snr_stderr"] for s in summaries])
        # side by side, so that overlapping error bars stay apart
        shift = 1.0 + 0.03 * (index - (len(series) - 1) / 2)
        axes[2].errorbar(np.asarray(horizons) * shift, snr, yerr=2 * snr_stderr, capsize=3, **style)
        shown += [*snr, *snr_stderr]
    axes[0].set(xscale="log", yscale="log", xlabel="horizon [steps]", ylabel="gradient norm",
                title="norm of a one-state gradient")
    axes[1].set(xscale="log", yscale="log", xlabel="horizon [steps]", ylabel="variance",
                title="mean per-parameter variance")
    axes[2].axhline(0.0, color="k", lw=0.6)
    axes[2].set_yscale("symlog", linthresh=_symlog_threshold(shown))
    axes[2].set(xscale="log", xlabel="horizon [steps]", ylabel="mean$_{i \\neq j}$ g$_i$·g$_j$ / tr Cov g (< 0: noise)",
                title="signal-to-noise ratio (± 2 s.e.)")
    fig.suptitle(title, fontsize=10)
    _figure_legend(fig, axes, columns=3)
    return _save(fig, path)


def plot_landscape(landscape: LossLandscape, horizons: Sequence[int], path: Path, title: str = "") -> Path:
    """Top: 1-D slices per horizon; bottom (if computed): 2-D slices as filled contours."""
    has_plane = landscape.plane.shape[-1] > 1
    rows = 2 if has_plane else 1
    fig, axes = plt.subplots(rows, len(horizons), figsize=(3.6 * len(horizons), 3.2 * rows), squeeze=False)
    offsets, plane_offsets = np.asarray(landscape.offsets), np.asarray(landscape.plane_offsets)
    for column, horizon in enumerate(horizons):
        axes[0, column].plot(offsets, np.asarray(landscape.line[column]), lw=0.9)
        axes[0, column].set(xlabel="offset along $d_1$", ylabel="loss (−Σ rewards)", title=f"horizon {horizon}")
        if has_plane:
            ax = axes[1, column]
            filled = ax.contourf(plane_offsets, plane_offsets, np.asarray(landscape.plane[column]).T, levels=20)
            fig.colorbar(filled, ax=ax)
            ax.set(xlabel="$d_1$", ylabel="$d_2$")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
