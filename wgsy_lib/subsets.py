"""Seeded, stratified subsets of a test JSONL file, recorded so a result can be reproduced.

Evaluating every test example is slow on a small GPU, so 04_evaluate can score a subset instead.
The subset keeps each label's share of the file (largest-remainder rounding, with every label kept
when the size allows), and takes whole subjects where it can, so that several photos of one person
stay together for the subject-level bootstrap. Only when no whole subject fits the
remaining count of a label is one subject's photos split. The same file, size or fraction and seed
always give the same subset, whatever the order of the lines in the file.

`subset_test_file` writes two files beside the evaluation outputs:

- `test_subset.jsonl`: the chosen lines, verbatim and in file order, which evaluation then reads;
- `subset.json`: the source file and its SHA-256, the seed, the requested size or fraction, the
  chosen line numbers (1-based) with their image hashes, and the counts per label.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import ConfigError, DataError
from .log import log_written
from .paths import resolve_path

logger = logging.getLogger(__name__)

SUBSET_JSONL_NAME = "test_subset.jsonl"
SUBSET_RECORD_NAME = "subset.json"


@dataclass(frozen=True)
class ExampleLine:
    """One line of a test JSONL file, with what the subset needs to know about it."""

    line_number: int  # 1-based, as editors show it
    label: str
    subject_id: str
    image_sha256: str
    text: str  # the line exactly as read, without its newline


@dataclass
class SubsetRecord:
    """Contents of `subset.json`: enough to rebuild and check the subset."""

    source: str
    source_sha256: str
    source_examples: int
    seed: int
    requested_size: int | None
    requested_fraction: float | None
    size: int
    line_numbers: list[int]
    image_sha256: list[str]
    label_counts: dict[str, int]
    source_label_counts: dict[str, int]
    subjects: int
    split_subjects: list[str] = field(default_factory=list)


def read_test_examples(path: str | Path) -> list[ExampleLine]:
    """Read a test JSONL file, checking each line has the `label` and `subject_id` a subset needs."""
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise DataError(f"test file {resolved} not found; set test_file to a JSONL file written by 02_convert")

    examples = []
    with resolved.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.rstrip("\n")
            if not text.strip():
                continue
            examples.append(_parse_line(resolved, line_number, text))
    if not examples:
        raise DataError(f"test file {resolved} contains no examples; check that 02_convert wrote the test split")
    return examples


def _parse_line(path: Path, line_number: int, text: str) -> ExampleLine:
    try:
        row = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} line {line_number} is not valid JSON ({error}); rewrite the file with 02_convert") from None
    if not isinstance(row, dict):
        raise DataError(f"{path} line {line_number} is a JSON {type(row).__name__}, expected an object per line")
    label = row.get("label")
    if not isinstance(label, str) or not label:
        raise DataError(
            f"{path} line {line_number} has label {label!r}; a subset is stratified by label, so every line "
            "needs a non-empty 'label' (files written by 02_convert have one)"
        )
    subject_id = row.get("subject_id")
    subject = "" if subject_id is None else str(subject_id)
    return ExampleLine(line_number, label, subject, str(row.get("image_sha256") or ""), text)


def allocate_per_label(label_counts: dict[str, int], size: int) -> dict[str, int]:
    """Split `size` across labels in proportion to their counts (largest remainder, ties by name).

    When `size` is at least the number of labels, every label gets at least one example, taken from
    the label with the largest allocation, so a small subset never loses a class's row in the metrics.
    """
    total = sum(label_counts.values())
    shares = {label: size * count / total for label, count in label_counts.items()}
    allocation = {label: math.floor(share) for label, share in shares.items()}
    leftover = size - sum(allocation.values())
    by_remainder = sorted(label_counts, key=lambda label: (-(shares[label] - allocation[label]), label))
    for label in by_remainder[:leftover]:
        allocation[label] += 1

    if size >= len(label_counts):
        for label in sorted(label_counts):
            if allocation[label] == 0:
                donor = max(sorted(allocation), key=lambda name: allocation[name])
                allocation[donor] -= 1
                allocation[label] += 1
    return allocation


def select_subset(examples: list[ExampleLine], *, size: int, seed: int) -> tuple[list[ExampleLine], list[str]]:
    """Choose `size` examples stratified by label, taking whole subjects where they fit.

    Returns the chosen examples in file order and the subject ids whose photos had to be split.
    Subjects are sorted by id before the seeded shuffle, so the choice does not depend on line order.
    """
    groups: dict[str, dict[str, list[ExampleLine]]] = defaultdict(lambda: defaultdict(list))
    for example in examples:
        # An empty subject id means "unknown person": treat the line as its own subject.
        subject = example.subject_id or f"line:{example.line_number}"
        groups[example.label][subject].append(example)

    label_counts = {label: sum(len(rows) for rows in subjects.values()) for label, subjects in groups.items()}
    allocation = allocate_per_label(label_counts, size)

    chosen: list[ExampleLine] = []
    split_subjects: list[str] = []
    for label in sorted(groups):
        # One generator per label, seeded from the seed and the label, so adding a class to the file
        # does not change which subjects are drawn for the others.
        rng = random.Random(f"{seed}:{label}")
        subject_ids = sorted(groups[label])
        rng.shuffle(subject_ids)
        picked, split = _fill_with_subjects(groups[label], subject_ids, allocation[label])
        chosen.extend(picked)
        split_subjects.extend(split)

    chosen.sort(key=lambda example: example.line_number)
    return chosen, split_subjects


def _fill_with_subjects(subjects: dict[str, list[ExampleLine]], order: list[str], target: int) -> tuple[list[ExampleLine], list[str]]:
    picked: list[ExampleLine] = []
    remaining = []
    for subject in order:
        rows = subjects[subject]
        if len(picked) + len(rows) <= target:
            picked.extend(rows)
        else:
            remaining.append(subject)

    split = []
    for subject in remaining:
        missing = target - len(picked)
        if missing == 0:
            break
        picked.extend(subjects[subject][:missing])
        split.append(subject)
    return picked, split


def resolve_subset_size(total: int, *, size: int | None, fraction: float | None, source: Path) -> int:
    """Turn the requested size or fraction into a number of examples, or raise ConfigError."""
    if (size is None) == (fraction is None):
        raise ConfigError("subset: set exactly one of subset_size (a number of examples) or subset_fraction (0 to 1)")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"subset_size is {size!r}; expected a whole number of examples of at least 1")
        if size > total:
            raise ConfigError(
                f"subset_size is {size} but {source} has only {total} examples; use a smaller size, or leave "
                "the subset unset to evaluate the whole file"
            )
        return size
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"subset_fraction is {fraction!r}; expected a number greater than 0 and at most 1")
    return max(1, round(total * fraction))


def subset_test_file(
    test_file: str | Path,
    out_dir: str | Path,
    *,
    size: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> tuple[Path, SubsetRecord]:
    """Write a seeded, stratified subset of `test_file` to `out_dir` and return its path and record.

    The returned path (`out_dir/test_subset.jsonl`) is what evaluation should read in place of
    `test_file`; `out_dir/subset.json` records how it was drawn.
    """
    source = resolve_path(test_file)
    examples = read_test_examples(source)
    subset_size = resolve_subset_size(len(examples), size=size, fraction=fraction, source=source)
    chosen, split_subjects = select_subset(examples, size=subset_size, seed=seed)

    record = SubsetRecord(
        source=str(source),
        source_sha256=_file_sha256(source),
        source_examples=len(examples),
        seed=seed,
        requested_size=size,
        requested_fraction=fraction,
        size=len(chosen),
        line_numbers=[example.line_number for example in chosen],
        image_sha256=[example.image_sha256 for example in chosen],
        label_counts=_count_labels(chosen),
        source_label_counts=_count_labels(examples),
        subjects=len({(example.label, example.subject_id or f"line:{example.line_number}") for example in chosen}),
        split_subjects=sorted(split_subjects),
    )
    if split_subjects:
        logger.info("subset: split the photos of %d subject(s) to reach exactly %d examples: %s",
                    len(split_subjects), subset_size, ", ".join(sorted(split_subjects)))

    return _write_subset(resolve_path(out_dir), chosen, record), record


def apply_subset(test_file: str | Path, out_dir: str | Path, *, size: int = 0, fraction: float = 0.0, seed: int = 0) -> Path:
    """Return the file evaluation should read: `test_file` itself, or a subset of it written to `out_dir`.

    `size=0` and `fraction=0` (the stage defaults) mean the whole file; otherwise exactly one of
    them must be set, as for `subset_test_file`.
    """
    if not size and not fraction:
        return resolve_path(test_file)
    subset_path, _record = subset_test_file(test_file, out_dir, size=size or None, fraction=fraction or None, seed=seed)
    return subset_path


def _write_subset(out_dir: Path, chosen: list[ExampleLine], record: SubsetRecord) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    subset_path = out_dir / SUBSET_JSONL_NAME
    subset_path.write_text("".join(example.text + "\n" for example in chosen), encoding="utf-8")
    log_written(subset_path, f"test subset ({record.size} of {record.source_examples} examples, seed {record.seed})", log=logger)

    record_path = out_dir / SUBSET_RECORD_NAME
    record_path.write_text(json.dumps(asdict(record), indent=2) + "\n", encoding="utf-8")
    log_written(record_path, "test subset record", log=logger)
    return subset_path


def check_subset_source(record_path: str | Path) -> SubsetRecord:
    """Read `subset.json` and check its source file is unchanged, so a rerun scores the same examples."""
    path = resolve_path(record_path)
    record = SubsetRecord(**json.loads(path.read_text(encoding="utf-8")))
    source = Path(record.source)
    if not source.is_file():
        raise DataError(f"{path}: the subset's source file {source} no longer exists")
    digest = _file_sha256(source)
    if digest != record.source_sha256:
        raise DataError(
            f"{path}: the source file {source} changed since the subset was drawn (SHA-256 {digest[:12]}..., "
            f"recorded {record.source_sha256[:12]}...); draw the subset again or restore the file"
        )
    return record


def _count_labels(examples: list[ExampleLine]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for example in examples:
        counts[example.label] += 1
    return dict(sorted(counts.items()))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
