"""Figures build without a display and carry the expected content."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.figure import Figure

from medlens.evaluate import auc_score, confusion_matrix
from medlens.evaluate.plots import plot_confusion_matrix, plot_pr, plot_reliability, plot_roc, roc_band


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_roc_plot_has_delong_label_and_renders(make_binary):
    y, s = make_binary(120, seed=1)
    fig = plot_roc(y, s, n_boot=200, operating_threshold=0.5)
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(f"{auc_score(y, s):.3f}" in t and "DeLong" in t for t in labels)
    assert _png(fig).startswith(b"\x89PNG")


def test_roc_legend_shows_the_interval_the_study_reports(make_binary):
    """The report passes its patient-level AUC interval, so the figure and the tables print one CI."""
    from medlens.evaluate import Estimate

    y, s = make_binary(120, seed=1)
    fig = plot_roc(y, s, n_boot=100, label="test", auc_ci=Estimate(0.912, 0.801, 0.977))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "test: AUC 0.912 (95% CI 0.801-0.977)" in labels and not any("DeLong" in t for t in labels)


def test_roc_band_brackets_the_curve(make_binary):
    y, s = make_binary(300, seed=2)
    grid, low, high = roc_band(y, s, n_boot=300)
    assert np.all(low <= high) and np.all((0 <= low) & (high <= 1))
    assert np.mean(high - low) > 0.01
    # the area under the band's bounds brackets the AUC
    assert np.trapezoid(low, grid) < auc_score(y, s) < np.trapezoid(high, grid)


def test_pr_reliability_and_confusion_plots(make_binary):
    y, s = make_binary(100, seed=3)
    p = 1 / (1 + np.exp(-s))
    for fig in (plot_pr(y, s), plot_reliability(y, p), plot_confusion_matrix(y, (s >= 0.5).astype(int))):
        assert isinstance(fig, Figure)
        assert _png(fig).startswith(b"\x89PNG")
    cm = confusion_matrix(y, (s >= 0.5).astype(int))
    texts = [t.get_text() for t in plot_confusion_matrix(y, (s >= 0.5).astype(int)).axes[0].texts]
    assert texts == [str(c) for c in cm.ravel()]


@pytest.mark.parametrize("names", [None, ["normal", "pneumonia", "covid"]])
def test_multiclass_confusion_plot(names):
    rng = np.random.default_rng(4)
    fig = plot_confusion_matrix(rng.integers(0, 3, 40), rng.integers(0, 3, 40), class_names=names)
    assert len(fig.axes[0].texts) == 9
