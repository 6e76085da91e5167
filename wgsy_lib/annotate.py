"""01_annotate: describe the dysmorphic facial features of every photo of a cohort, coded to HPO.

The stage reads a cohort manifest, asks an annotator (the OpenAI API or a compatible server, a
local transformers model, or the OpenAI Batch API) for each photo's features in the schema of
params/features.yaml, validates every answer, and appends one record per photo to the annotation
store (see wgsy_lib.annotation_store). The store is the resume state: a rerun annotates only the
photos whose (content hash, backend, model, prompt version, mode) has no final record yet.

Reports (feature table and plot, agreement with reference annotations, phenopackets) live in
wgsy_lib.annotation_report, wgsy_lib.agreement and wgsy_lib.phenopacket_export.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from .annotation_backends.base import (AnnotationRequest, BackendReply, RequestFailed, RunStopped,
                                       encode_for_request)
from .annotation_schema import parse_answer
from .annotation_store import RETRYABLE_STATUSES, AnnotationRecord, AnnotationStore, annotation_key
from .config import StageConfig
from .errors import AnnotationError, ConfigError, ImageError
from .features import FeatureSchema, load_features
from .images import file_sha256
from .labels import UNKNOWN
from .log import log_written
from .manifest import data_root_for, read_manifest
from .prompts import DEFAULT_TEMPLATE, Prompt, build_prompt, check_template, prompt_version
from .paths import resolve_path

logger = logging.getLogger(__name__)


class AnnotateConfig(StageConfig):
    """Parameters of notebooks/01_annotate.ipynb."""

    stage: ClassVar[str] = "01_annotate"

    manifest: str = Field("", description="cohort manifest CSV to annotate (required)")
    data_root: str = Field("", description="folder the manifest's image paths are relative to; empty: from cohort.json")
    output_dir: str = Field("outputs/annotate", description="folder for the tables, plots and phenopackets")
    store: str = Field("", description="annotation store JSONL; empty: annotations.jsonl in output_dir")
    features_file: str = Field("params/features.yaml", description="feature schema YAML")
    labels_file: str = Field("params/labels.yaml", description="label classes YAML (OMIM ids for phenopackets)")
    backend: Literal["openai", "local", "batch"] = Field(
        "openai", description="openai: OpenAI API or a compatible server; local: transformers model; batch: OpenAI Batch API")
    model: str = Field("", description="model name on the server, or the folder of a local checkpoint (required)")
    base_url: str = Field("", description="URL of an OpenAI-compatible server (vLLM, Ollama, LM Studio); empty: api.openai.com")
    key_env_var: str = Field("OPENAI_API_KEY", description="NAME of the environment variable holding the API key")
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto", description="auto: strict JSON schema, falling back to plain JSON if the server rejects it")
    prompt_template: str = Field(DEFAULT_TEMPLATE, description="prompt template name (see wgsy_lib.prompts)")
    mode: Literal["blind", "label_conditioned"] = Field(
        "blind", description="blind: photo only; label_conditioned: the prompt names the diagnosis (augmentation only)")
    splits: list[str] = Field([], description="annotate only photos of these manifest splits; empty: all photos")
    limit: int = Field(0, ge=0, description="annotate at most this many photos (0: all), for a trial run")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once (openai backend)")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per request on rate limits, 5xx and timeouts")
    request_timeout_s: float = Field(60.0, gt=0, description="seconds before one request times out")
    max_retry_wait_s: float = Field(60.0, gt=0, description="maximum wait between two attempts, in seconds")
    max_answer_length: int = Field(1024, ge=1, description="output token limit of one answer")
    max_answer_length_cap: int = Field(4096, ge=1, description="token limit of the one retry of a truncated answer")
    retry_truncated: bool = Field(True, description="on a rerun, ask again for photos whose last answer was cut off (truncated)")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: most deterministic)")
    image_max_side: int = Field(1024, ge=64, description="photos are downscaled to this longer side (pixels) before sending")
    jpeg_quality: int = Field(90, ge=30, le=100, description="JPEG quality of the re-encoded photo")
    image_detail: Literal["auto", "low", "high"] = Field("auto", description="OpenAI image detail level")
    local_batch_size: int = Field(4, ge=1, description="photos per generate call (local backend)")
    local_dtype: Literal["auto", "bfloat16", "float32"] = Field("auto", description="weights dtype of the local model")
    batch_poll_s: float = Field(30.0, gt=0, description="first wait between two status checks of a Batch API job")
    batch_timeout_s: float = Field(86400.0, gt=0, description="give up waiting for Batch API jobs after this many seconds")
    max_error_fraction: float = Field(0.1, ge=0, le=1, description="the run fails when more photos than this fraction end in error")
    reference: str = Field("", description="reference annotations (CSV or JSONL) for agreement; empty: none")
    phenopackets: bool = Field(True, description="write one GA4GH Phenopacket per person")
    show_photos: bool = Field(False, description="show photos in the notebook's views (off: patient photos stay out of reports)")
    browser: bool = Field(True, description="offer the interactive browser (never in headless runs)")

    @field_validator("manifest")
    @classmethod
    def _manifest_set(cls, value: str) -> str:
        if not value:
            raise ValueError("set manifest to the cohort manifest CSV to annotate (see params/demo/01_annotate.yaml)")
        return value

    @field_validator("model")
    @classmethod
    def _model_set(cls, value: str) -> str:
        if not value:
            raise ValueError("set model to a model name on the server (gpt-4o-mini) or a local checkpoint folder")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https:// (for example http://127.0.0.1:8000/v1)")
        return value

    @field_validator("prompt_template")
    @classmethod
    def _template_known(cls, value: str) -> str:
        try:
            check_template(value)
        except ConfigError as error:
            raise ValueError(str(error)) from None
        return value

    @property
    def output_path(self) -> Path:
        return resolve_path(self.output_dir)

    @property
    def store_path(self) -> Path:
        return resolve_path(self.store) if self.store else self.output_path / "annotations.jsonl"

    @property
    def model_id(self) -> str:
        """The model as recorded in the store: a local checkpoint by its folder name, so moving it keeps the records."""
        return Path(self.model).name if self.backend == "local" else self.model

    @property
    def backend_id(self) -> str:
        # Batch API answers come from the same model and prompt as real-time ones, so they share keys.
        return "openai" if self.backend == "batch" else self.backend


@dataclass
class AnnotationItem:
    """One photo to annotate."""

    key: str
    image: str
    image_path: Path
    image_sha256: str
    label: str
    subject_id: str


@dataclass
class AnnotationPlan:
    """The work of one run: the photos without a final record, and how many are done already."""

    todo: list[AnnotationItem]
    done: int
    total: int
    prompt_version: str
    features: FeatureSchema
    store: AnnotationStore
    skipped: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"AnnotationPlan({len(self.todo)} to annotate, {self.done} already done of {self.total} photos, "
                f"prompt {self.prompt_version})")


@dataclass
class AnnotationRun:
    """The outcome of `run_annotation`: counts by status and the time taken."""

    counts: dict[str, int]
    seconds: float
    out_of_schema: int
    store: Path

    @property
    def attempted(self) -> int:
        return sum(self.counts.values())


def read_cohort(config: AnnotateConfig) -> tuple[Path, pd.DataFrame, Path]:
    """Return the manifest path, its rows (only the configured splits) and the data root of a run."""
    manifest_path = resolve_path(config.manifest)
    frame = read_manifest(manifest_path)
    root = data_root_for(manifest_path, config.data_root or None)
    if config.splits:
        frame = frame[frame["split"].isin(config.splits)]
    return manifest_path, frame, root


def plan_annotation(config: AnnotateConfig) -> AnnotationPlan:
    """Read the manifest, hash every photo and list those without a final record in the store."""
    features = load_features(config.features_file)
    version = prompt_version(config.prompt_template, features)
    manifest_path, frame, root = read_cohort(config)
    if config.mode == "label_conditioned":
        _check_labels_present(frame, manifest_path)

    store = AnnotationStore(config.store_path)
    retried = RETRYABLE_STATUSES if config.retry_truncated else RETRYABLE_STATUSES - {"truncated"}
    finished = {key for key, record in store.latest().items() if record.status not in retried}
    items: dict[str, AnnotationItem] = {}
    for row in tqdm(frame.itertuples(index=False), total=len(frame), desc="hashing photos"):
        path = root / row.image
        if not path.is_file():
            raise ImageError(f"manifest {manifest_path}: image {row.image} not found under data root {root}; "
                             "check data_root or the manifest's image column")
        sha = file_sha256(path)
        key = annotation_key(sha, config.backend_id, config.model_id, version, config.mode)
        # Byte-identical photos share one annotation; the first row stands for them.
        items.setdefault(key, AnnotationItem(key, row.image, path, sha, row.label, row.subject_id))

    todo = [item for item in items.values() if item.key not in finished]
    done = len(items) - len(todo)
    if config.limit:
        todo = todo[: config.limit]
    plan = AnnotationPlan(todo=todo, done=done, total=len(items), prompt_version=version, features=features, store=store)
    logger.info("%d unique photos: %d already annotated, %d to annotate with %s %s (prompt %s, mode %s)",
                plan.total, plan.done, len(todo), config.backend, config.model_id, version, config.mode)
    return plan


def run_annotation(config: AnnotateConfig, plan: AnnotationPlan | None = None, *, backend: Any = None) -> AnnotationRun:
    """Annotate every photo of the plan, appending one record per photo to the store."""
    plan = plan or plan_annotation(config)
    started = time.monotonic()
    if not plan.todo:
        logger.info("nothing to annotate: every photo has a final record in %s", plan.store.path)
        return AnnotationRun({}, 0.0, 0, plan.store.path)

    if config.backend == "batch":
        from .annotation_backends.batch import run_batch_job

        records = run_batch_job(config, plan, backend=backend)
    elif config.backend == "local":
        records = _run_local(config, plan, backend)
    else:
        records = _run_concurrent(config, plan, backend)

    counts: dict[str, int] = {}
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    out_of_schema = sum(len(record.out_of_schema) for record in records)
    run = AnnotationRun(counts, time.monotonic() - started, out_of_schema, plan.store.path)
    log_written(plan.store.path, f"annotation store ({_format_counts(counts)}; {out_of_schema} out-of-schema values)")
    _check_error_fraction(run, config)
    return run


def make_openai_backend(config: AnnotateConfig, features: FeatureSchema):
    """Return the OpenAI(-compatible) backend configured by `config`."""
    from .annotation_backends.openai_chat import OpenAIChatBackend, RetryPolicy

    retry = RetryPolicy(max_attempts=config.max_attempts, max_delay_s=config.max_retry_wait_s)
    return OpenAIChatBackend(model=config.model, features=features, base_url=config.base_url,
                             key_env_var=config.key_env_var, structured_output=config.structured_output,
                             timeout_s=config.request_timeout_s, temperature=config.temperature,
                             image_detail=config.image_detail, retry=retry)


def prompt_for(item: AnnotationItem, config: AnnotateConfig, features: FeatureSchema) -> Prompt:
    label = item.label if config.mode == "label_conditioned" else None
    return build_prompt(features, template=config.prompt_template, mode=config.mode, label=label)


def _run_concurrent(config: AnnotateConfig, plan: AnnotationPlan, backend: Any) -> list[AnnotationRecord]:
    backend = backend or make_openai_backend(config, plan.features)
    stop = threading.Event()
    records: list[AnnotationRecord] = []
    pending = iter(plan.todo)
    # Submit at most `concurrency` items at a time, so a stop leaves nothing queued behind it.
    with ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="annotate") as executor, \
            tqdm(total=len(plan.todo), desc="annotating", unit="photo") as progress:
        running: set[Future] = set()
        fatal: BaseException | None = None
        try:
            while True:
                while len(running) < config.concurrency and not stop.is_set():
                    item = next(pending, None)
                    if item is None:
                        break
                    running.add(executor.submit(annotate_item, item, backend, config, plan, stop))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        record = future.result()
                    except RunStopped as error:
                        stop.set()
                        fatal = fatal or error
                        continue
                    if record is not None:
                        records.append(record)
                    progress.update(1)
        except BaseException:
            stop.set()  # Ctrl-C: requests in flight finish or are lost; nothing new is sent
            raise
    if fatal is not None:
        raise fatal
    return records


def annotate_item(item: AnnotationItem, backend: Any, config: AnnotateConfig, plan: AnnotationPlan,
                  stop: threading.Event | None = None) -> AnnotationRecord | None:
    """Annotate one photo through `backend` and append its record; return None if the run stopped first."""
    if stop is not None and stop.is_set():
        return None
    started = time.monotonic()
    base = _record_fields(item, config, plan)
    try:
        encoded = encode_for_request(item.image_path, max_side=config.image_max_side, quality=config.jpeg_quality)
    except ImageError as error:
        return _append(plan.store, AnnotationRecord(**base, status="error", reason=str(error), seconds=0.0))

    request = AnnotationRequest(key=item.key, image_path=item.image_path, prompt=prompt_for(item, config, plan.features),
                                max_answer_length=config.max_answer_length, encoded=encoded)
    usage: dict[str, int] = {}
    notes: list[str] = []
    while True:
        try:
            reply = backend.annotate(request)
        except RequestFailed as error:
            return _append(plan.store, AnnotationRecord(**base, status="error", reason=error.reason, usage=usage or None,
                                                        seconds=round(time.monotonic() - started, 3)))
        _add_usage(usage, reply.usage)
        if _retry_truncated(reply, request, config, notes):
            continue
        record = record_from_reply(reply, base, plan.features, usage=usage, notes=notes,
                                   seconds=time.monotonic() - started)
        return _append(plan.store, record)


def record_from_reply(reply: BackendReply, base: dict[str, Any], features: FeatureSchema, *, usage: dict[str, int],
                      notes: list[str], seconds: float) -> AnnotationRecord:
    """Validate a backend's reply and turn it into a store record."""
    parsed = parse_answer(reply.text, features, refusal=reply.refusal, finish_reason=reply.finish_reason)
    reasons = [text for text in [*notes, parsed.reason] if text]
    raw = reply.text if reply.text is not None else reply.refusal
    return AnnotationRecord(**base, status=parsed.status, features=parsed.features, explanation=parsed.explanation,
                            raw_text=raw, reason="; ".join(reasons) or None, usage=usage or None,
                            seconds=round(seconds, 3), out_of_schema=parsed.out_of_schema)


def _retry_truncated(reply: BackendReply, request: AnnotationRequest, config: AnnotateConfig, notes: list[str]) -> bool:
    # One retry with twice the limit (at most max_answer_length_cap): enough for an answer that only
    # just overran, and bounded so a model that never stops does not burn tokens without end.
    if reply.finish_reason != "length" or notes:
        return False
    doubled = min(request.max_answer_length * 2, config.max_answer_length_cap)
    if doubled <= request.max_answer_length:
        return False
    notes.append(f"truncated at {request.max_answer_length} tokens, retried with {doubled}")
    request.max_answer_length = doubled
    return True


def _run_local(config: AnnotateConfig, plan: AnnotationPlan, backend: Any) -> list[AnnotationRecord]:
    from .annotation_backends.local import LocalBackend

    backend = backend or LocalBackend(config.model, dtype=config.local_dtype, temperature=config.temperature)
    records: list[AnnotationRecord] = []
    batches = [plan.todo[start:start + config.local_batch_size] for start in range(0, len(plan.todo), config.local_batch_size)]
    with tqdm(total=len(plan.todo), desc="annotating (local)", unit="photo") as progress:
        for batch in batches:
            records.extend(_annotate_local_batch(batch, backend, config, plan))
            progress.update(len(batch))
    return records


def _annotate_local_batch(batch: list[AnnotationItem], backend: Any, config: AnnotateConfig,
                          plan: AnnotationPlan) -> list[AnnotationRecord]:
    from .images import load_image

    started = time.monotonic()
    records: list[AnnotationRecord] = []
    requests: list[tuple[AnnotationItem, AnnotationRequest]] = []
    for item in batch:
        try:
            image = load_image(item.image_path).image
        except ImageError as error:
            records.append(_append(plan.store, AnnotationRecord(**_record_fields(item, config, plan), status="error",
                                                                reason=str(error), seconds=0.0)))
            continue
        requests.append((item, AnnotationRequest(key=item.key, image_path=item.image_path,
                                                 prompt=prompt_for(item, config, plan.features),
                                                 max_answer_length=config.max_answer_length, image=image)))
    if not requests:
        return records
    replies = backend.annotate_batch([request for _item, request in requests])
    notes: list[list[str]] = [[] for _ in requests]
    retry = [index for index, ((_item, request), reply) in enumerate(zip(requests, replies))
             if _retry_truncated(reply, request, config, notes[index])]
    if retry:
        again = backend.annotate_batch([requests[index][1] for index in retry])
        for index, reply in zip(retry, again):
            replies[index] = reply
    seconds = (time.monotonic() - started) / len(requests)
    for (item, _request), reply, item_notes in zip(requests, replies, notes):
        record = record_from_reply(reply, _record_fields(item, config, plan), plan.features, usage=dict(reply.usage),
                                   notes=item_notes, seconds=seconds)
        records.append(_append(plan.store, record))
    return records


def _record_fields(item: AnnotationItem, config: AnnotateConfig, plan: AnnotationPlan) -> dict[str, Any]:
    return {"image_sha256": item.image_sha256, "image": item.image, "backend": config.backend_id,
            "model": config.model_id, "prompt_version": plan.prompt_version, "mode": config.mode, "key": item.key}


def _append(store: AnnotationStore, record: AnnotationRecord) -> AnnotationRecord:
    store.append(record)
    if record.status != "ok":
        logger.info("%s: %s (%s)", record.image, record.status, record.reason)
    return record


def _add_usage(total: dict[str, int], usage: dict[str, int]) -> None:
    for name, value in usage.items():
        total[name] = total.get(name, 0) + int(value or 0)


def _check_labels_present(frame, manifest_path: Path) -> None:
    missing = frame[(frame["label"] == "") | (frame["label"] == UNKNOWN)]["image"].tolist()
    if missing:
        raise ConfigError(f"mode 'label_conditioned' needs a diagnosis for every photo, but {len(missing)} row(s) of "
                          f"{manifest_path} have no known label (first: {', '.join(missing[:5])}); fix their labels, "
                          "restrict `splits`, or use mode 'blind'")


def _check_error_fraction(run: AnnotationRun, config: AnnotateConfig) -> None:
    errors = run.counts.get("error", 0)
    if run.attempted and errors / run.attempted > config.max_error_fraction:
        raise AnnotationError(
            f"{errors} of {run.attempted} photos ended in error, more than max_error_fraction = "
            f"{config.max_error_fraction:g}. The records with their reasons are in {run.store} (status 'error'); "
            "fix the cause and rerun: finished photos are skipped, failed ones are tried again."
        )
    if errors:
        logger.warning("%d of %d photos ended in error (reasons in %s); a rerun retries them", errors, run.attempted, run.store)


def _format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "nothing new"
