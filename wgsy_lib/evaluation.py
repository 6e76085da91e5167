"""The 04_evaluate stage: every model on every file, metrics, model selection and the comparison.

One run evaluates any mix of the base model zero-shot (the baseline), explicit adapter folders and
the cells of a grid runs folder, optionally with their checkpoints. It runs them on a validation
file and any number of test files, in label-scoring mode, generation mode, or both. For each model x file x mode it
writes, under `output_dir/<model>/<file>/<mode>/`:

- predictions.jsonl: one line per example with the raw output, parsed answer, status and class
  probabilities (scoring);
- errors.jsonl: unparseable or unplaceable answers and photos that could not be loaded;
- metrics.json: `wgsy_lib.metrics.classification_metrics` plus the counts of skipped photos;
- confusion_matrix.png and, in scoring mode, roc.png.

Beside them: comparison.csv (one row per model x file x mode) and selection.json. The model is
selected on the validation file only; the selected model's test metrics are reported once with
confidence intervals, and every other model's test metrics are a secondary table, marked as such,
because choosing among them by test score would overstate the result.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from pydantic import Field, field_validator, model_validator

from .config import StageConfig
from .errors import ConfigError, DataError
from .inference import (EvalExample, ExampleError, example_record, generate_answers, read_eval_file,
                        score_labels)
from .answers import scoring_classes
from .labels import LabelSet, load_labels
from .log import log_written
from .metrics import classification_metrics
from .parsing import PARSED, parse_answer
from .paths import resolve_path
from .subsets import apply_subset

logger = logging.getLogger(__name__)

MODES = ("score", "generate")
SELECTION_METRICS = ("balanced_accuracy", "accuracy", "f1_macro", "auc_macro")
BASE_NAME = "base"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# Photos shown in the notebook are shrunk to this many pixels on the longer side.
PHOTO_MAX_SIDE = 256


class EvaluateConfig(StageConfig):
    """Parameters of notebooks/04_evaluate.ipynb."""

    stage: ClassVar[str] = "04_evaluate"

    base_model: str = Field("", description="base model folder or hub id (MedGemma, or the tiny model for the demo)")
    include_base: bool = Field(True, description="also evaluate the base model zero-shot, the baseline every adapter is compared with")
    adapters: list[str] = Field([], description="adapter folders (a run's adapter/ folder or the run folder itself)")
    runs_dir: str = Field("", description="grid runs folder; every finished cell in it is evaluated")
    include_checkpoints: bool = Field(False, description="also evaluate each cell's checkpoints/checkpoint-N adapters")
    val_file: str = Field("", description="validation JSONL used to select the model; empty skips selection")
    test_files: list[str] = Field([], description="test JSONL files (02_convert's test.jsonl, or others)")
    labels_file: str = Field("params/labels.yaml", description="labels.yaml with the classes and their synonyms")
    modes: list[str] = Field(["score", "generate"], description="'score' (class probabilities, AUC) and/or 'generate' (parsed answers)")
    selection_metric: str = Field("balanced_accuracy", description="validation metric that selects the model")
    selection_mode: str = Field("score", description="which mode's validation metric selects the model")
    batch_size: int = Field(8, ge=1, description="examples per forward pass; halved automatically on out-of-memory")
    max_new_tokens: int = Field(256, ge=1, description="generation limit in tokens; answers cut here are marked truncated")
    max_examples: int = Field(0, ge=0, description="evaluate only the first N examples of each file (0: all), for quick checks")
    subset_size: int = Field(0, ge=0, description="evaluate a seeded subset of this many examples of each test file, "
                             "stratified by label and grouped by subject (0: whole file)")
    subset_fraction: float = Field(0.0, ge=0, le=1, description="evaluate this fraction of each test file instead "
                                   "(0: whole file); set at most one of subset_size and subset_fraction")
    subset_seed: int = Field(0, description="seed of the test subset; the subset is written to output_dir/subsets")
    n_bootstrap: int = Field(1000, ge=0, description="bootstrap resamples (by subject) for confidence intervals; 0 turns them off")
    confidence: float = Field(0.95, gt=0, lt=1, description="confidence level of the bootstrap intervals")
    seed: int = Field(0, description="seed of the bootstrap resampling")
    zero_division: float = Field(0.0, ge=0, le=1, description="value given to undefined metrics (always reported as undefined)")
    max_error_fraction: float = Field(0.1, ge=0, le=1, description="fail the run when more than this fraction of photos in a file cannot be loaded")
    device: str = Field("auto", description="auto, cpu, cuda or mps")
    dtype: str = Field("auto", description="auto (bf16 on capable GPUs, else fp32), bf16 or fp32")
    offload_folder: str = Field("", description="folder for weights that do not fit on the GPU (offloaded to CPU RAM, "
                                "then this folder; slow); empty turns offloading off")
    output_dir: str = Field("", description="folder for predictions, metrics, plots and the comparison table")
    show_photos: bool = Field(False, description="show a few evaluated photos in the notebook (off: reports carry no patient photos)")
    n_photos: int = Field(4, ge=0, description="how many photos to show when show_photos is true")
    export_dir: str = Field("", description="folder for the selected adapter merged into the base model, for serving "
                            "(empty: no export)")
    export_dtype: str = Field("bf16", description="dtype of the merged export: bf16 or fp32")

    @field_validator("base_model", "output_dir")
    @classmethod
    def _required(cls, value: str, info) -> str:
        if not value.strip():
            hints = {"base_model": "the MedGemma folder, or the tiny model for a demo (params/demo/04_evaluate.yaml)",
                     "output_dir": "a folder such as outputs/evaluate/my_run"}
            raise ValueError(f"{info.field_name} is empty; set it to {hints[info.field_name]}")
        return value

    @field_validator("test_files")
    @classmethod
    def _some_test_files(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("no test files; list at least one JSONL file written by 02_convert (its test.jsonl)")
        return value

    @field_validator("modes")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        unknown = [mode for mode in value if mode not in MODES]
        if unknown or not value:
            raise ValueError(f"modes must be a non-empty list of {MODES}, got {value}")
        return value

    @field_validator("selection_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in SELECTION_METRICS:
            raise ValueError(f"expected one of {SELECTION_METRICS}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "EvaluateConfig":
        if self.selection_mode not in self.modes:
            raise ValueError(f"selection_mode {self.selection_mode!r} is not among modes {self.modes}; add it to modes")
        if self.selection_metric == "auc_macro" and self.selection_mode != "score":
            raise ValueError("selection_metric 'auc_macro' needs selection_mode 'score' (generation gives no probabilities)")
        if not (self.include_base or self.adapters or self.runs_dir):
            raise ValueError("nothing to evaluate: set include_base: true, adapters, or runs_dir")
        return self


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: the base model alone (adapter None) or with one adapter."""

    name: str
    adapter: Path | None = None
    run_dir: Path | None = None
    checkpoint: str | None = None

    @property
    def is_base(self) -> bool:
        return self.adapter is None


@dataclass(frozen=True)
class EvalFile:
    """One evaluation file, read and checked before any model is loaded."""

    name: str
    path: Path
    role: str  # "val" or "test"
    examples: list[EvalExample]

    @property
    def classes_format(self) -> str:
        return self.examples[0].answer_format


@dataclass
class EvaluationPlan:
    """The models and files of one run, all checked before any model is loaded."""

    config: EvaluateConfig
    labels: LabelSet
    models: list[ModelSpec]
    files: list[EvalFile]
    output_dir: Path

    def table(self) -> pd.DataFrame:
        rows = [{"model": spec.name, "adapter": str(spec.adapter or "(none: zero-shot baseline)")} for spec in self.models]
        models = pd.DataFrame(rows)
        files = ", ".join(f"{item.name} ({item.role}, {len(item.examples)} examples)" for item in self.files)
        models["files"] = files
        models["modes"] = ", ".join(self.config.modes)
        return models


@dataclass
class EvaluationResults:
    """Everything a run produced, for the notebook's tables and plots."""

    plan: EvaluationPlan
    metrics: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    directories: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    selection: dict[str, Any] = field(default_factory=dict)
    comparison: pd.DataFrame | None = None


# --- Planning ---------------------------------------------------------------------------------------


def plan_evaluation(config: EvaluateConfig) -> EvaluationPlan:
    """Find the models and read every file, so mistakes surface before any model is loaded."""
    labels = load_labels(config.labels_file)
    models = discover_models(config)
    files = _read_files(config, labels)
    output_dir = resolve_path(config.output_dir)
    logger.info("plan: %d model(s) x %d file(s) x %d mode(s)", len(models), len(files), len(config.modes))
    return EvaluationPlan(config, labels, models, files, output_dir)


def discover_models(config: EvaluateConfig) -> list[ModelSpec]:
    """List the base model (if included), the explicit adapters and the finished cells of runs_dir."""
    specs: list[ModelSpec] = [ModelSpec(BASE_NAME)] if config.include_base else []
    for entry in config.adapters:
        specs.append(_adapter_spec(resolve_path(entry), entry))
    if config.runs_dir:
        specs.extend(_grid_specs(resolve_path(config.runs_dir), include_checkpoints=config.include_checkpoints))

    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"04_evaluate: model name(s) {duplicates} occur twice (adapters and runs_dir overlap?); "
                          "list each adapter once")
    if not specs:
        raise ConfigError("04_evaluate: no model to evaluate; runs_dir has no finished cells and adapters is empty")
    return specs


def _adapter_spec(path: Path, entry: str) -> ModelSpec:
    if (path / "adapter" / ADAPTER_WEIGHTS).is_file():
        return ModelSpec(_slug(path.name), path / "adapter", run_dir=path)
    if (path / ADAPTER_WEIGHTS).is_file():
        name = path.parent.name if path.name == "adapter" else path.name
        return ModelSpec(_slug(name), path, run_dir=path.parent if path.name == "adapter" else None)
    raise ConfigError(f"04_evaluate: adapters entry {entry!r} ({path}) has no {ADAPTER_WEIGHTS} and no "
                      "adapter/ folder; point it at a finished training run or its adapter/ folder")


def _grid_specs(runs_dir: Path, *, include_checkpoints: bool) -> list[ModelSpec]:
    if not runs_dir.is_dir():
        raise ConfigError(f"04_evaluate: runs_dir {runs_dir} not found; point it at the folder the grid wrote its cells "
                          "into, or run the grid first (for the demo: wgsy grid params/demo/grid.yaml)")
    specs = []
    for cell in sorted(path for path in runs_dir.iterdir() if path.is_dir()):
        adapter = cell / "adapter"
        if not (adapter / ADAPTER_WEIGHTS).is_file() or not (cell / "metrics.json").is_file():
            if adapter.is_dir() or (cell / "run_card.json").is_file():
                logger.warning("skipped grid cell %s: not finished (needs adapter/%s and metrics.json)",
                               cell, ADAPTER_WEIGHTS)
            continue
        specs.append(ModelSpec(_slug(cell.name), adapter, run_dir=cell))
        if include_checkpoints:
            for checkpoint in sorted((cell / "checkpoints").glob("checkpoint-*"), key=_checkpoint_step):
                if (checkpoint / ADAPTER_WEIGHTS).is_file():
                    specs.append(ModelSpec(_slug(f"{cell.name}@{checkpoint.name}"), checkpoint, run_dir=cell,
                                           checkpoint=checkpoint.name))
    if not specs:
        logger.warning("runs_dir %s contains no finished grid cells", runs_dir)
    return specs


def _read_files(config: EvaluateConfig, labels: LabelSet) -> list[EvalFile]:
    entries = ([("val", config.val_file)] if config.val_file else []) + [("test", path) for path in config.test_files]
    paths = [resolve_path(path) for _role, path in entries]
    repeated = sorted({str(path) for path in paths if paths.count(path) > 1})
    if repeated:
        raise ConfigError(f"04_evaluate: {repeated} listed more than once in val_file and test_files; "
                          "list each file once (the validation file must not also be a test file)")
    stems = [path.stem for path in paths]
    files = []
    for (role, _entry), path in zip(entries, paths):
        name = path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}-{path.stem}"
        if role == "test":
            path = apply_subset(path, config.path("output_dir") / "subsets" / _slug(name), size=config.subset_size,
                                fraction=config.subset_fraction, seed=config.subset_seed)
        files.append(EvalFile(_slug(name), path, role, read_eval_file(path, labels, max_examples=config.max_examples)))
    return files


# --- Running ----------------------------------------------------------------------------------------


def run_evaluation(plan: EvaluationPlan) -> EvaluationResults:
    """Evaluate every model on every file in every mode, writing outputs; then select and compare."""
    from .model_loading import attach_adapter, detach_adapter, load_for_evaluation

    config = plan.config
    results = EvaluationResults(plan)
    base_model, processor = load_for_evaluation(config.base_model, device=config.device, dtype=config.dtype,
                                                offload_folder=config.offload_folder or None)
    for spec in plan.models:
        logger.info("evaluating %s", spec.name)
        model = base_model if spec.is_base else attach_adapter(base_model, spec.adapter)
        try:
            for eval_file in plan.files:
                for mode in config.modes:
                    evaluate_one(model, processor, spec, eval_file, mode, plan, results)
        finally:
            if not spec.is_base:
                base_model = detach_adapter(model)

    results.comparison = comparison_table(results)
    path = plan.output_dir / "comparison.csv"
    results.comparison.to_csv(path, index=False)
    log_written(path, "comparison of all models, files and modes", log=logger)
    results.selection = select_model(results)
    _check_error_rates(results)
    return results


def evaluate_one(model, processor, spec: ModelSpec, eval_file: EvalFile, mode: str, plan: EvaluationPlan,
                 results: EvaluationResults) -> dict[str, Any]:
    """Run one model on one file in one mode; write predictions, errors, metrics and plots."""
    config, labels = plan.config, plan.labels
    desc = f"{spec.name} {eval_file.name} {mode}"
    if mode == "score":
        run = score_labels(model, processor, eval_file.examples, labels, batch_size=config.batch_size, desc=desc)
        records = [_score_record(item) for item in run.results]
    else:
        run = generate_answers(model, processor, eval_file.examples, batch_size=config.batch_size,
                               max_new_tokens=config.max_new_tokens, desc=desc)
        records = [_generation_record(item, labels) for item in run.results]

    classes = scoring_classes(eval_file.classes_format, labels)
    metrics = _metrics_for(records, classes, mode, config)
    metrics.update(model=spec.name, adapter=str(spec.adapter) if spec.adapter else None, file=str(eval_file.path),
                   file_name=eval_file.name, role=eval_file.role, mode=mode, n_examples=len(eval_file.examples),
                   n_skipped=len(run.errors), batch_size_used=run.batch_size_used)

    directory = plan.output_dir / spec.name / eval_file.name / mode
    _write_outputs(directory, records, run.errors, metrics, title=desc)
    results.metrics[(spec.name, eval_file.name, mode)] = metrics
    results.directories[(spec.name, eval_file.name, mode)] = directory
    logger.info("%s: accuracy %.3f, balanced accuracy %.3f (chance %.3f), Unknown %.1f%%, %d photo(s) skipped",
                desc, metrics["accuracy"], metrics["balanced_accuracy"], metrics["chance"]["balanced_accuracy"],
                100 * metrics["unknown_rate"], len(run.errors))
    return metrics


def _score_record(scores) -> dict[str, Any]:
    record = example_record(scores.example)
    predicted = scores.predicted
    record.update(mode="score", predicted=predicted, correct=predicted == scores.example.label, status=PARSED,
                  probabilities=dict(zip(scores.classes, scores.probabilities)),
                  log_likelihoods=dict(zip(scores.classes, scores.log_likelihoods)))
    return record


def _generation_record(generation, labels: LabelSet) -> dict[str, Any]:
    parsed = parse_answer(generation.text, labels, truncated=not generation.finished)
    record = example_record(generation.example)
    record.update(mode="generate", predicted=parsed.label, correct=parsed.label == generation.example.label,
                  status=parsed.status, reason=parsed.reason, parsed=parsed.answer, method=parsed.method,
                  raw_output=generation.text, thinking=parsed.thinking, finished=generation.finished,
                  n_new_tokens=generation.n_new_tokens)
    return record


def _metrics_for(records: list[dict[str, Any]], classes: list[str], mode: str, config: EvaluateConfig) -> dict[str, Any]:
    y_true = [record["label"] for record in records]
    y_pred = [record["predicted"] for record in records]
    probabilities = None
    if mode == "score" and records:
        probabilities = [[record["probabilities"][name] for name in classes] for record in records]
    metrics = classification_metrics(
        y_true, y_pred, classes, probabilities=probabilities, subject_ids=[record["subject_id"] for record in records],
        n_bootstrap=config.n_bootstrap, confidence=config.confidence, seed=config.seed, zero_division=config.zero_division,
    )
    statuses = pd.Series([record["status"] for record in records], dtype=object)
    metrics["statuses"] = {str(key): int(value) for key, value in statuses.value_counts().items()}
    return metrics


def _write_outputs(directory: Path, records: list[dict[str, Any]], errors: list[ExampleError],
                   metrics: dict[str, Any], *, title: str) -> None:
    from .plots import plot_confusion_matrix, plot_roc_curves, save_figure

    directory.mkdir(parents=True, exist_ok=True)
    _write_jsonl(directory / "predictions.jsonl", records, "predictions")
    error_rows = [error.to_dict() for error in errors] + [
        {**{key: record[key] for key in ("line", "source", "image", "label", "subject_id")}, "stage": "parse",
         "status": record["status"], "error": record.get("reason"), "raw_output": record.get("raw_output")}
        for record in records if record["status"] != PARSED
    ]
    _write_jsonl(directory / "errors.jsonl", error_rows, "unparseable answers and skipped photos")
    path = directory / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
    log_written(path, "metrics", log=logger)

    save_figure(plot_confusion_matrix(metrics, title=title), directory / "confusion_matrix.png", "confusion matrix")
    roc = plot_roc_curves(metrics, title=title)
    if roc is not None:
        save_figure(roc, directory / "roc.png", "ROC curves")


def _write_jsonl(path: Path, rows: list[dict[str, Any]], what: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    log_written(path, f"{what} ({len(rows)} lines)", log=logger)


def _check_error_rates(results: EvaluationResults) -> None:
    limit = results.plan.config.max_error_fraction
    for (model, file_name, mode), metrics in results.metrics.items():
        fraction = metrics["n_skipped"] / max(1, metrics["n_examples"])
        if fraction > limit:
            directory = results.directories[(model, file_name, mode)]
            raise DataError(f"{metrics['n_skipped']} of {metrics['n_examples']} photos in {metrics['file']} could not be "
                            f"loaded ({fraction:.0%}, above max_error_fraction={limit}); see {directory / 'errors.jsonl'}, "
                            "fix or remove those photos, or raise max_error_fraction")


# --- Selection and tables ---------------------------------------------------------------------------


def select_model(results: EvaluationResults) -> dict[str, Any]:
    """Pick the model with the best validation score (adapters only, unless there are none); write selection.json."""
    plan = results.plan
    config = plan.config
    val_files = [item for item in plan.files if item.role == "val"]
    selection: dict[str, Any] = {"metric": config.selection_metric, "mode": config.selection_mode}
    if not val_files:
        logger.warning("no val_file: no model is selected, and every test score below is a comparison only")
        selection.update(selected=None, reason="no validation file given")
    else:
        candidates = [spec for spec in plan.models if not spec.is_base] or plan.models
        scores = {spec.name: _score(results.metrics[(spec.name, val_files[0].name, config.selection_mode)],
                                    config.selection_metric) for spec in candidates}
        # Ties go to the earlier model in the list (the order of adapters, then of grid cells).
        selected = max(scores, key=lambda name: (scores[name], -list(scores).index(name)))
        selection.update(selected=selected, validation_file=val_files[0].name, validation_scores=scores)
        selection["test"] = {
            item.name: _summary(results.metrics[(selected, item.name, mode)])
            for item in plan.files if item.role == "test" for mode in [config.selection_mode]
        }
        logger.info("selected %s on %s (%s %.3f)", selected, val_files[0].name, config.selection_metric, scores[selected])
    path = plan.output_dir / "selection.json"
    path.write_text(json.dumps(selection, indent=2), encoding="utf-8")
    log_written(path, "model selection", log=logger)
    return selection


def comparison_table(results: EvaluationResults) -> pd.DataFrame:
    """Build one row per model x file x mode with the headline scores, chance levels and failure counts."""
    rows = []
    for (model, file_name, mode), metrics in results.metrics.items():
        rows.append({"model": model, "file": file_name, "role": metrics["role"], "mode": mode,
                     **_summary(metrics, intervals=False)})
    return pd.DataFrame(rows)


def selected_model_table(results: EvaluationResults) -> pd.DataFrame:
    """Build the table of the selected model's test scores with intervals, beside the baseline and chance."""
    selection = results.selection
    config = results.plan.config
    if not selection.get("selected"):
        return pd.DataFrame([{"note": "no model selected: set val_file to select one on the validation split"}])
    rows = []
    for item in results.plan.files:
        if item.role != "test":
            continue
        names = [selection["selected"]] + ([BASE_NAME] if config.include_base and selection["selected"] != BASE_NAME else [])
        for name in names:
            metrics = results.metrics[(name, item.name, config.selection_mode)]
            label = "selected on validation" if name == selection["selected"] else "zero-shot baseline"
            rows.append({"model": name, "role": label, "file": item.name, **_summary(metrics)})
    return pd.DataFrame(rows)


def secondary_test_table(results: EvaluationResults) -> pd.DataFrame:
    """SECONDARY: every model's test scores, for inspection only; never choose a model from this table."""
    table = comparison_table(results)
    table = table[table["role"] == "test"].copy()
    table.insert(0, "note", "secondary: not for model selection")
    return table.reset_index(drop=True)


def per_class_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Per-class precision, recall (sensitivity), specificity, F1 and AUC, with macro and weighted rows."""
    rows = []
    chance = metrics["chance"]["per_class"]
    for name, values in metrics["per_class"].items():
        rows.append({"class": name, **values, "auc": (metrics.get("auc") or {}).get(name),
                     **{f"chance_{key}": value for key, value in chance[name].items()}, "chance_auc": 0.5})
    for average in ("macro", "weighted"):
        rows.append({"class": f"({average} average)", **metrics[average],
                     "auc": metrics.get("auc_macro") if average == "macro" else None})
    return pd.DataFrame(rows)


def errors_table(results: EvaluationResults, *, limit: int = 20) -> pd.DataFrame:
    """List the unparseable answers and skipped photos of the run (the first `limit` of them)."""
    rows = []
    for key, directory in results.directories.items():
        path = directory / "errors.jsonl"
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                rows.append({"model": key[0], "file": key[1], "mode": key[2], "line": row.get("line"),
                             "stage": row.get("stage"), "status": row.get("status", "error"),
                             "error": row.get("error"), "output": (row.get("raw_output") or "")[:120]})
    if not rows:
        return pd.DataFrame([{"note": "no unparseable answers and no skipped photos"}])
    table = pd.DataFrame(rows)
    logger.info("%d unparseable answers or skipped photos in total; showing the first %d", len(table), limit)
    return table.head(limit)


def show_plots(results: EvaluationResults) -> None:
    """Display the confusion matrices and ROC curves of the selected model and the baseline on the test files."""
    from .plots import show_image_file

    names = [results.selection.get("selected"), BASE_NAME if results.plan.config.include_base else None]
    if not names[0]:
        names = [spec.name for spec in results.plan.models]
    for key, directory in results.directories.items():
        model, _file_name, _mode = key
        if model not in names or results.metrics[key]["role"] != "test":
            continue
        for figure in ("confusion_matrix.png", "roc.png"):
            if (directory / figure).is_file():
                show_image_file(directory / figure)


def show_example_photos(results: EvaluationResults) -> pd.DataFrame:
    """Show a few evaluated photos with their true and predicted class, only when show_photos is true.

    Photos are marked as photos in the notebook output, so HTML reports leave them out unless
    exported with include_photos. No copy of a photo is written to disk.
    """
    from .images import encode_image, fit_within, load_image
    from .plots import PHOTO_KIND, show_png

    config = results.plan.config
    if not config.show_photos or config.n_photos == 0:
        return pd.DataFrame([{"note": "photos not shown (show_photos is false); reports stay free of patient photos"}])
    key = next(iter(results.directories))
    rows = []
    with open(results.directories[key] / "predictions.jsonl", encoding="utf-8") as handle:
        for line in list(handle)[: config.n_photos]:
            record = json.loads(line)
            image = fit_within(load_image(record["image"]).image, PHOTO_MAX_SIDE)
            show_png(encode_image(image, image_format="PNG")[0], kind=PHOTO_KIND)
            rows.append({"line": record["line"], "label": record["label"], "predicted": record["predicted"]})
    return pd.DataFrame(rows)


def selected_per_class_table(results: EvaluationResults) -> pd.DataFrame:
    """Per-class scores of the selected model (or the first model) on the first test file."""
    config = results.plan.config
    model = results.selection.get("selected") or results.plan.models[0].name
    test_file = next(item for item in results.plan.files if item.role == "test")
    table = per_class_table(results.metrics[(model, test_file.name, config.selection_mode)])
    table.insert(0, "model", model)
    return table


def _summary(metrics: dict[str, Any], *, intervals: bool = True) -> dict[str, Any]:
    chance = metrics["chance"]
    row: dict[str, Any] = {
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "chance_accuracy": max(chance["accuracy_uniform"], chance["accuracy_majority"]),
        "balanced_accuracy": metrics["balanced_accuracy"],
        "chance_balanced_accuracy": chance["balanced_accuracy"],
        "f1_macro": metrics["macro"]["f1"],
        "chance_f1_macro": chance["f1_macro"],
        "auc_macro": metrics.get("auc_macro"),
        "chance_auc": chance["auc"],
        "unknown_rate": metrics["unknown_rate"],
        "skipped_photos": metrics.get("n_skipped", 0),
    }
    if intervals:
        for name, interval in (metrics.get("intervals") or {}).items():
            row[f"{name}_ci"] = f"[{interval['low']:.3f}, {interval['high']:.3f}]"
    return row


def _score(metrics: dict[str, Any], name: str) -> float:
    value = metrics["macro"]["f1"] if name == "f1_macro" else metrics.get(name)
    return float("-inf") if value is None else float(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", name).strip("_") or "model"


def _checkpoint_step(path: Path) -> int:
    found = re.search(r"(\d+)$", path.name)
    return int(found.group(1)) if found else -1
