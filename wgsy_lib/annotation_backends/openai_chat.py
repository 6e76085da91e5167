"""The OpenAI backend: the OpenAI API, or any OpenAI-compatible server (vLLM, Ollama, LM Studio)
through `base_url`, with the official `openai` client.

The client's own retries are switched off (`max_retries=0`) because the policy here differs from
the client's: a 429 for an exhausted quota stops the run at once with a billing message instead of
being retried, a 429 for rate limiting waits as long as the server's Retry-After says, and 5xx
answers, timeouts and dropped connections are retried a bounded number of times with exponential
back-off and jitter.

The API key is read from an environment variable whose *name* is a parameter. It is handed to the
client and nowhere else: it is never logged, stored in a record or written to a file.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import openai

from ..annotation_schema import response_format
from ..errors import ConfigError
from ..features import FeatureSchema
from .base import AnnotationRequest, BackendReply, RequestFailed, RunStopped

logger = logging.getLogger(__name__)

STRUCTURED_MODES = ("auto", "json_schema", "json_object", "none")
# A local server that needs no key still makes the client want one; this placeholder is not secret.
PLACEHOLDER_KEY = "not-needed"
QUOTA_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry a request that failed for a passing reason."""

    max_attempts: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Return the wait before attempt `attempt + 1`: exponential with full jitter, capped."""
        return min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


class OpenAIChatBackend:
    """Annotate photos through chat completions; safe to call from several threads at once."""

    name = "openai"

    def __init__(self, *, model: str, features: FeatureSchema, base_url: str = "", key_env_var: str = "OPENAI_API_KEY",
                 structured_output: str = "auto", timeout_s: float = 60.0, temperature: float = 0.0,
                 image_detail: str = "auto", retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        if not model:
            raise ConfigError("model is empty; set the model name the server serves (for example gpt-4o-mini)")
        if structured_output not in STRUCTURED_MODES:
            raise ConfigError(f"structured_output {structured_output!r} is invalid; expected one of {', '.join(STRUCTURED_MODES)}")
        self.model = model
        self.features = features
        self.base_url = base_url
        self.temperature = temperature
        self.image_detail = image_detail
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._structured = structured_output
        self._lock = threading.Lock()
        self.client = openai.OpenAI(base_url=base_url or None, api_key=_read_key(key_env_var, base_url),
                                    max_retries=0, timeout=timeout_s)

    @property
    def structured_output(self) -> str:
        """The structured-output mode now in use (`auto` falls back to `none` once a server rejects it)."""
        return self._structured

    def build_body(self, request: AnnotationRequest) -> dict[str, Any]:
        """Return the chat-completion arguments for one request (also the body of a Batch API line)."""
        if request.encoded is None:
            raise ValueError("the request's image must be encoded before building its body")
        image_part = {"type": "image_url", "image_url": {"url": request.encoded.data_url(), "detail": self.image_detail}}
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": request.prompt.system},
                {"role": "user", "content": [{"type": "text", "text": request.prompt.user}, image_part]},
            ],
            "temperature": self.temperature,
        }
        # The OpenAI API itself wants max_completion_tokens (max_tokens is rejected by its reasoning
        # models); compatible servers such as Ollama and LM Studio only read max_tokens.
        # NOTE: the choice follows base_url, so an explicit https://api.openai.com/v1 gets max_tokens.
        body["max_completion_tokens" if not self.base_url else "max_tokens"] = request.max_answer_length
        if self._structured in ("auto", "json_schema"):
            body["response_format"] = response_format(self.features)
        elif self._structured == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    def annotate(self, request: AnnotationRequest) -> BackendReply:
        """Send one request with the retry policy; raise RequestFailed or RunStopped when it cannot succeed."""
        attempt = 0
        while True:
            attempt += 1
            body = self.build_body(request)
            try:
                completion = self.client.chat.completions.create(**body)
            except openai.APIStatusError as error:
                wait = self._handle_status_error(error, body, attempt)
            except (openai.APITimeoutError, openai.APIConnectionError) as error:
                wait = self._retry_or_fail(attempt, f"{type(error).__name__}: {error}")
            except openai.OpenAIError as error:
                # Anything else the client raises (an unreadable response body, for one) fails this
                # photo only; the record keeps the reason.
                raise RequestFailed(f"{type(error).__name__}: {_short(error)}", attempts=attempt) from None
            else:
                reply = reply_from_completion(completion)
                reply.attempts = attempt
                reply.structured = "response_format" in body and body["response_format"]["type"] == "json_schema"
                return reply
            if wait is not None:
                logger.info("request for %s: attempt %d failed, retrying in %.1f s", request.image_path.name, attempt, wait)
                self._sleep(wait)

    def _handle_status_error(self, error: openai.APIStatusError, body: dict[str, Any], attempt: int) -> float | None:
        status = error.status_code
        code = _error_code(error)
        if status == 429 and code in QUOTA_CODES:
            raise RunStopped(
                f"the API answered 429 {code}: the account's quota or credit is used up. This is a billing "
                "problem, not rate limiting, so the run stopped at once; add credit or raise the limit at the "
                "provider, then rerun (finished photos are kept and skipped)."
            )
        if status in (401, 403):
            raise RunStopped(f"the server rejected the credentials ({status} {code or ''}); check the API key "
                             "in the environment variable named by key_env_var, then rerun")
        if status == 429:
            wait = _retry_after_seconds(error)
            if attempt >= self.retry.max_attempts:
                raise RequestFailed(f"rate limited (429) on all {attempt} attempts", attempts=attempt)
            return min(wait, self.retry.max_delay_s) if wait is not None else self.retry.backoff(attempt)
        if status >= 500 or status == 408:
            return self._retry_or_fail(attempt, f"server error {status}")
        if status == 400 and "response_format" in body and self._structured == "auto" and _mentions_response_format(error):
            with self._lock:
                if self._structured == "auto":
                    logger.warning("the server at %s rejected response_format (%s); asking for plain JSON from now on "
                                   "and validating every answer", self.base_url or "api.openai.com", _short(error))
                    self._structured = "none"
            return 0.0
        raise RequestFailed(f"the server rejected the request ({status}): {_short(error)}", attempts=attempt)

    def _retry_or_fail(self, attempt: int, reason: str) -> float:
        if attempt >= self.retry.max_attempts:
            raise RequestFailed(f"{reason}; gave up after {attempt} attempts", attempts=attempt)
        return self.retry.backoff(attempt)


def reply_from_completion(completion: Any) -> BackendReply:
    """Turn a chat completion (an object or, from the Batch API, a dict) into a BackendReply."""
    if isinstance(completion, dict):
        completion = openai.types.chat.ChatCompletion.model_validate(completion)
    if not completion.choices:
        return BackendReply(text=None, finish_reason=None)
    choice = completion.choices[0]
    message = choice.message
    usage = {}
    if completion.usage is not None:
        usage = {"prompt_tokens": completion.usage.prompt_tokens or 0,
                 "completion_tokens": completion.usage.completion_tokens or 0}
    return BackendReply(text=message.content, finish_reason=choice.finish_reason,
                        refusal=getattr(message, "refusal", None), usage=usage)


def _read_key(key_env_var: str, base_url: str) -> str:
    key = os.environ.get(key_env_var, "")
    if key:
        return key
    if base_url:
        logger.info("environment variable %s is not set; sending a placeholder key to %s", key_env_var, base_url)
        return PLACEHOLDER_KEY
    raise ConfigError(f"environment variable {key_env_var} is not set; export your OpenAI API key in it before "
                      "starting Jupyter or papermill (keys are never parameters), or set base_url to a local server")


def _error_code(error: openai.APIStatusError) -> str | None:
    code = getattr(error, "code", None)
    if code:
        return str(code)
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("code") or inner.get("type")
    return None


def _retry_after_seconds(error: openai.APIStatusError) -> float | None:
    headers = error.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date; fall back to exponential back-off
    return None


def _mentions_response_format(error: openai.APIStatusError) -> bool:
    text = str(error.body if error.body is not None else error).lower()
    return any(word in text for word in ("response_format", "json_schema", "structured", "guided"))


def _short(error: Exception, limit: int = 300) -> str:
    text = str(error)
    return text if len(text) <= limit else text[:limit] + "..."
