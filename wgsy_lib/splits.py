"""Person-level splits: train / validation / test, a fixed split column, or grouped k-fold.

The unit of every split is a *group*: a connected component of the graph whose edges join photos of
the same subject and photos that are duplicates of each other (exact or near copies, see
`duplicates.py`). A group is never divided, so no person and no copy of a photo appears on two
sides. Groups are stratified by class (the most frequent label among the group's photos), and all
shuffling uses one seeded `numpy.random.Generator`, so the same rows and seed give the same split.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .duplicates import UnionFind
from .errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


class SmallClassError(DataError):
    """A class has too few groups (people) to appear in every split or fold."""

    def __init__(self, sizes: Mapping[str, int], needed: int, what: str):
        self.sizes = dict(sizes)
        self.needed = needed
        listed = ", ".join(f"{label!r} has {count}" for label, count in sorted(sizes.items()))
        super().__init__(
            f"too few people to place every class in every {what}: {listed} group(s) of people, and each class "
            f"needs at least {needed} (one per {what}). A group is one person, or several people joined because "
            "their photos are duplicates of each other (see duplicates.csv; lower near_duplicate_threshold if "
            "they are different photos). Add subjects, use fewer splits or folds, or set small_class: skip "
            "to leave such classes out."
        )


def subject_groups(subject_ids: Sequence[str], duplicate_groups: Sequence[int] | None = None) -> list[int]:
    """Return each row's group: the smallest row position joined to it by subject or duplicate edges."""
    union = UnionFind(len(subject_ids))
    first_row: dict[str, int] = {}
    for position, subject in enumerate(subject_ids):
        if subject in first_row:
            union.union(first_row[subject], position)
        else:
            first_row[subject] = position
    if duplicate_groups is not None:
        if len(duplicate_groups) != len(subject_ids):
            raise ValueError("duplicate_groups must have one entry per row")
        first_of_duplicate: dict[int, int] = {}
        for position, duplicate in enumerate(duplicate_groups):
            if duplicate in first_of_duplicate:
                union.union(first_of_duplicate[duplicate], position)
            else:
                first_of_duplicate[duplicate] = position
    return union.components()


def group_classes(labels: Sequence[str], groups: Sequence[int]) -> dict[int, str]:
    """Return each group's class: its most frequent label, ties going to the alphabetically first."""
    counts: dict[int, Counter] = {}
    for label, group in zip(labels, groups):
        counts.setdefault(group, Counter())[label] += 1
    return {group: min(counter.items(), key=lambda item: (-item[1], item[0]))[0] for group, counter in counts.items()}


def class_group_counts(labels: Sequence[str], groups: Sequence[int]) -> dict[str, int]:
    """Return the number of groups (people, with their duplicates) of each class."""
    return dict(Counter(group_classes(labels, groups).values()))


def allocate(count: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Divide `count` items among splits in proportion to `fractions`, at least one per split whose
    fraction is above zero (largest-remainder rounding, ties to the earlier split)."""
    names = list(fractions)
    active = [name for name in names if fractions[name] > 0]
    total = sum(fractions[name] for name in active)
    if count < len(active):
        raise ValueError(f"cannot give {count} items to {len(active)} splits")
    raw = {name: count * fractions[name] / total if name in active else 0.0 for name in names}
    result = {name: (max(1, math.floor(raw[name])) if name in active else 0) for name in names}
    while sum(result.values()) > count:
        # Take from the split furthest above its share that can spare one.
        candidates = [name for name in active if result[name] > 1]
        name = max(candidates, key=lambda item: (result[item] - raw[item], -names.index(item)))
        result[name] -= 1
    while sum(result.values()) < count:
        name = max(active, key=lambda item: (raw[item] - result[item], -names.index(item)))
        result[name] += 1
    return result


def split_by_subject(labels: Sequence[str], groups: Sequence[int], *, fractions: Mapping[str, float],
                     seed: int) -> list[str]:
    """Assign each row to train, val or test so that groups stay whole and every class is stratified.

    `fractions` maps split names to their share of each class's groups; a split with fraction 0 gets
    no rows. Raise SmallClassError when a class has fewer groups than splits with a share.
    """
    fractions = _check_fractions(fractions)
    needed = sum(1 for value in fractions.values() if value > 0)
    classes = group_classes(labels, groups)
    by_class = _groups_by_class(classes)
    small = {label: len(members) for label, members in by_class.items() if len(members) < needed}
    if small:
        raise SmallClassError(small, needed, "split")

    rng = np.random.default_rng(seed)
    split_of_group: dict[int, str] = {}
    for label in sorted(by_class):
        members = [by_class[label][index] for index in rng.permutation(len(by_class[label]))]
        counts = allocate(len(members), fractions)
        start = 0
        # Test and validation take their groups first, so train absorbs the rounding.
        for split in ("test", "val", "train"):
            for group in members[start:start + counts.get(split, 0)]:
                split_of_group[group] = split
            start += counts.get(split, 0)
    return [split_of_group[group] for group in groups]


def splits_from_column(values: Sequence[str], groups: Sequence[int], subject_ids: Sequence[str], *,
                       where: str = "manifest", row_numbers: Sequence[int] | None = None) -> list[str]:
    """Check a user-given split column: every row set, and no group (person or duplicate set) divided.

    Messages name rows by `row_numbers` (the manifest's CSV line numbers), else by position + 2.
    """
    lines = list(row_numbers) if row_numbers is not None else [position + 2 for position in range(len(values))]
    result = []
    for position, value in enumerate(values):
        if value not in SPLITS:
            raise DataError(f"{where}, row {lines[position]}: split {value!r} is not one of {', '.join(SPLITS)}; with "
                            "split_method 'column' every row needs a split, or use split_method 'subject'")
        result.append(value)
    seen: dict[int, tuple[str, int]] = {}
    for position, (split, group) in enumerate(zip(result, groups)):
        if group in seen and seen[group][0] != split:
            other_split, other_position = seen[group]
            raise DataError(
                f"{where}: rows {lines[other_position]} ({subject_ids[other_position]}, {other_split}) and {lines[position]} "
                f"({subject_ids[position]}, {split}) are the same person or duplicate photos but sit in different splits; "
                "this leaks photos across splits. Put them in one split, or use split_method 'subject'."
            )
        seen.setdefault(group, (split, position))
    return result


@dataclass(frozen=True)
class FoldAssignment:
    """Grouped, stratified k-fold: a held-out test set (possibly empty) and a fold for every other row."""

    folds: int
    fold: list[int]  # -1 for test rows

    def splits(self, fold: int) -> list[str]:
        """Return each row's split when `fold` is the validation fold."""
        return ["test" if value < 0 else ("val" if value == fold else "train") for value in self.fold]


def kfold_by_subject(labels: Sequence[str], groups: Sequence[int], *, folds: int, seed: int,
                     test_fraction: float = 0.0) -> FoldAssignment:
    """Assign groups to `folds` folds, stratified by class, after holding out `test_fraction` for test.

    Within a class, groups (largest first, ties in shuffled order) go to the fold with the fewest
    groups of that class, then the fewest photos, so folds differ by at most one group per class.
    """
    if folds < 2:
        raise ConfigError(f"folds = {folds}: k-fold cross-validation needs at least 2 folds")
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction = {test_fraction}: must be at least 0 and below 1")
    classes = group_classes(labels, groups)
    by_class = _groups_by_class(classes)
    needed = folds + (1 if test_fraction > 0 else 0)
    small = {label: len(members) for label, members in by_class.items() if len(members) < needed}
    if small:
        raise SmallClassError(small, needed, "fold" + (" and the test split" if test_fraction > 0 else ""))

    sizes = Counter(groups)
    rng = np.random.default_rng(seed)
    fold_of_group: dict[int, int] = {}
    fold_photos = [0] * folds
    for label in sorted(by_class):
        members = [by_class[label][index] for index in rng.permutation(len(by_class[label]))]
        if test_fraction > 0:
            test_count = allocate(len(members), {"rest": 1 - test_fraction, "test": test_fraction})["test"]
            for group in members[:test_count]:
                fold_of_group[group] = -1
            members = members[test_count:]
        members.sort(key=lambda group: -sizes[group])  # stable: ties keep the shuffled order
        class_count = [0] * folds
        for group in members:
            target = min(range(folds), key=lambda fold: (class_count[fold], fold_photos[fold], fold))
            fold_of_group[group] = target
            class_count[target] += 1
            fold_photos[target] += sizes[group]
    return FoldAssignment(folds=folds, fold=[fold_of_group[group] for group in groups])


def _groups_by_class(classes: Mapping[int, str]) -> dict[str, list[int]]:
    by_class: dict[str, list[int]] = {}
    for group in sorted(classes):
        by_class.setdefault(classes[group], []).append(group)
    return by_class


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    unknown = set(fractions) - set(SPLITS)
    if unknown:
        raise ConfigError(f"unknown split name(s) {sorted(unknown)}; splits are {', '.join(SPLITS)}")
    checked = {split: float(fractions.get(split, 0.0)) for split in SPLITS}
    if any(value < 0 for value in checked.values()):
        raise ConfigError(f"split fractions {checked} must not be negative")
    if checked["train"] <= 0:
        raise ConfigError(f"train fraction {checked['train']} must be above 0")
    if not math.isclose(sum(checked.values()), 1.0, abs_tol=1e-6):
        raise ConfigError(f"split fractions {checked} must add up to 1 (they add up to {sum(checked.values()):g})")
    return checked
