"""The OpenAI Batch API backend: for large jobs, at about half the price of real-time requests,
with results within the 24-hour completion window.

A job goes through five steps. The requests are written into JSONL input files, split so that none
exceeds the API's limits of 50,000 requests and 200 MB per file. Each file is uploaded and gets a
batch. The batches are polled with growing intervals until they end. Their output and error files
are downloaded, and every result is merged into the annotation store as an ordinary record.

The ids of submitted batches are kept in `batch_jobs.json` beside the store, so a run that is
interrupted while waiting picks up the same batches instead of paying for them twice.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Iterable

from ..annotation_store import AnnotationRecord
from ..errors import AnnotationError, ImageError
from ..log import log_written
from .base import AnnotationRequest, BackendReply, encode_for_request

logger = logging.getLogger(__name__)

# Limits of one Batch API input file (platform.openai.com, "Batch API"), with a margin on the
# size so the multipart upload itself stays below the limit.
MAX_REQUESTS_PER_FILE = 50_000
MAX_BYTES_PER_FILE = 190 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
TERMINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
# Polling starts at batch_poll_s and grows by this factor up to MAX_POLL_S between checks.
POLL_GROWTH = 1.5
MAX_POLL_S = 600.0
JOBS_FILE = "batch_jobs.json"


def split_batch_lines(lines: Iterable[str], *, max_requests: int = MAX_REQUESTS_PER_FILE,
                      max_bytes: int = MAX_BYTES_PER_FILE) -> list[list[str]]:
    """Group JSONL lines into files that each respect the request and byte limits."""
    groups: list[list[str]] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line_bytes = len(line.encode("utf-8")) + 1
        if line_bytes > max_bytes:
            raise AnnotationError(f"one Batch API request is {line_bytes:,} bytes, above the {max_bytes:,}-byte file "
                                  "limit; lower image_max_side or jpeg_quality")
        if current and (len(current) >= max_requests or size + line_bytes > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(line)
        size += line_bytes
    if current:
        groups.append(current)
    return groups


def run_batch_job(config: Any, plan: Any, *, backend: Any = None) -> list[AnnotationRecord]:
    """Annotate the plan's photos through the Batch API; return the records merged into the store."""
    from ..annotate import _append, _record_fields, make_openai_backend, prompt_for, record_from_reply

    backend = backend or make_openai_backend(config, plan.features)
    items = {item.key: item for item in plan.todo}
    folder = plan.store.path.parent / "batch"
    folder.mkdir(parents=True, exist_ok=True)
    jobs_path = plan.store.path.parent / JOBS_FILE
    jobs = _load_jobs(jobs_path, items)

    records: list[AnnotationRecord] = []
    submitted = {key for job in jobs for key in job["keys"]}
    lines = []
    for key, item in items.items():
        if key in submitted:
            continue
        try:
            encoded = encode_for_request(item.image_path, max_side=config.image_max_side, quality=config.jpeg_quality)
        except ImageError as error:
            records.append(_append(plan.store, AnnotationRecord(**_record_fields(item, config, plan), status="error",
                                                                reason=str(error))))
            continue
        request = AnnotationRequest(key=key, image_path=item.image_path, prompt=prompt_for(item, config, plan.features),
                                    max_answer_length=config.max_answer_length, encoded=encoded)
        lines.append(json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": backend.build_body(request)}))

    for number, group in enumerate(split_batch_lines(lines), start=1):
        jobs.append(_submit(backend.client, group, folder / f"input-{int(time.time())}-{number}.jsonl"))
        _save_jobs(jobs_path, jobs)
        log_written(jobs_path, "ids of the submitted Batch API jobs")

    for job in jobs:
        batch = _wait(backend.client, job["batch_id"], first_wait_s=config.batch_poll_s, timeout_s=config.batch_timeout_s)
        results = _download_results(backend.client, batch)
        for key in job["keys"]:
            item = items.get(key)
            if item is None:
                continue
            base = _record_fields(item, config, plan)
            outcome = results.get(key)
            # NOTE: a truncated batch answer is stored as truncated without the doubled-limit retry of
            # the real-time path; a rerun sends it again.
            if isinstance(outcome, BackendReply):
                record = record_from_reply(outcome, base, plan.features, usage=dict(outcome.usage), notes=["via Batch API"],
                                           seconds=0.0)
            else:
                reason = outcome or f"batch {batch.id} ended {batch.status} without a result for this photo"
                record = AnnotationRecord(**base, status="error", reason=reason)
            records.append(_append(plan.store, record))
        job["merged"] = True
        _save_jobs(jobs_path, jobs)
    return records


def _submit(client: Any, lines: list[str], path: Path) -> dict[str, Any]:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log_written(path, f"Batch API input ({len(lines)} requests)")
    with open(path, "rb") as handle:
        uploaded = client.files.create(file=handle, purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h",
                                  metadata={"source": "wgsy 01_annotate"})
    logger.info("submitted batch %s (%d requests, input file %s)", batch.id, len(lines), uploaded.id)
    return {"batch_id": batch.id, "input_file": str(path), "keys": [json.loads(line)["custom_id"] for line in lines],
            "merged": False}


def _wait(client: Any, batch_id: str, *, first_wait_s: float, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    wait_s = first_wait_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL_STATUSES:
            logger.info("batch %s ended %s (%s)", batch_id, batch.status, batch.request_counts)
            return batch
        if time.monotonic() + wait_s > deadline:
            raise AnnotationError(f"batch {batch_id} is still {batch.status} after {timeout_s:.0f} s (batch_timeout_s); "
                                  "rerun later to collect it: its id is kept in batch_jobs.json beside the store")
        logger.info("batch %s is %s; checking again in %.0f s", batch_id, batch.status, wait_s)
        time.sleep(wait_s)
        wait_s = min(wait_s * POLL_GROWTH, MAX_POLL_S)


def _download_results(client: Any, batch: Any) -> dict[str, BackendReply | str]:
    """Return custom_id -> reply for answered requests, or -> reason for failed ones."""
    from .openai_chat import reply_from_completion

    results: dict[str, BackendReply | str] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        text = client.files.content(file_id).text
        for line in text.splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            response = entry.get("response") or {}
            if response.get("status_code") == 200:
                results[entry["custom_id"]] = reply_from_completion(response["body"])
            else:
                error = entry.get("error") or (response.get("body") or {}).get("error") or {}
                results[entry["custom_id"]] = f"Batch API request failed ({response.get('status_code')}): {error.get('message', error)}"
    return results


def _load_jobs(path: Path, items: dict[str, Any]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    jobs = json.loads(path.read_text(encoding="utf-8"))
    pending = [job for job in jobs if not job.get("merged") and set(job["keys"]) & set(items)]
    if pending:
        logger.info("resuming %d submitted batch(es) from %s", len(pending), path)
    return pending


def _save_jobs(path: Path, jobs: list[dict[str, Any]]) -> None:
    # Written to a temporary file and renamed, so a kill mid-write never loses the submitted batch ids.
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(jobs, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)
