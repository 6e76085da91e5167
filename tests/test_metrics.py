"""Metrics keep class rows fixed, count Unknown as wrong, flag undefined values and resample people."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning

from wgsy_lib.errors import DataError
from wgsy_lib.labels import UNKNOWN
from wgsy_lib.metrics import bootstrap_intervals, chance_levels, classification_metrics

CLASSES = ["Williams syndrome", "Down syndrome", "Goldenhar syndrome", "healthy control"]
WS, DS, GS, HC = CLASSES


def test_perfect_predictions():
    y = [WS, DS, GS, HC] * 3
    metrics = classification_metrics(y, y, CLASSES, n_bootstrap=0)
    assert metrics["accuracy"] == 1.0
    assert metrics["balanced_accuracy"] == 1.0
    assert metrics["macro"]["f1"] == 1.0
    assert metrics["ill_defined"] == []


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_unknown_counts_as_wrong_and_has_column():
    y_true = [WS, WS, DS, HC]
    y_pred = [WS, UNKNOWN, DS, "not a class"]
    metrics = classification_metrics(y_true, y_pred, CLASSES, n_bootstrap=0)
    assert metrics["accuracy"] == 0.5
    assert metrics["unknown_rate"] == 0.5
    assert metrics["n_unknown"] == 2
    matrix = metrics["confusion_matrix"]
    assert matrix["columns"][-1] == UNKNOWN
    assert matrix["counts"][0] == [1, 0, 0, 0, 1]
    assert matrix["counts"][3] == [0, 0, 0, 0, 1]
    assert metrics["per_class"][WS]["recall"] == 0.5


def test_missing_class_keeps_row_and_warns():
    y_true = [WS, WS, DS, DS, HC]
    y_pred = [WS, DS, DS, DS, HC]
    with pytest.warns(UndefinedMetricWarning, match="Goldenhar syndrome"):
        metrics = classification_metrics(y_true, y_pred, CLASSES, n_bootstrap=0, zero_division=0.0)
    assert metrics["confusion_matrix"]["rows"] == CLASSES
    assert metrics["confusion_matrix"]["counts"][2] == [0, 0, 0, 0, 0]
    assert metrics["per_class"][GS]["support"] == 0
    assert metrics["per_class"][GS]["recall"] == 0.0
    assert any("Goldenhar" in entry for entry in metrics["ill_defined"])
    # Macro averages run over the classes present, so the absent class does not drag them down.
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert metrics["macro"]["recall"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)


def test_zero_division_value_is_used():
    y_true = [WS, DS]
    y_pred = [WS, WS]
    with pytest.warns(UndefinedMetricWarning):
        metrics = classification_metrics(y_true, y_pred, CLASSES, n_bootstrap=0, zero_division=1.0)
    assert metrics["per_class"][GS]["recall"] == 1.0
    assert metrics["per_class"][DS]["precision"] == 1.0
    assert metrics["zero_division"] == 1.0


def test_all_unknown_predictions():
    y_true = [WS, DS, HC, GS]
    with pytest.warns(UndefinedMetricWarning, match="never predicted"):
        metrics = classification_metrics(y_true, [UNKNOWN] * 4, CLASSES, n_bootstrap=0)
    assert metrics["accuracy"] == 0.0
    assert metrics["balanced_accuracy"] == 0.0
    assert metrics["unknown_rate"] == 1.0
    assert all(row[-1] == 1 for row in metrics["confusion_matrix"]["counts"])
    assert metrics["per_class"][WS]["specificity"] == 1.0


def test_single_class_test_set():
    y_true = [DS] * 4
    y_pred = [DS, DS, WS, UNKNOWN]
    probabilities = np.tile([0.1, 0.7, 0.1, 0.1], (4, 1))
    with pytest.warns(UndefinedMetricWarning, match="specificity of 'Down syndrome'"):
        metrics = classification_metrics(y_true, y_pred, CLASSES, probabilities=probabilities,
                                         subject_ids=["a", "b", "c", "d"], n_bootstrap=50)
    assert metrics["accuracy"] == 0.5
    assert metrics["balanced_accuracy"] == 0.5
    assert metrics["auc"][DS] is None
    assert metrics["auc_macro"] is None
    assert metrics["chance"]["accuracy_majority"] == 1.0
    assert "auc_macro" not in metrics["intervals"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_specificity_per_class():
    y_true = [WS, WS, DS, DS]
    y_pred = [WS, DS, DS, DS]
    metrics = classification_metrics(y_true, y_pred, CLASSES, n_bootstrap=0)
    assert metrics["per_class"][DS]["specificity"] == 0.5
    assert metrics["per_class"][WS]["specificity"] == 1.0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_weighted_average_uses_support():
    y_true = [WS, WS, WS, DS]
    y_pred = [WS, WS, WS, WS]
    metrics = classification_metrics(y_true, y_pred, CLASSES, n_bootstrap=0)
    assert metrics["weighted"]["recall"] == pytest.approx(0.75)
    assert metrics["macro"]["recall"] == pytest.approx(0.5)


def test_auc_and_roc_curves():
    y_true = [WS, WS, DS, DS, HC, HC]
    probabilities = np.array([
        [0.9, 0.05, 0.0, 0.05], [0.6, 0.2, 0.0, 0.2], [0.1, 0.8, 0.0, 0.1],
        [0.3, 0.6, 0.0, 0.1], [0.1, 0.1, 0.0, 0.8], [0.2, 0.1, 0.0, 0.7],
    ])
    y_pred = [CLASSES[index] for index in probabilities.argmax(axis=1)]
    with pytest.warns(UndefinedMetricWarning):
        metrics = classification_metrics(y_true, y_pred, CLASSES, probabilities=probabilities, n_bootstrap=0)
    assert metrics["auc"][WS] == 1.0
    assert metrics["auc"][GS] is None
    assert metrics["auc_macro"] == 1.0
    assert set(metrics["roc"]) == {WS, DS, HC}
    assert metrics["chance"]["auc"] == 0.5


def test_chance_levels():
    chance = chance_levels([WS, WS, WS, DS], CLASSES)
    assert chance["accuracy_uniform"] == 0.25
    assert chance["accuracy_majority"] == 0.75
    assert chance["balanced_accuracy"] == 0.25
    assert chance["per_class"][WS]["precision"] == 0.75
    assert chance["per_class"][WS]["f1"] == pytest.approx(2 * 0.75 * 0.25 / (0.75 + 0.25))
    assert chance["per_class"][GS]["f1"] == 0.0
    assert chance["f1_macro"] == pytest.approx((0.375 + 2 * 0.25 * 0.25 / 0.5) / 2)


def test_bootstrap_is_seeded_and_by_subject():
    y_true = [WS, WS, DS, DS, HC, HC, WS, DS]
    y_pred = [WS, DS, DS, DS, HC, WS, WS, DS]
    subjects = ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s5"]
    first = bootstrap_intervals(y_true, y_pred, CLASSES, subjects, n_bootstrap=200, seed=3)
    second = bootstrap_intervals(y_true, y_pred, CLASSES, subjects, n_bootstrap=200, seed=3)
    assert first == second
    assert first["accuracy"]["low"] <= 0.75 <= first["accuracy"]["high"]


def test_bootstrap_resamples_whole_subjects():
    # One subject with all photos right, one with all wrong: each resample's accuracy is 0, 0.5 or 1,
    # never a mixture a photo-level bootstrap would give.
    y_true = [WS] * 6
    y_pred = [WS, WS, WS, DS, DS, DS]
    subjects = ["a", "a", "a", "b", "b", "b"]
    intervals = bootstrap_intervals(y_true, y_pred, CLASSES, subjects, n_bootstrap=100, seed=0)
    assert intervals["accuracy"]["low"] in (0.0, 0.5)
    assert intervals["accuracy"]["high"] in (0.5, 1.0)


def test_true_label_outside_classes_is_rejected():
    with pytest.raises(DataError, match="not among the classes"):
        classification_metrics(["Noonan syndrome"], [WS], CLASSES, n_bootstrap=0)


def test_probability_shape_is_checked():
    with pytest.raises(DataError, match="one column per class"):
        classification_metrics([WS], [WS], CLASSES, probabilities=np.ones((1, 2)), n_bootstrap=0)


def test_rank_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    from wgsy_lib.metrics import _rank_auc

    rng = np.random.default_rng(1)
    positive = rng.random(40) < 0.3
    scores = np.round(rng.random(40), 1)  # rounded, so ties occur
    assert _rank_auc(positive, scores) == pytest.approx(roc_auc_score(positive, scores))
