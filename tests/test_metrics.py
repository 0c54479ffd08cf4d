"""trainer.evaluation.metrics against scikit-learn and SciPy on random scores with ties, the bootstrap's seed and
its degenerate cases, and that reading metrics (metrics, files, compare) loads no plotting or deep-learning library.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from cli_runs import REPO
from scipy import stats
from sklearn import metrics as skm

from trainer.evaluation import metrics


def _random_sets(seed: int, count: int = 40):
    """(labels, scores) of 1 to 80 patches; scores rounded to 1 or 2 decimals so that many tie, and now and then
    a set of one class."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(1, 80))
        labels = (rng.uniform(size=n) < rng.uniform(0.1, 0.9)).astype(int)
        scores = np.round(np.clip(0.3 * labels + rng.uniform(size=n) * 0.7, 0, 1), int(rng.integers(1, 3)))
        yield labels, scores


@pytest.mark.parametrize("seed", range(5))
def test_curves_auc_and_average_precision_equal_scikit_learns(seed):
    for labels, scores in _random_sets(seed):
        with warnings.catch_warnings():  # scikit-learn warns on sets of one class; the values are still compared
            warnings.simplefilter("ignore")
            expected_roc = skm.roc_curve(labels, scores)
            expected_roc_all = skm.roc_curve(labels, scores, drop_intermediate=False)
            expected_pr = skm.precision_recall_curve(labels, scores)
            expected_ap = skm.average_precision_score(labels, scores)
        for got, want in zip(metrics.roc_curve(labels, scores), expected_roc):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(metrics.roc_curve(labels, scores, drop_intermediate=False), expected_roc_all):
            np.testing.assert_array_equal(got, want)
        for got, want in zip(metrics.precision_recall_curve(labels, scores), expected_pr):
            np.testing.assert_array_equal(got, want)
        assert metrics.average_precision(labels, scores) == pytest.approx(expected_ap, abs=1e-15)
        if labels.min() != labels.max():
            assert metrics.roc_auc(labels, scores) == pytest.approx(skm.roc_auc_score(labels, scores), abs=1e-14)


@pytest.mark.parametrize("seed", range(3))
def test_counts_report_and_losses_equal_scikit_learns(seed):
    for labels, scores in _random_sets(100 + seed):
        predicted = (scores >= 0.5).astype(int)
        np.testing.assert_array_equal(
            metrics.confusion_matrix(labels, predicted), skm.confusion_matrix(labels, predicted, labels=[0, 1])
        )
        expected = skm.classification_report(
            labels, predicted, labels=[0, 1], target_names=metrics.CLASS_NAMES, output_dict=True, zero_division=0
        )
        assert metrics.classification_report(labels, predicted) == expected
        text = skm.classification_report(
            labels, predicted, labels=[0, 1], target_names=metrics.CLASS_NAMES, digits=4, zero_division=0
        )
        # scikit-learn prints the supports as floats (4.0) when no prediction is right; here they stay counts.
        if (labels == predicted).any():
            assert metrics.classification_report_text(labels, scores) == text
        clipped = np.clip(scores, 1e-7, 1 - 1e-7)
        assert metrics.log_loss(labels, clipped) == pytest.approx(
            skm.log_loss(labels, clipped, labels=[0, 1]), rel=1e-12
        )
        m = metrics.compute_metrics(labels, scores)
        assert m["accuracy"] == skm.accuracy_score(labels, predicted)
        assert m["brier"] == pytest.approx(skm.brier_score_loss(labels, scores), rel=1e-12)


def test_midranks_and_delong_p_value_equal_scipys():
    rng = np.random.default_rng(7)
    x = np.round(rng.uniform(size=500), 2)
    np.testing.assert_array_equal(metrics._midranks(x), stats.rankdata(x, method="average"))
    labels = rng.integers(0, 2, 300)
    test = metrics.delong_paired(labels, labels + rng.normal(0, 1.0, 300), labels + rng.normal(0, 1.5, 300))
    lo, hi = test["difference_ci95"]
    sd = (hi - lo) / (2 * 1.959964)
    assert test["p_value"] == pytest.approx(2 * stats.norm.sf(abs(test["difference"]) / sd), rel=1e-9)


def test_bootstrap_is_a_function_of_its_seed_and_resamples_as_described():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 200)
    scores = np.round(labels * 0.3 + rng.uniform(size=200), 2)
    a = metrics.bootstrap_auc(labels, scores, seed=11, n=200)
    assert a == metrics.bootstrap_auc(labels, scores, seed=11, n=200)
    assert a != metrics.bootstrap_auc(labels, scores, seed=12, n=200)
    assert a[0] < metrics.roc_auc(labels, scores) < a[1]
    # The same draws, each resample scored by scikit-learn: the same percentiles.
    draws = np.random.default_rng(11)
    aucs = []
    for _ in range(200):
        index = draws.integers(0, labels.size, labels.size)
        aucs.append(skm.roc_auc_score(labels[index], scores[index]))
    assert a == pytest.approx([np.percentile(aucs, 2.5), np.percentile(aucs, 97.5)], abs=1e-12)


def test_bootstrap_and_auc_of_degenerate_sets_are_an_error_or_a_stated_value():
    with pytest.raises(ValueError, match=r"ROC AUC needs both classes; all 3 labels are 1 \(tumour\)"):
        metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="bootstrap interval of the ROC AUC needs both classes; all 2 labels are 0"):
        metrics.bootstrap_auc([0, 0], [0.2, 0.5], seed=0)
    # Two patches, one of each class, ranked right: every resample with both classes has AUC 1; the others
    # (half of them) are skipped.
    assert metrics.bootstrap_auc([0, 1], [0.2, 0.8], seed=0) == [1.0, 1.0]
    assert metrics.bootstrap_auc([0, 1], [0.5, 0.5], seed=0) == [0.5, 0.5]  # a tie counts half
    with pytest.raises(ValueError, match="n=0 must be >= 1"):
        metrics.bootstrap_auc([0, 1], [0.2, 0.8], seed=0, n=0)
    with pytest.raises(ValueError, match="level=1.5 inside"):
        metrics.bootstrap_auc([0, 1], [0.2, 0.8], seed=0, level=1.5)
    with pytest.raises(ValueError, match=r"labels \(3,\) and scores \(2,\) must be equal"):
        metrics.compute_metrics([0, 1, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match=r"labels must be 0 or 1; got \[-1\]"):
        metrics.compute_metrics([0, 1, -1], [0.2, 0.8, 0.5])
    with pytest.raises(ValueError, match="1 scores are not finite"):
        metrics.roc_auc([0, 1], [0.2, float("nan")])
    # One class: the AUCs and the chosen thresholds are undefined; the rest is reported.
    m = metrics.compute_metrics([1, 1, 1], [0.2, 0.6, 0.9])
    assert np.isnan(m["roc_auc"]) and np.isnan(m["roc_auc_ci95"]).all() and np.isnan(m["average_precision"])
    assert list(m["at_threshold"]) == ["0.5"] and m["accuracy"] == pytest.approx(2 / 3)


_IMPORTS = """
import sys
import {modules}
heavy = sorted(m for m in ("matplotlib", "keras", "tensorflow", "sklearn", "scipy") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.parametrize(
    "modules",
    [
        "trainer.evaluation.metrics",
        "trainer.evaluation, trainer.evaluation.files",
        "trainer.evaluation.compare, trainer.run_folder",
    ],
)
def test_reading_metrics_loads_no_plotting_or_deep_learning_library(modules):
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTS.format(modules=modules)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "", f"importing {modules} loaded {proc.stdout.strip()}"
