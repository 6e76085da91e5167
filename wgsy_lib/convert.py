"""02_convert: turn a cohort manifest (and optional annotations) into train / val / test JSONL.

Steps, each one function so the notebook calls them one per cell:

1. `prepare_cohort`: read the manifest, check labels and photos, hash every photo (SHA-256 and pHash).
2. `find_cohort_duplicates`: exact and near-duplicate photos across the whole cohort.
3. `match_cohort_controls`: optionally sample controls to match the patients' age and sex.
4. `assign_splits`: person-level split (or the manifest's split column, or grouped k-fold), with each
   duplicate group kept on one side.
5. `build_examples`: instruction, answer and metadata per photo, with the label-leakage guard.
6. `write_conversion`: JSONL per split (and per fold), problems.csv, duplicates.csv and the data card.

Rows with problems (unknown label, missing or unreadable photo, missing annotation, class too small)
are handled as the parameters say: an error naming the row, or skipped and listed in problems.csv.
Past `max_skipped_fraction` the run fails. The output format is documented in docs/convert.md.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, field_validator, model_validator
from tqdm.auto import tqdm

from .annotation_store import AnnotationRecord, AnnotationStore
from .answers import render_answer
from .config import StageConfig
from .datacard import build_data_card, write_data_card
from .duplicates import DuplicateReport, fingerprint, find_duplicates
from .errors import ConfigError, DataError, ImageError
from .features import FeatureSchema, load_features
from .images import file_sha256
from .instructions import build_instruction, explanation_from_features
from .labels import LabelSet, load_labels
from .log import log_written
from .manifest import data_root_for, read_manifest
from .matching import MatchResult, match_controls
from .paths import resolve_path
from .splits import SPLITS, FoldAssignment, SmallClassError, class_group_counts, kfold_by_subject, split_by_subject, \
    splits_from_column, subject_groups

logger = logging.getLogger(__name__)

# problems.csv actions: only "skipped" rows count towards max_skipped_fraction.
SKIPPED = "skipped"
KEPT_WITHOUT_FEATURES = "kept without features"
EXCLUDED_BY_MATCHING = "excluded by matching"
# A duplicate group joining more people than this is more likely a too-loose threshold than real copies.
# Duplicate pairs with different labels logged one by one; the rest are counted (all are in duplicates.csv).
MAX_LOGGED_PAIRS = 10
LARGE_DUPLICATE_GROUP = 5
PROBLEM_COLUMNS = ["row", "image", "subject_id", "label", "problem", "action", "detail"]


class ConvertConfig(StageConfig):
    """Parameters of 02_convert."""

    stage: ClassVar[str] = "02_convert"

    manifest: str = Field("", description="cohort manifest CSV (from `wgsy import` or the phantom generator)")
    data_root: str = Field("", description="folder the manifest's image paths are relative to; empty: from cohort.json")
    annotations: list[str] = Field([], description="annotation store JSONL files from 01_annotate; empty: no features")
    output_dir: str = Field("", description="folder for train/val/test.jsonl, the data card and problems.csv")
    labels_file: str = Field("params/labels.yaml", description="classes the instruction lists as allowed diagnoses")
    features_file: str = Field("params/features.yaml", description="feature schema used to phrase explanations")
    answer_format: Literal["json", "diagnosis", "binary"] = Field(
        "json", description="json: diagnosis, features, explanation; diagnosis: the name only; binary: {\"ws\": yes/no}")
    features_in_instruction: bool = Field(False, description="give label-blind features in the instruction")
    system_prompt: str = Field("", description="system message put before every user turn; empty: none")
    annotation_backend: str = Field("", description="use only annotations from this backend; empty: any")
    annotation_model: str = Field("", description="use only annotations from this model; empty: any")
    annotation_prompt_version: str = Field("", description="use only annotations with this prompt version; empty: any")
    allow_label_conditioned_train: bool = Field(
        False, description="let label-conditioned annotations fill train answers (never val/test, never instructions)")
    split_method: Literal["subject", "column", "kfold"] = Field(
        "subject", description="subject: seeded person-level split; column: the manifest's split column; kfold: grouped k-fold")
    train_fraction: float = Field(0.7, ge=0, le=1, description="share of each class's people in train (split_method subject)")
    val_fraction: float = Field(0.15, ge=0, le=1, description="share of each class's people in val (split_method subject)")
    test_fraction: float = Field(0.15, ge=0, lt=1, description="share of each class's people held out for test (subject, kfold)")
    folds: int = Field(5, ge=2, le=50, description="number of folds (split_method kfold)")
    seed: int = Field(42, ge=0, description="seed of the split and of control matching")
    near_duplicates: bool = Field(True, description="also find near-duplicate photos (perceptual hash), not only exact copies")
    near_duplicate_threshold: int = Field(10, ge=0, le=32, description="max pHash Hamming distance (of 64 bits) for near-duplicate candidates")
    near_duplicate_min_correlation: float = Field(
        0.98, ge=0, le=1, description="min correlation of 32x32 grayscale thumbnails that confirms a near duplicate")
    match_controls: bool = Field(False, description="sample controls to match the patients' age and sex")
    control_label: str = Field("healthy control", description="the control class (matching and the data card)")
    match_ratio: float = Field(1.0, gt=0, description="controls kept per patient in each sex x age-bin stratum")
    match_age_bin_years: float = Field(5.0, gt=0, description="width of the age bins used for matching, in years")
    missing_annotation: Literal["error", "skip", "no_features"] = Field(
        "no_features", description="photo without a usable annotation: error, skip the row, or keep it without features")
    unknown_label: Literal["error", "skip"] = Field("error", description="row whose label is not a class: error or skip")
    missing_image: Literal["error", "skip"] = Field("error", description="row whose photo is missing or unreadable: error or skip")
    small_class: Literal["error", "skip"] = Field("error", description="class with too few people for every split: error or skip")
    max_skipped_fraction: float = Field(0.1, ge=0, le=1, description="fail when more than this share of rows is skipped")
    show_photos: bool = Field(False, description="show photos next to the example rows (patient privacy: off by default)")
    example_rows: int = Field(5, ge=0, description="example rows shown at the end of the notebook")

    @field_validator("manifest", "output_dir")
    @classmethod
    def _required_path(cls, value: str, info: Any) -> str:
        if not str(value).strip():
            hint = "the cohort manifest CSV" if info.field_name == "manifest" else "the folder to write the JSONL files to"
            raise ValueError(f"is empty; set {info.field_name} to {hint}")
        return value

    @model_validator(mode="after")
    def _check_fractions(self) -> "ConvertConfig":
        if self.split_method == "subject":
            total = self.train_fraction + self.val_fraction + self.test_fraction
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ValueError(f"train_fraction + val_fraction + test_fraction = {total:g}; they must add up to 1")
            if self.train_fraction <= 0 or self.val_fraction <= 0:
                raise ValueError("train_fraction and val_fraction must be above 0 (model selection needs a validation split)")
        return self


@dataclass
class Conversion:
    """The state of one conversion run, passed from step to step."""

    config: ConvertConfig
    labels: LabelSet
    schema: FeatureSchema
    manifest_path: Path
    data_root: Path
    total_rows: int
    rows: pd.DataFrame  # kept rows: manifest columns plus row, path, image_sha256, fingerprint
    problems: list[dict[str, Any]] = field(default_factory=list)
    duplicates: DuplicateReport | None = None  # positions refer to `rows` as they were before splitting
    duplicate_pairs: pd.DataFrame | None = None  # one row per duplicate pair, with both rows' details
    duplicate_summary: dict[str, Any] = field(default_factory=dict)
    matching: MatchResult | None = None
    folds: FoldAssignment | None = None
    examples: pd.DataFrame | None = None  # one row per written example: the JSONL fields
    written: list[Path] = field(default_factory=list)

    @property
    def problem_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.problems, columns=PROBLEM_COLUMNS)

    def record_problem(self, row: pd.Series, problem: str, action: str, detail: str) -> None:
        self.problems.append({"row": int(row["row"]), "image": row["image"], "subject_id": row["subject_id"],
                              "label": row["label"], "problem": problem, "action": action, "detail": detail})
        log = logger.info if action == EXCLUDED_BY_MATCHING else logger.warning
        log("manifest row %d (%s): %s; %s", row["row"], row["image"], detail, action)


def convert(config: ConvertConfig) -> Conversion:
    """Run every step of 02_convert and write the outputs; return the finished conversion."""
    conversion = prepare_cohort(config)
    conversion = find_cohort_duplicates(conversion)
    conversion = match_cohort_controls(conversion)
    conversion = assign_splits(conversion)
    conversion = build_examples(conversion)
    write_conversion(conversion)
    return conversion


# Step 1 ------------------------------------------------------------------------------------------

def prepare_cohort(config: ConvertConfig) -> Conversion:
    """Read the manifest, check labels and photos, and hash every photo."""
    labels = load_labels(config.labels_file)
    schema = load_features(config.features_file)
    manifest_path = resolve_path(config.manifest)
    frame = read_manifest(manifest_path)
    data_root = data_root_for(manifest_path, config.path("data_root"))
    frame.insert(0, "row", range(2, len(frame) + 2))  # CSV line numbers: the header is line 1
    conversion = Conversion(config=config, labels=labels, schema=schema, manifest_path=manifest_path,
                            data_root=data_root, total_rows=len(frame), rows=frame)
    if frame.empty:
        raise DataError(f"manifest {manifest_path} has no rows; import photos into it first")
    logger.info("manifest %s: %d photos of %d subjects; data root %s", manifest_path, len(frame),
                frame["subject_id"].nunique(), data_root)

    frame = _check_labels(conversion, frame)
    frame = _check_images(conversion, frame)
    conversion.rows = frame.reset_index(drop=True)
    _check_binary_labels(conversion)
    _check_skipped(conversion)
    return conversion


def _check_labels(conversion: Conversion, frame: pd.DataFrame) -> pd.DataFrame:
    keep = []
    for _, row in frame.iterrows():
        if row["label"] in conversion.labels:
            keep.append(True)
            continue
        detail = (f"label {row['label']!r} (raw {row['label_raw']!r}) is not a class of {conversion.labels.source} "
                  f"({', '.join(conversion.labels.names)})")
        _handle(conversion, row, "unknown label", detail, conversion.config.unknown_label, "unknown_label",
                "fix the label in the manifest or add the class (or a synonym) to labels.yaml")
        keep.append(False)
    return frame[keep]


def _check_images(conversion: Conversion, frame: pd.DataFrame) -> pd.DataFrame:
    paths, digests, fingerprints, keep = [], [], [], []
    for _, row in tqdm(frame.iterrows(), total=len(frame), desc="checking photos", unit="photo"):
        path = (conversion.data_root / row["image"]).resolve()
        if not path.is_file():
            detail = f"photo {path} not found"
            _handle(conversion, row, "missing image", detail, conversion.config.missing_image, "missing_image",
                    "check the data root and the image path")
            keep.append(False)
            continue
        try:
            photo_fingerprint = fingerprint(path)  # decodes the photo, so unreadable files are caught here
        except ImageError as error:
            _handle(conversion, row, "unreadable image", str(error), conversion.config.missing_image, "missing_image",
                    "replace or remove the photo")
            keep.append(False)
            continue
        keep.append(True)
        paths.append(str(path))
        digests.append(file_sha256(path))
        fingerprints.append(photo_fingerprint)
    kept = frame[keep].copy()
    kept["path"], kept["image_sha256"], kept["fingerprint"] = paths, digests, fingerprints
    return kept


def _check_binary_labels(conversion: Conversion) -> None:
    if conversion.config.answer_format != "binary":
        return
    allowed = {conversion.labels.binary_positive, conversion.labels.binary_negative}
    others = sorted(set(conversion.rows["label"]) - allowed)
    if others:
        raise ConfigError(f"answer_format 'binary' can only express {sorted(allowed)}, but the cohort also has {others}; "
                          "use answer_format 'json' or 'diagnosis', or a manifest with only those two classes")


# Step 2 ------------------------------------------------------------------------------------------

def find_cohort_duplicates(conversion: Conversion) -> Conversion:
    """Find exact and near-duplicate photos across the whole cohort (before any split)."""
    rows = conversion.rows
    config = conversion.config
    conversion.duplicates = find_duplicates(rows["path"], threshold=config.near_duplicate_threshold,
                                            min_correlation=config.near_duplicate_min_correlation,
                                            near=config.near_duplicates, sha256=rows["image_sha256"].tolist(),
                                            fingerprints=rows["fingerprint"].tolist())
    report = conversion.duplicates
    rows["duplicate_group"] = report.group
    conversion.duplicate_pairs = duplicate_pairs_table(rows, report)
    different = conversion.duplicate_pairs[conversion.duplicate_pairs["label_a"] != conversion.duplicate_pairs["label_b"]]
    # Every pair is in duplicates.csv; the log shows the first few so a run with many stays readable.
    for _, pair in different.head(MAX_LOGGED_PAIRS).iterrows():
        logger.warning("duplicate photos with different labels: rows %d (%s, %s) and %d (%s, %s); check the manifest",
                       pair["row_a"], pair["image_a"], pair["label_a"], pair["row_b"], pair["image_b"], pair["label_b"])
    if len(different) > MAX_LOGGED_PAIRS:
        logger.warning("%d more duplicate pairs with different labels are listed in duplicates.csv; if they are "
                       "different photos, lower near_duplicate_threshold (now %d)", len(different) - MAX_LOGGED_PAIRS,
                       config.near_duplicate_threshold)
    subjects_per_group = [rows.iloc[members]["subject_id"].nunique() for members in report.groups.values()]
    joining = sum(1 for count in subjects_per_group if count > 1)
    largest = max(subjects_per_group, default=0)
    if largest > LARGE_DUPLICATE_GROUP:
        logger.warning("one duplicate group joins %d people; if they are different photos, lower "
                       "near_duplicate_threshold (now %d) so the split is not forced to keep them together",
                       largest, config.near_duplicate_threshold)
    conversion.duplicate_summary = {
        "exact_pairs": sum(pair.kind == "exact" for pair in report.pairs),
        "near_pairs": sum(pair.kind == "near" for pair in report.pairs),
        "groups": len(report.groups), "groups_joining_subjects": joining, "largest_group_subjects": largest,
        "pairs_with_different_labels": len(different),
        "near_threshold_bits": config.near_duplicate_threshold if config.near_duplicates else None,
        "near_min_correlation": config.near_duplicate_min_correlation if config.near_duplicates else None,
        "candidates_rejected_by_correlation": report.rejected_candidates,
    }
    return conversion


def duplicate_pairs_table(rows: pd.DataFrame, report: DuplicateReport) -> pd.DataFrame:
    """Return one row per duplicate pair, with both photos' manifest rows, subjects and labels."""
    records = []
    for pair in report.pairs:
        first, second = rows.iloc[pair.first], rows.iloc[pair.second]
        records.append({"kind": pair.kind, "distance": pair.distance, "correlation": pair.correlation, "row_a": first["row"], "image_a": first["image"],
                        "subject_a": first["subject_id"], "label_a": first["label"], "row_b": second["row"],
                        "image_b": second["image"], "subject_b": second["subject_id"], "label_b": second["label"]})
    return pd.DataFrame(records, columns=["kind", "distance", "correlation", "row_a", "image_a", "subject_a", "label_a", "row_b",
                                          "image_b", "subject_b", "label_b"])


# Step 3 ------------------------------------------------------------------------------------------

def match_cohort_controls(conversion: Conversion) -> Conversion:
    """Keep patients and a seeded sample of controls matched by sex and age bin (if match_controls)."""
    config = conversion.config
    if not config.match_controls:
        return conversion
    result = match_controls(conversion.rows, control_label=config.control_label, seed=config.seed,
                            ratio=config.match_ratio, age_bin_years=config.match_age_bin_years)
    conversion.matching = result
    # Whole duplicate groups go together, so a control kept by matching never leaves a copy behind in
    # the excluded rows (it would not leak, but the data card would miscount).
    for _, row in conversion.rows[~result.keep].iterrows():
        conversion.record_problem(row, "control not matched", EXCLUDED_BY_MATCHING,
                                  "control outside the patients' sex x age strata, or beyond match_ratio")
    conversion.rows = conversion.rows[result.keep].reset_index(drop=True)
    return conversion


# Step 4 ------------------------------------------------------------------------------------------

def assign_splits(conversion: Conversion) -> Conversion:
    """Put every row in train, val or test (or a fold), keeping people and duplicate groups whole."""
    config = conversion.config
    _drop_small_classes(conversion)
    rows = conversion.rows
    groups = subject_groups(rows["subject_id"].tolist(), rows["duplicate_group"].tolist())
    rows["group"] = groups
    labels = rows["label"].tolist()

    if config.split_method == "column":
        rows["split"] = splits_from_column(rows["split"].tolist(), groups, rows["subject_id"].tolist(),
                                           where=f"manifest {conversion.manifest_path}", row_numbers=rows["row"].tolist())
    elif config.split_method == "subject":
        fractions = {"train": config.train_fraction, "val": config.val_fraction, "test": config.test_fraction}
        rows["split"] = split_by_subject(labels, groups, fractions=fractions, seed=config.seed)
    else:
        conversion.folds = kfold_by_subject(labels, groups, folds=config.folds, seed=config.seed,
                                            test_fraction=config.test_fraction)
        rows["fold"] = conversion.folds.fold
        rows["split"] = ["test" if fold < 0 else "train" for fold in conversion.folds.fold]
    logger.info("split (%s, seed %d): %s", config.split_method, config.seed,
                rows.groupby(["split", "label"]).size().to_dict())
    return conversion


def _drop_small_classes(conversion: Conversion) -> None:
    config = conversion.config
    if config.split_method == "column":
        return
    rows = conversion.rows
    groups = subject_groups(rows["subject_id"].tolist(), rows["duplicate_group"].tolist())
    if config.split_method == "kfold":
        needed, what = config.folds + (1 if config.test_fraction > 0 else 0), "fold"
    else:
        needed, what = 3 if config.test_fraction > 0 else 2, "split"
    sizes = class_group_counts(rows["label"].tolist(), groups)
    small = {label: count for label, count in sizes.items() if count < needed}
    if not small:
        return
    error = SmallClassError(small, needed, what)
    if config.small_class == "error":
        raise error
    mask = rows["label"].isin(small)
    for _, row in rows[mask].iterrows():
        conversion.record_problem(row, "class too small", SKIPPED,
                                  f"class {row['label']!r} has {small[row['label']]} people; needs {needed}")
    conversion.rows = rows[~mask].reset_index(drop=True)
    _check_skipped(conversion)


# Step 5 ------------------------------------------------------------------------------------------

def build_examples(conversion: Conversion) -> Conversion:
    """Build each photo's instruction, answer and metadata, then check that no label leaks into val/test."""
    config = conversion.config
    annotations = load_annotation_index(conversion)
    records, keep = [], []
    for _, row in conversion.rows.iterrows():
        record = _build_record(conversion, row, annotations)
        keep.append(record is not None)
        if record is not None:
            records.append(record)
    conversion.rows = conversion.rows[keep].reset_index(drop=True)
    # dtype=object keeps each value as built (an age of None stays None instead of becoming NaN).
    conversion.examples = pd.DataFrame(records, dtype=object)
    _check_skipped(conversion)
    check_no_label_leak(conversion.examples)
    _check_splits_filled(conversion)
    logger.info("built %d examples (answer format %s, features in instruction: %s)", len(records),
                config.answer_format, config.features_in_instruction)
    return conversion


def load_annotation_index(conversion: Conversion) -> dict[str, dict[str, AnnotationRecord]]:
    """Return, per image SHA-256, the newest usable (status ok) record of each mode, after the filters."""
    config = conversion.config
    if config.features_in_instruction and not config.annotations:
        raise ConfigError("features_in_instruction is true but no annotation stores are given; set annotations to the "
                          "01_annotate output (annotations.jsonl) or set features_in_instruction: false")
    index: dict[str, dict[str, AnnotationRecord]] = {}
    for store_path in config.annotations:
        path = resolve_path(store_path)
        if not path.is_file():
            raise DataError(f"annotation store {path} (parameter annotations) not found; run 01_annotate or fix the path")
        for record in AnnotationStore(path).read():
            if record.status != "ok" or not _passes_filters(record, config):
                continue
            current = index.setdefault(record.image_sha256, {}).get(record.mode)
            if current is None or record.created >= current.created:
                index[record.image_sha256][record.mode] = record
    if config.annotations:
        logger.info("annotations: usable records for %d distinct photos in %d store(s)", len(index), len(config.annotations))
    return index


def _passes_filters(record: AnnotationRecord, config: ConvertConfig) -> bool:
    return ((not config.annotation_backend or record.backend == config.annotation_backend)
            and (not config.annotation_model or record.model == config.annotation_model)
            and (not config.annotation_prompt_version or record.prompt_version == config.annotation_prompt_version))


def _build_record(conversion: Conversion, row: pd.Series, annotations: dict) -> dict[str, Any] | None:
    config = conversion.config
    split = row["split"]
    found = annotations.get(row["image_sha256"], {})
    blind = found.get("blind")
    conditioned = found.get("label_conditioned")

    instruction_features = None
    if config.features_in_instruction:
        if blind is None and conditioned is not None and split != "train":
            raise DataError(
                f"photo {row['image']} (manifest row {row['row']}, split {split}) has only a label-conditioned annotation, "
                "and features_in_instruction would put it in the input of a validation or test example, which leaks the "
                "label. Annotate the photo label-blind (01_annotate, mode blind) or set features_in_instruction: false."
            )
        if blind is None:
            if not _handle_missing_annotation(conversion, row, "no label-blind annotation for the instruction"):
                return None
        else:
            instruction_features = blind.features

    answer_record = blind
    if answer_record is None and split == "train" and config.allow_label_conditioned_train:
        answer_record = conditioned
    wants_answer_features = config.answer_format == "json" and bool(config.annotations)
    if wants_answer_features and answer_record is None and not config.features_in_instruction:
        if not _handle_missing_annotation(conversion, row, "no usable annotation for the answer's features"):
            return None

    return _example_record(conversion, row, instruction_features,
                           answer_record if config.answer_format == "json" else None)


def _handle_missing_annotation(conversion: Conversion, row: pd.Series, detail: str) -> bool:
    """Apply missing_annotation; return True when the row is kept (without features)."""
    policy = conversion.config.missing_annotation
    if policy == "no_features":
        conversion.record_problem(row, "missing annotation", KEPT_WITHOUT_FEATURES, detail)
        return True
    _handle(conversion, row, "missing annotation", detail, policy, "missing_annotation",
            "annotate the photo with 01_annotate, or set missing_annotation: no_features")
    return False


def _example_record(conversion: Conversion, row: pd.Series, instruction_features: dict | None,
                    answer_record: AnnotationRecord | None) -> dict[str, Any]:
    config = conversion.config
    features = answer_record.features if answer_record is not None else None
    answer = render_answer(config.answer_format, row["label"], conversion.labels, features=features,
                           explanation=explanation_from_features(features, schema=conversion.schema))
    instruction = build_instruction(config.answer_format, conversion.labels, features=instruction_features,
                                    schema=conversion.schema)
    sources = {answer_record.mode if answer_record is not None else None, "blind" if instruction_features else None} - {None}
    messages = [{"role": "system", "content": [{"type": "text", "text": config.system_prompt}]}] if config.system_prompt else []
    messages += [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]},
                 {"role": "assistant", "content": [{"type": "text", "text": answer}]}]
    record = {
        "messages": messages, "images": [row["path"]], "image": row["path"], "image_sha256": row["image_sha256"],
        "label": row["label"], "subject_id": row["subject_id"], "split": row["split"],
        "answer_format": config.answer_format, "instruction": instruction, "response": answer,
        "feature_source": "+".join(sorted(sources)) if sources else "none",
        "source": row["source"], "age": _age(row["age"]), "sex": row["sex"],
    }
    if "fold" in row.index:
        record["fold"] = int(row["fold"])
    return record


def check_no_label_leak(examples: pd.DataFrame) -> None:
    """Raise DataError if any validation or test example used a label-conditioned annotation."""
    if examples.empty:
        return
    leaking = examples[(examples["split"] != "train") & examples["feature_source"].str.contains("label_conditioned")]
    if not leaking.empty:
        first = leaking.iloc[0]
        raise DataError(f"{len(leaking)} validation/test example(s) use a label-conditioned annotation, which leaks the "
                        f"label (first: {first['image']}, split {first['split']}); only label-blind annotations may be "
                        "used outside train")


def _check_splits_filled(conversion: Conversion) -> None:
    examples = conversion.examples
    if examples.empty:
        raise DataError(f"no examples left from manifest {conversion.manifest_path}; see problems.csv for the reasons")
    expected = _expected_splits(conversion)
    classes = sorted(set(examples["label"]))
    for split in expected:
        in_split = examples[examples["split"] == split]
        if in_split.empty:
            raise DataError(f"split {split} is empty; check the split fractions (or the manifest's split column) and "
                            "that enough people remain after skipped rows")
        absent = [label for label in classes if label not in set(in_split["label"])]
        if absent and conversion.config.split_method != "column":
            raise DataError(f"split {split} has no examples of {', '.join(absent)}; add people to these classes or "
                            "set small_class: skip")
        if absent:
            logger.warning("split %s (from the manifest's split column) has no examples of %s", split, ", ".join(absent))


def _expected_splits(conversion: Conversion) -> list[str]:
    config = conversion.config
    if config.split_method == "column":
        return sorted(set(conversion.examples["split"]), key=SPLITS.index)
    if config.split_method == "kfold":
        return ["train", "test"] if config.test_fraction > 0 else ["train"]
    return [split for split, fraction in (("train", config.train_fraction), ("val", config.val_fraction),
                                          ("test", config.test_fraction)) if fraction > 0]


# Step 6 ------------------------------------------------------------------------------------------

def write_conversion(conversion: Conversion) -> list[Path]:
    """Write the JSONL files, problems.csv, duplicates.csv and the data card; return the paths written."""
    config = conversion.config
    output = resolve_path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    examples = conversion.examples
    written: list[Path] = []

    if config.split_method == "kfold":
        has_test = bool((examples["split"] == "test").any())
        _remove_stale(output, ["train", "val"] + ([] if has_test else ["test"]), folds=False)
        written += _write_folds(conversion, output)
    else:
        for split in _expected_splits(conversion):
            written.append(write_jsonl(examples[examples["split"] == split], output / f"{split}.jsonl", split))
        _remove_stale(output, [split for split in SPLITS if split not in _expected_splits(conversion)])

    card = build_conversion_card(conversion, examples)
    written += list(write_data_card(card, output))
    written.append(_write_csv(conversion.problem_table, output / "problems.csv", "rows with problems"))
    written.append(_write_csv(conversion.duplicate_pairs, output / "duplicates.csv", "duplicate photo pairs"))
    conversion.written = written
    return written


def _write_folds(conversion: Conversion, output: Path) -> list[Path]:
    # Each fold folder is complete on its own (train, val, the shared test and a data card), so
    # 03_train and 04_evaluate can be pointed at one fold folder; the top-level test.jsonl is the
    # same file, for evaluating every fold's model on one held-out set.
    examples = conversion.examples
    written = []
    test = examples[examples["split"] == "test"]
    if not test.empty:
        written.append(write_jsonl(test, output / "test.jsonl", "test"))
    for fold in range(conversion.folds.folds):
        folder = output / f"fold_{fold}"
        folder.mkdir(parents=True, exist_ok=True)
        fold_examples = examples.copy()
        fold_examples["split"] = [_fold_split(value, fold) for value in fold_examples["fold"]]
        for split in ("train", "val", "test"):
            selected = fold_examples[fold_examples["split"] == split]
            if split == "test" and selected.empty:
                continue
            written.append(write_jsonl(selected, folder / f"{split}.jsonl", f"{split} (fold {fold})"))
        written += list(write_data_card(build_conversion_card(conversion, fold_examples), folder))
    return written


def build_conversion_card(conversion: Conversion, examples: pd.DataFrame) -> dict[str, Any]:
    """Return the data card of `examples` with this conversion's duplicates, problems and parameters."""
    config = conversion.config
    rows = conversion.rows
    folds = None
    if conversion.folds is not None:
        folds = {"folds": conversion.folds.folds,
                 "photos_per_fold": [int((rows["fold"] == fold).sum()) for fold in range(conversion.folds.folds)]}
    return build_data_card(examples, class_order=conversion.labels.names, control_label=config.control_label,
                           duplicates=conversion.duplicate_summary, problems=conversion.problem_table,
                           matching=conversion.matching.strata if conversion.matching else None,
                           parameters=config.to_dict(), folds=folds)


def _fold_split(example_fold: int, fold: int) -> str:
    # Examples of the shared test set carry fold -1; within a fold, its own examples validate.
    if example_fold < 0:
        return "test"
    if example_fold == fold:
        return "val"
    return "train"


def write_jsonl(examples: pd.DataFrame, path: Path, what: str) -> Path:
    """Write examples as JSON lines in their current order (deterministic bytes for the same input)."""
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for record in examples.to_dict(orient="records"):
            record = {key: value for key, value in record.items() if not (key == "fold" and _missing(value))}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    log_written(path, f"{what} examples ({len(examples)})")
    return path


def _write_csv(frame: pd.DataFrame, path: Path, what: str) -> Path:
    frame.to_csv(path, index=False, encoding="utf-8", lineterminator="\n")
    log_written(path, f"{what} ({len(frame)})")
    return path


def _remove_stale(output: Path, splits: list[str], *, folds: bool = True) -> None:
    # Files left by an earlier run with other splits (a test.jsonl, fold folders) would otherwise
    # look like this run's output.
    for split in splits:
        stale = output / f"{split}.jsonl"
        if stale.exists():
            stale.unlink()
            logger.info("removed %s left by an earlier run (this run has no %s split)", stale, split)
    for folder in sorted(output.glob("fold_*")) if folds else []:
        if folder.is_dir() and (folder / "train.jsonl").is_file():
            shutil.rmtree(folder)
            logger.info("removed %s left by an earlier k-fold run", folder)


# Shared checks -----------------------------------------------------------------------------------

def _handle(conversion: Conversion, row: pd.Series, problem: str, detail: str, policy: str, parameter: str,
            remedy: str) -> None:
    if policy == "error":
        raise DataError(f"manifest {conversion.manifest_path}, row {row['row']} ({row['image']}): {detail}. "
                        f"{remedy[0].upper()}{remedy[1:]}, or set {parameter}: skip to leave such rows out "
                        "(they are listed in problems.csv).")
    conversion.record_problem(row, problem, SKIPPED, detail)


def _check_skipped(conversion: Conversion) -> None:
    skipped = sum(1 for problem in conversion.problems if problem["action"] == SKIPPED)
    limit = conversion.config.max_skipped_fraction
    if conversion.total_rows and skipped / conversion.total_rows > limit:
        reasons = pd.Series([problem["problem"] for problem in conversion.problems if problem["action"] == SKIPPED])
        raise DataError(f"{skipped} of {conversion.total_rows} manifest rows skipped ({skipped / conversion.total_rows:.0%}), "
                        f"more than max_skipped_fraction = {limit:g}; reasons: {reasons.value_counts().to_dict()}. "
                        "Fix the manifest, or raise max_skipped_fraction if this is expected.")


def _age(value: Any) -> int | float | None:
    if _missing(value):
        return None
    number = float(value)
    return int(number) if number.is_integer() else number


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
