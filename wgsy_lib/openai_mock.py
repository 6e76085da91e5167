"""A small OpenAI-compatible server on 127.0.0.1, for tests, benchmarks and the offline demo of
the server backend.

It implements `POST /v1/chat/completions` and, for the Batch API, `POST /v1/files`,
`GET /v1/files/{id}/content`, `POST /v1/batches` and `GET /v1/batches/{id}`. Each chat request is
answered by the next scripted scenario in `MockOpenAIServer.script` (first in, first out), or by
`default` once the script is empty, so a test can play any sequence of answers and failures:

    ok, fenced, two_blocks, backticks, invalid, truncated, refusal, refusal_text, missing_fields,
    extra_fields, bad_values, rate_limit, quota, server_error, timeout, bad_request, unauthorized

Answers are valid feature values drawn deterministically from a hash of the image sent, so the
same photo always gets the same annotation. `latency_s` is added to every chat request.
It answers nothing but canned text: it is not a model.

Run it by hand with `python -m wgsy_lib.openai_mock --port 8000` to try the server backend offline.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .features import FeatureSchema, load_features

logger = logging.getLogger(__name__)

SCENARIOS = ("ok", "fenced", "two_blocks", "backticks", "invalid", "truncated", "refusal", "refusal_text",
             "missing_fields", "extra_fields", "bad_values", "rate_limit", "quota", "server_error", "timeout",
             "bad_request", "unauthorized")


@dataclass
class MockSettings:
    """Behaviour of the mock server; tests may change the fields while it runs."""

    default: str = "ok"
    latency_s: float = 0.0
    # Seconds a `timeout` scenario sleeps before answering; longer than the client's timeout.
    timeout_sleep_s: float = 2.0
    retry_after_s: float = 1.0
    # Answer in prose with fenced JSON whatever response_format asks (a server that ignores it).
    ignore_response_format: bool = False
    # Answer 400 to any request that carries response_format (a server that does not support it).
    reject_response_format: bool = False
    script: deque = field(default_factory=deque)


class MockOpenAIServer:
    """The server; use as a context manager, or call start() and stop()."""

    def __init__(self, *, features: FeatureSchema | None = None, port: int = 0, **settings: Any):
        self.features = features or load_features()
        self.settings = MockSettings(**settings)
        self.requests: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def script(self) -> deque:
        return self.settings.script

    def start(self) -> "MockOpenAIServer":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="mock-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "MockOpenAIServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def chat_requests(self) -> list[dict[str, Any]]:
        return [entry["body"] for entry in self.requests if entry["path"].endswith("/chat/completions")]

    def next_scenario(self) -> str:
        with self._lock:
            return self.settings.script.popleft() if self.settings.script else self.settings.default

    # Answers -------------------------------------------------------------------------------------

    def chat(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Return (status, headers, JSON body) for one chat-completion request."""
        settings = self.settings
        if settings.latency_s:
            time.sleep(settings.latency_s)
        scenario = self.next_scenario()
        if settings.reject_response_format and "response_format" in body:
            return 400, {}, _error("response_format is not supported by this server", "invalid_request_error", None)
        if scenario == "rate_limit":
            return 429, {"Retry-After": f"{settings.retry_after_s:g}"}, _error(
                "Rate limit reached for requests", "requests", "rate_limit_exceeded")
        if scenario == "quota":
            return 429, {}, _error("You exceeded your current quota, please check your plan and billing details.",
                                   "insufficient_quota", "insufficient_quota")
        if scenario == "server_error":
            return 500, {}, _error("The server had an error while processing your request.", "server_error", None)
        if scenario == "unauthorized":
            return 401, {}, _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        if scenario == "bad_request":
            return 400, {}, _error("Invalid image.", "invalid_request_error", "invalid_image")
        if scenario == "timeout":
            time.sleep(settings.timeout_sleep_s)
            scenario = "ok"

        answer = self.answer_for(body)
        if settings.ignore_response_format and scenario == "ok":
            scenario = "fenced"
        content, finish_reason, refusal = self._render(scenario, answer, body)
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "mock"),
            "choices": [{"index": 0, "finish_reason": finish_reason,
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 120, "total_tokens": 1020},
        }
        return 200, {}, completion

    def answer_for(self, body: dict[str, Any]) -> dict[str, Any]:
        """Return the valid annotation this server gives the image in `body`."""
        digest = hashlib.sha256(_image_url(body).encode("utf-8")).digest()
        values = {}
        for index, feature in enumerate(self.features):
            choices = list(feature.values)
            # Two photos in three get `typical`, the rest a value picked by the image hash.
            byte = digest[index % len(digest)]
            values[feature.name] = "typical" if byte % 3 else choices[byte % len(choices)]
        return {"features": values, "explanation": "Mock annotation derived from the image bytes."}

    def _render(self, scenario: str, answer: dict[str, Any], body: dict[str, Any]) -> tuple[str | None, str, str | None]:
        text = json.dumps(answer)
        if scenario == "ok":
            return text, "stop", None
        if scenario == "fenced":
            return f"Here is the annotation you asked for:\n```json\n{json.dumps(answer, indent=2)}\n```\nLet me know if you need more.", "stop", None
        if scenario == "two_blocks":
            return f"First attempt:\n```json\n{text}\n```\nCorrected:\n```json\n{text}\n```", "stop", None
        if scenario == "backticks":
            answer = dict(answer, explanation="Features such as `low_set` ears and a } brace in ```text```.")
            return f"```json\n{json.dumps(answer)}\n```", "stop", None
        if scenario == "invalid":
            return '{"features": {"forehead": "broad", "hairline": }, explanation: oops', "stop", None
        if scenario == "truncated":
            limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
            if limit >= 2048:
                return text, "stop", None
            return text[: len(text) // 3], "length", None
        if scenario == "refusal":
            return None, "stop", "I can't help with identifying or analysing people in photos."
        if scenario == "refusal_text":
            return "I'm sorry, but I can't help with analysing medical images of people.", "stop", None
        if scenario == "missing_fields":
            features = dict(list(answer["features"].items())[: len(answer["features"]) // 2])
            return json.dumps({"features": features, "explanation": "partial"}), "stop", None
        if scenario == "extra_fields":
            features = dict(answer["features"], skin_tone="fair", nose_ring="absent")
            return json.dumps({"features": features, "explanation": "extra", "diagnosis": "Down syndrome"}), "stop", None
        if scenario == "bad_values":
            features = dict(answer["features"], forehead="very broad and high", chin_size=3)
            return json.dumps({"features": features, "explanation": "odd values"}), "stop", None
        raise ValueError(f"unknown mock scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")

    # Batch API -----------------------------------------------------------------------------------

    def create_file(self, content: bytes, purpose: str, filename: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:16]}"
        with self._lock:
            self.files[file_id] = content
        return {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed"}

    def create_batch(self, request: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        lines = self.files[request["input_file_id"]].decode("utf-8").splitlines()
        outputs = []
        for line in lines:
            item = json.loads(line)
            status, _headers, body = self.chat(item["body"])
            outputs.append(json.dumps({"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": item["custom_id"],
                                       "response": {"status_code": status, "body": body}, "error": None}))
        output = self.create_file(("\n".join(outputs) + "\n").encode("utf-8"), "batch_output", "output.jsonl")
        batch = {"id": batch_id, "object": "batch", "endpoint": request["endpoint"], "errors": None,
                 "input_file_id": request["input_file_id"], "completion_window": request["completion_window"],
                 "status": "validating", "output_file_id": None, "error_file_id": None,
                 "created_at": int(time.time()), "metadata": request.get("metadata"),
                 "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                 "_output": output["id"], "_polls": 0}
        with self._lock:
            self.batches[batch_id] = batch
        return _public(batch)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            batch["_polls"] += 1
            # One poll in progress, then done: enough to exercise the client's polling loop.
            if batch["_polls"] == 1:
                batch["status"] = "in_progress"
            else:
                total = batch["request_counts"]["total"]
                batch.update(status="completed", output_file_id=batch["_output"],
                             request_counts={"total": total, "completed": total, "failed": 0})
            return _public(batch)


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in batch.items() if not key.startswith("_")}


def _error(message: str, error_type: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _image_url(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "image_url":
                    return part["image_url"]["url"]
    return ""


def _make_handler(server: MockOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            logger.debug("mock server: " + format, *args)

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            if self.path.endswith("/chat/completions"):
                body = json.loads(raw)
                with server._lock:
                    server.requests.append({"path": self.path, "body": body, "time": time.time()})
                try:
                    status, headers, payload = server.chat(body)
                except (BrokenPipeError, ConnectionResetError):
                    return
                self._send(status, payload, headers)
            elif self.path.endswith("/files"):
                fields = _parse_multipart(self.headers.get("Content-Type", ""), raw)
                content, filename = fields["file"]
                self._send(200, server.create_file(content, fields["purpose"][0].decode(), filename or "input.jsonl"))
            elif self.path.endswith("/batches"):
                self._send(200, server.create_batch(json.loads(raw)))
            else:
                self._send(404, _error(f"no route {self.path}", "invalid_request_error", None))

        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.rstrip("/").split("/")
            if "batches" in parts:
                batch = server.retrieve_batch(parts[-1])
                self._send(200, batch) if batch else self._send(404, _error("no such batch", "invalid_request_error", None))
            elif parts[-1] == "content" and parts[-2] in server.files:
                data = server.files[parts[-2]]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._send(404, _error(f"no route {self.path}", "invalid_request_error", None))

        def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to answer

    return Handler


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, tuple[bytes, str | None]]:
    message = email.parser.BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    fields = {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_payload(decode=True), part.get_filename())
    return fields


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve canned OpenAI-compatible answers on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat request")
    args = parser.parse_args(argv)
    server = MockOpenAIServer(port=args.port, latency_s=args.latency)
    logger.warning("mock OpenAI server on %s; stop it with Ctrl-C", server.base_url)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
