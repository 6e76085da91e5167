"""`wgsy import ...` and `wgsy validate ...`: build a cohort manifest and check it.

Every import writes four files into the folder of `--out`:

- the clean manifest (`--out`), holding the rows that passed validation;
- `imported.csv`, every row the importer built before validation (the problem report's `row` numbers
  are its lines);
- `problems.csv`, every problem with its row;
- `cohort.json`, the data root and the import settings.

Paths given on the command line are relative to the current folder, as in any shell command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from .cohort import (import_folders, import_legacy, import_utkface, merge_manifests, raise_if_problems,
                     summarize_problems, validate_cohort, write_problems)
from .cohort_common import ImportResult
from .cohort_validate import DEFAULT_WORKERS
from .labels import load_labels
from .manifest import data_root_for, read_manifest, write_manifest

IMPORTED_NAME = "imported.csv"
PROBLEMS_NAME = "problems.csv"
VALIDATION_PROBLEMS_NAME = "validation_problems.csv"


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)

    folders = kinds.add_parser("folders", help="a folder per class, optionally a folder per subject inside", description="a folder per class, optionally a folder per subject inside")
    folders.add_argument("root", help="folder holding one folder per class")
    folders.add_argument("--subject-pattern", default=None,
                         help="regular expression with a named group 'subject' that finds the person in a file name, "
                              "for photos directly in a class folder, e.g. '^(?P<subject>[^_]+)_'")
    folders.add_argument("--source", default=None, help="value of the source column (default: the folder's name)")

    utkface = kinds.add_parser("utkface", help="UTKFace photos (age_gender_race_datetime.jpg) as healthy controls", description="UTKFace photos (age_gender_race_datetime.jpg) as healthy controls")
    utkface.add_argument("root", help="folder holding the UTKFace photos (searched recursively)")

    legacy = kinds.add_parser("legacy", help="an annotation file of the earlier WGSY scripts (JSON list)", description="an annotation file of the earlier WGSY scripts (JSON list)")
    legacy.add_argument("file", help="the JSON file, e.g. train_ws_features.json")
    legacy.add_argument("--data-root", required=True, help="folder the records' image paths are relative to")
    legacy.add_argument("--annotations-out", default=None,
                        help="annotation store to keep the file's annotations in (default: legacy_annotations.jsonl "
                             "beside --out)")

    merge = kinds.add_parser("merge", help="combine manifests (e.g. clinic folders + UTKFace) under a common data root", description="combine manifests (e.g. clinic folders + UTKFace) under a common data root")
    merge.add_argument("manifests", nargs="+", help="manifest CSV files, each with its cohort.json")

    for sub in (folders, utkface, legacy, merge):
        sub.add_argument("--out", required=True, help="path of the clean manifest to write, e.g. "
                                                      "outputs/cohorts/NAME/manifest.csv")
        _add_common(sub)


def add_validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("manifest", help="manifest CSV to check")
    parser.add_argument("--data-root", default=None, help="folder the image paths are relative to "
                                                          "(default: from cohort.json beside the manifest)")
    parser.add_argument("--out", default=None, help="write the clean manifest (bad rows excluded) here")
    parser.add_argument("--report", default=None,
                        help=f"problem report CSV (default: {VALIDATION_PROBLEMS_NAME} beside the manifest)")
    _add_common(parser)


def run_import(args: argparse.Namespace) -> int:
    labels = load_labels(args.labels)
    out = _path(args.out)
    if args.kind == "folders":
        result = import_folders(_path(args.root), labels, subject_pattern=args.subject_pattern, source=args.source)
    elif args.kind == "utkface":
        result = import_utkface(_path(args.root))
    elif args.kind == "legacy":
        store = _path(args.annotations_out) if args.annotations_out else out.parent / "legacy_annotations.jsonl"
        result = import_legacy(_path(args.file), _path(args.data_root), labels, annotations_out=store)
    else:
        result = _merge([_path(name) for name in args.manifests])

    write_manifest(result.frame, out.parent / IMPORTED_NAME)
    clean, checked = validate_cohort(result.frame, result.data_root, labels, check_images=not args.no_image_check,
                                     workers=args.workers)
    problems = pd.concat([result.problem_frame(), checked], ignore_index=True) if len(result.problems) else checked
    report = write_problems(problems, out.parent / PROBLEMS_NAME)
    if args.strict:
        raise_if_problems(problems, report, what=f"import of {args.kind}")
    card = {**result.card, "photos": len(clean), "excluded": len(result.frame) - len(clean) + len(result.problems),
            "skipped_system_files": result.skipped_system_files}
    write_manifest(clean, out, data_root=result.data_root, card=card)
    _print_summary(out, clean, problems, report, result.skipped_system_files)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    labels = load_labels(args.labels)
    manifest_path = _path(args.manifest)
    frame = read_manifest(manifest_path)
    root = data_root_for(manifest_path, _path(args.data_root) if args.data_root else None)
    report = _path(args.report) if args.report else manifest_path.parent / VALIDATION_PROBLEMS_NAME
    clean, problems = validate_cohort(frame, root, labels, strict=args.strict, check_images=not args.no_image_check,
                                      report_path=report, workers=args.workers)
    if args.out:
        write_manifest(clean, _path(args.out), data_root=root, card={"validated_from": str(manifest_path)})
    print(f"{len(frame)} rows checked, {len(clean)} passed; {summarize_problems(problems)}")
    print(f"problem report: {report}")
    return 0


def _merge(paths: list[Path]) -> ImportResult:
    parts = [(read_manifest(path), data_root_for(path)) for path in paths]
    frame, root = merge_manifests(parts)
    # The sha256 column of a validated manifest is recomputed by the validation that follows.
    frame = frame.drop(columns=["sha256"], errors="ignore")
    return ImportResult(frame=frame, data_root=root, card={"importer": "merge", "merged": [str(p) for p in paths]})


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strict", action="store_true", help="fail on any problem instead of excluding bad rows")
    parser.add_argument("--labels", default=None, help="labels.yaml to use (default: params/labels.yaml)")
    parser.add_argument("--no-image-check", action="store_true",
                        help="only check that files exist and hash them; skip decoding every photo")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads that read and decode photos")


def _path(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _print_summary(out: Path, clean: pd.DataFrame, problems: pd.DataFrame, report: Path, skipped: int) -> None:
    counts = clean["label"].value_counts()
    print(f"manifest: {out} ({len(clean)} photos, {clean['subject_id'].nunique()} subjects)")
    for label, count in counts.items():
        print(f"  {label}: {count}")
    excluded = int((problems["action"] == "excluded").sum()) if len(problems) else 0
    print(f"problems: {len(problems)} ({summarize_problems(problems)}); {excluded} excluded; report: {report}")
    if skipped:
        print(f"skipped {skipped} hidden or system files")



