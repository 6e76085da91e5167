"""Importer for the annotation files of the earlier WGSY scripts, keeping their annotations.

Those files are a JSON list of records, each with `image` (absolute or relative path), `label`
(0/1 or a class name) and the model's description of the face, in one of three shapes:

    {"image": ..., "label": 1, "parsed_annotation": {"forehead": "broad", ...}}
    {"image": ..., "label": 1, "model_raw_text": "```json {...} ```"}   (or "model_raw_response")
    {"image": ..., "label": "Williams syndrome", "annotation": {"facial_features": {...}}}

The earlier scripts put the diagnosis in the prompt, so the kept annotations are stored with mode
`label_conditioned`: usable to augment training examples, never as input of a validation or test
example.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path, PureWindowsPath
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from .annotation_store import AnnotationRecord, AnnotationStore
from .cohort_common import ImportResult, problem
from .errors import DataError
from .features import TYPICAL, UNCERTAIN, FeatureSchema, load_features
from .images import file_sha256
from .labels import LabelSet
from .log import log_written
from .manifest import MANIFEST_COLUMNS

logger = logging.getLogger(__name__)

LEGACY_BACKEND = "legacy"
LEGACY_PROMPT_VERSION = "legacy"
LEGACY_MODE = "label_conditioned"
RAW_TEXT_KEYS = ("model_raw_text", "model_raw_response")
# Record keys that are not metadata worth a manifest column.
_CONSUMED_KEYS = frozenset({"image", "label", "parsed_annotation", "annotation", *RAW_TEXT_KEYS, "instruction",
                            "response", "messages", "images", "subject_id"})
# Value words that mean "nothing unusual", "present" or "cannot judge", whatever the feature.
_TYPICAL_WORDS = frozenset({"typical", "normal", "average", "unremarkable", "none", "absent", "no", "false",
                            "not present", "within normal limits"})
_PRESENT_WORDS = frozenset({"present", "yes", "true"})
_UNCERTAIN_WORDS = frozenset({"uncertain", "unknown", "unclear", "n a", "na", "cannot assess", "not assessable",
                              "indeterminate"})
_NOT_VISIBLE_WORDS = frozenset({"not visible", "not shown", "hidden", "obscured"})
_EXPLANATION_KEYS = ("explanation", "reasoning", "summary", "description")
_SEX_CODES = {"f": "female", "female": "female", "woman": "female", "girl": "female", "女": "female",
              "m": "male", "male": "male", "man": "male", "boy": "male", "男": "male"}
# Label texts the earlier scripts' binary coding used; anything else is read as a class name.
_BINARY_TEXTS = frozenset({"0", "1", "yes", "no", "true", "false"})


def import_legacy(path: str | Path, data_root: str | Path, labels: LabelSet, *, features: FeatureSchema | None = None,
                  annotations_out: str | Path | None = None, source: str = "legacy") -> ImportResult:
    """Build manifest rows from an earlier WGSY annotation file; keep its annotations in a store.

    Image paths resolve against `data_root`. An absolute path outside it usually comes from another
    machine, so it is looked up under `data_root` by its trailing path components. A match is kept
    and reported as `path_remapped`. Annotations are appended to `annotations_out` (an
    annotation store) when given, skipping keys the store already holds.
    """
    path = Path(path)
    records = _read_records(path)
    root = Path(data_root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"data root {root} not found or not a folder; pass the folder the images in {path} live in")
    schema = features or load_features()
    result = ImportResult(frame=pd.DataFrame(columns=MANIFEST_COLUMNS), data_root=root)
    rows: list[dict[str, Any]] = []
    annotations: list[AnnotationRecord] = []
    unkeyed = 0

    for number, record in enumerate(tqdm(records, desc="reading legacy records", unit="record", leave=False), start=1):
        where = f"{path.name} record {number}"
        if not isinstance(record, dict) or not str(record.get("image") or "").strip():
            result.problems.append(problem("bad_legacy_record", f"{where} has no 'image' path; expected an object with "
                                           "'image' and 'label'", image=where))
            continue
        relative, remapped = _resolve_image(str(record["image"]).strip(), root)
        if relative is None:
            result.problems.append(problem(
                "outside_data_root", f"{where}: image {record['image']!r} is outside the data root {root} and no file "
                "with its trailing path was found under it; pass the folder that holds the images as the data root",
                image=str(record["image"])))
            continue
        if remapped:
            result.problems.append(problem("path_remapped", f"{where}: {record['image']!r} found under the data root as "
                                           f"{relative!r}", image=relative, action="kept"))
        label = _record_label(record.get("label"), labels)
        subject_id = str(record.get("subject_id") or f"legacy:{relative}")
        rows.append(_manifest_row(record, relative, subject_id, label, source))
        image_path = root / relative
        if ".." in Path(relative).parts or not image_path.is_file():
            # Without the file there is no content hash to key the annotation on; validation reports the row.
            unkeyed += _has_annotation(record)
            continue
        annotation = _annotation(record, image_path, relative, schema, path.name)
        if annotation is not None:
            annotations.append(annotation)

    result.frame = pd.DataFrame(rows).reindex(columns=_columns(rows))
    result.card = {"importer": "legacy", "source": source, "legacy_file": str(path.resolve())}
    if not any("subject_id" in record for record in records if isinstance(record, dict)):
        logger.warning("%s has no subject ids, so each photo counts as its own subject; a split then cannot keep two "
                       "photos of one person together", path)
    if unkeyed:
        logger.warning("%d annotations in %s not kept because their image is missing or outside the data root",
                       unkeyed, path)
    if annotations_out is not None:
        _store_annotations(annotations, Path(annotations_out))
    logger.info("imported %d records from %s (%d annotations kept, %d problems)", len(rows), path, len(annotations),
                len(result.problems))
    return result


def map_features(values: Any, schema: FeatureSchema) -> tuple[dict[str, str], list[str]]:
    """Map a feature mapping onto the schema: every schema feature gets a value, unmapped ones `uncertain`.

    Keys match feature names after folding case and punctuation ("Eye Spacing" -> eye_spacing).
    Values match a schema value as a whole word or phrase ("broad forehead" -> broad, "normal" ->
    typical, "yes" -> present). Returns the features and the `key=value` items that did not map.
    """
    features = {name: UNCERTAIN for name in schema.names}
    out_of_schema: list[str] = []
    if not isinstance(values, dict):
        return features, [f"(not a mapping: {values!r})"]
    by_key = {_fold(name): name for name in schema.names}
    for key, value in values.items():
        name = by_key.get(_fold(str(key)))
        if name is None:
            out_of_schema.append(f"{key}={value}")
            continue
        mapped = _map_value(value, list(schema[name].values))
        if mapped is None:
            out_of_schema.append(f"{key}={value}")
        else:
            features[name] = mapped
    return features, out_of_schema


def parse_raw_json(text: str) -> dict[str, Any] | None:
    """Return the first JSON object in model text (bare, in ```json fences or after prose), or None."""
    fenced = re.findall(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL | re.IGNORECASE)
    decoder = json.JSONDecoder()
    for candidate in [*fenced, text]:
        for start in (match.start() for match in re.finditer(r"\{", candidate)):
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _read_records(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"legacy annotation file {path} not found; pass the JSON file the earlier WGSY scripts wrote")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"legacy annotation file {path} is not valid UTF-8 JSON ({error})") from None
    if not isinstance(records, list):
        raise DataError(f"legacy annotation file {path} must hold a JSON list of records, not {type(records).__name__}")
    return records


def _resolve_image(image: str, root: Path) -> tuple[str | None, bool]:
    windows = PureWindowsPath(image)
    if "\\" in image or windows.drive:
        # Written on Windows (C:\data\ws\a.jpg or ws\a.jpg): read it with Windows rules.
        if not (windows.drive or windows.root):
            return "/".join(windows.parts), False
        parts = windows.parts[1:]
    else:
        candidate = Path(image).expanduser()
        if not candidate.is_absolute():
            return candidate.as_posix(), False
        try:
            return candidate.resolve().relative_to(root).as_posix(), False
        except ValueError:
            parts = candidate.parts[1:]
    # Written on another machine: the longest trailing part of the path that exists under the root.
    for start in range(len(parts)):
        tail = Path(*parts[start:])
        if (root / tail).is_file():
            return tail.as_posix(), True
    return None, False


def _record_label(value: Any, labels: LabelSet):
    if isinstance(value, bool) or isinstance(value, (int, float)):
        return labels.from_binary(int(value))
    if str(value).strip().lower() in _BINARY_TEXTS:
        return labels.from_binary(value)
    return labels.normalize(value)


def _manifest_row(record: dict[str, Any], relative: str, subject_id: str, label, source: str) -> dict[str, Any]:
    row = {"image": relative, "subject_id": subject_id, "label": label.label, "label_raw": label.raw,
           "source": source, "age": None, "sex": "", "ethnicity": "", "split": ""}
    for key, value in record.items():
        if key in _CONSUMED_KEYS or key in row or isinstance(value, (dict, list)):
            continue
        row[key] = "" if value is None else value
    for column in ("age", "sex", "ethnicity"):
        if column in record and record[column] not in (None, ""):
            row[column] = record[column]
    # Unrecognised sex codes stay as they are, and validation reports them.
    row["sex"] = _SEX_CODES.get(str(row["sex"]).strip().casefold(), row["sex"])
    return row


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    extra: list[str] = []
    for row in rows:
        extra.extend(key for key in row if key not in MANIFEST_COLUMNS and key not in extra)
    return MANIFEST_COLUMNS + extra


def _annotation(record: dict[str, Any], image_path: Path, relative: str, schema: FeatureSchema,
                file_name: str) -> AnnotationRecord | None:
    raw_text = next((str(record[key]) for key in RAW_TEXT_KEYS if record.get(key)), None)
    parsed: Any = record.get("parsed_annotation")
    if parsed is None and isinstance(record.get("annotation"), dict):
        parsed = record["annotation"]
    if parsed is None and raw_text is not None:
        parsed = parse_raw_json(raw_text)
    if parsed is None and raw_text is None:
        return None

    common = dict(image_sha256=file_sha256(image_path), image=relative, backend=LEGACY_BACKEND,
                  model=f"legacy:{file_name}", prompt_version=LEGACY_PROMPT_VERSION, mode=LEGACY_MODE, raw_text=raw_text)
    if not isinstance(parsed, dict):
        return AnnotationRecord(status="invalid", reason="no JSON object in the model text", **common)
    values = parsed.get("facial_features", parsed)
    if isinstance(values, dict):
        values = {key: value for key, value in values.items() if key not in _EXPLANATION_KEYS}
    features, out_of_schema = map_features(values, schema)
    explanation = next((str(parsed[key]) for key in _EXPLANATION_KEYS if isinstance(parsed.get(key), str)), None)
    mapped_any = isinstance(values, dict) and len(out_of_schema) < len(values)
    status = "ok" if mapped_any else "invalid"
    reason = None if mapped_any else "no feature in the annotation maps onto the feature schema"
    return AnnotationRecord(status=status, features=features, explanation=explanation, reason=reason,
                            out_of_schema=out_of_schema, **common)


def _has_annotation(record: dict[str, Any]) -> bool:
    return any(record.get(key) for key in ("parsed_annotation", "annotation", *RAW_TEXT_KEYS))


def _store_annotations(annotations: list[AnnotationRecord], path: Path) -> None:
    store = AnnotationStore(path)
    known = set(store.latest())
    added = 0
    for annotation in annotations:
        if annotation.key in known:
            continue
        store.append(annotation)
        known.add(annotation.key)
        added += 1
    log_written(path, f"legacy annotations ({added} added, {len(annotations) - added} already there)")


def _fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.casefold()).strip("_")


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.casefold()).split())


def _map_value(value: Any, allowed: list[str]) -> str | None:
    if isinstance(value, bool):
        value = "present" if value else "typical"
    words = _words(str(value))
    if words in _UNCERTAIN_WORDS:
        return UNCERTAIN
    if words in _NOT_VISIBLE_WORDS:
        return "not_visible" if "not_visible" in allowed else UNCERTAIN
    if words in _TYPICAL_WORDS:
        return TYPICAL
    if words in _PRESENT_WORDS and "present" in allowed:
        return "present"
    # A value named as a whole word or phrase inside the text; two different ones is ambiguous.
    found = {name for name in allowed if name not in (UNCERTAIN, TYPICAL)
             and re.search(rf"(?<![a-z0-9]){re.escape(_words(name))}(?![a-z0-9])", words)}
    return found.pop() if len(found) == 1 else None
