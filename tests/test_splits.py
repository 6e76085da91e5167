"""Person-level splits: no subject and no duplicate group on two sides, for any cohort and seed."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgsy_lib.errors import ConfigError, DataError
from wgsy_lib.splits import (SmallClassError, allocate, class_group_counts, kfold_by_subject, split_by_subject,
                             splits_from_column, subject_groups)

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


@st.composite
def cohorts(draw):
    """A random cohort: rows of (subject, label) plus duplicate groups that may join subjects."""
    class_count = draw(st.integers(1, 4))
    subjects = []
    labels = []
    for class_index in range(class_count):
        for subject_index in range(draw(st.integers(3, 12))):
            photos = draw(st.integers(1, 4))
            subjects += [f"c{class_index}s{subject_index}"] * photos
            labels += [f"class{class_index}"] * photos
    rows = len(subjects)
    # Each row starts in its own duplicate group; some rows then copy another row's group, which can
    # join two subjects (and even two classes) into one group.
    duplicates = list(range(rows))
    for _ in range(draw(st.integers(0, max(0, rows // 6)))):
        source = draw(st.integers(0, rows - 1))
        target = draw(st.integers(0, rows - 1))
        duplicates[target] = duplicates[source]
    seed = draw(st.integers(0, 2**32 - 1))
    return subjects, labels, duplicates, seed


def _assert_groups_whole(subjects, duplicates, splits):
    by_subject = {}
    by_duplicate = {}
    for subject, duplicate, split in zip(subjects, duplicates, splits):
        by_subject.setdefault(subject, set()).add(split)
        by_duplicate.setdefault(duplicate, set()).add(split)
    crossing_subjects = {subject: found for subject, found in by_subject.items() if len(found) > 1}
    crossing_duplicates = {group: found for group, found in by_duplicate.items() if len(found) > 1}
    assert not crossing_subjects, f"subjects in two splits: {crossing_subjects}"
    assert not crossing_duplicates, f"duplicate groups in two splits: {crossing_duplicates}"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cohorts())
def test_split_never_divides_subject_or_duplicates(cohort):
    subjects, labels, duplicates, seed = cohort
    groups = subject_groups(subjects, duplicates)
    try:
        splits = split_by_subject(labels, groups, fractions=FRACTIONS, seed=seed)
    except SmallClassError as error:
        # Duplicates can merge people until a class has fewer than three groups; that must be reported.
        assert min(class_group_counts(labels, groups).values()) < 3, str(error)
        return
    _assert_groups_whole(subjects, duplicates, splits)
    assert set(splits) == {"train", "val", "test"}, "every split must be non-empty when each class has 3+ groups"


@settings(max_examples=40, deadline=None)
@given(cohorts())
def test_split_is_deterministic_for_seed(cohort):
    subjects, labels, duplicates, seed = cohort
    groups = subject_groups(subjects, duplicates)
    try:
        first = split_by_subject(labels, groups, fractions=FRACTIONS, seed=seed)
    except SmallClassError:
        return
    assert split_by_subject(labels, groups, fractions=FRACTIONS, seed=seed) == first


@settings(max_examples=40, deadline=None)
@given(cohorts(), st.integers(2, 4), st.sampled_from([0.0, 0.2]))
def test_kfold_never_divides_subject_or_duplicates(cohort, folds, test_fraction):
    subjects, labels, duplicates, seed = cohort
    groups = subject_groups(subjects, duplicates)
    try:
        assignment = kfold_by_subject(labels, groups, folds=folds, seed=seed, test_fraction=test_fraction)
    except SmallClassError:
        return
    for fold in range(folds):
        splits = assignment.splits(fold)
        _assert_groups_whole(subjects, duplicates, splits)
        assert "val" in splits and "train" in splits
    assert assignment == kfold_by_subject(labels, groups, folds=folds, seed=seed, test_fraction=test_fraction)


def test_split_stratifies_each_class():
    subjects = [f"s{index}" for index in range(200)]
    labels = ["a"] * 100 + ["b"] * 100
    splits = split_by_subject(labels, subject_groups(subjects), fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    for label in ("a", "b"):
        counts = Counter(split for split, row_label in zip(splits, labels) if row_label == label)
        assert counts == {"train": 70, "val": 15, "test": 15}


def test_split_changes_with_seed():
    subjects = [f"s{index}" for index in range(60)]
    labels = ["a"] * 30 + ["b"] * 30
    groups = subject_groups(subjects)
    assert split_by_subject(labels, groups, fractions=FRACTIONS, seed=1) != split_by_subject(
        labels, groups, fractions=FRACTIONS, seed=2)


def test_kfold_balances_classes_across_folds():
    subjects = [f"s{index}" for index in range(100)]
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    assignment = kfold_by_subject(labels, subject_groups(subjects), folds=5, seed=0)
    for label, total in (("a", 50), ("b", 30), ("c", 20)):
        per_fold = Counter(fold for fold, row_label in zip(assignment.fold, labels) if row_label == label)
        assert sorted(per_fold.values()) == [total // 5] * 5


def test_small_class_error_names_class():
    subjects = ["p1", "p2", "c1", "c2", "c3", "c4"]
    labels = ["rare", "rare", "common", "common", "common", "common"]
    with pytest.raises(SmallClassError, match="'rare' has 2.*at least 3.*small_class: skip"):
        split_by_subject(labels, subject_groups(subjects), fractions=FRACTIONS, seed=0)


def test_fractions_must_add_to_one():
    with pytest.raises(ConfigError, match="add up to 1"):
        split_by_subject(["a"] * 3, [0, 1, 2], fractions={"train": 0.5, "val": 0.2, "test": 0.2}, seed=0)


def test_split_column_rejects_divided_subject():
    subjects = ["p1", "p1", "p2"]
    groups = subject_groups(subjects)
    with pytest.raises(DataError, match=r"rows 2 \(p1, train\) and 3 \(p1, test\).*different splits"):
        splits_from_column(["train", "test", "val"], groups, subjects)


def test_split_column_rejects_empty_value():
    with pytest.raises(DataError, match="row 3: split '' is not one of"):
        splits_from_column(["train", ""], [0, 1], ["a", "b"])


def test_duplicate_edge_joins_subjects():
    groups = subject_groups(["a", "a", "b", "c"], [0, 1, 1, 3])
    assert groups == [0, 0, 0, 3]


@pytest.mark.parametrize("count, fractions, expected", [
    (10, {"train": 0.7, "val": 0.15, "test": 0.15}, {"train": 7, "val": 2, "test": 1}),
    (3, {"train": 0.7, "val": 0.15, "test": 0.15}, {"train": 1, "val": 1, "test": 1}),
    (5, {"train": 0.8, "val": 0.2, "test": 0.0}, {"train": 4, "val": 1, "test": 0}),
])
def test_allocate_keeps_one_per_split(count, fractions, expected):
    assert allocate(count, fractions) == expected
