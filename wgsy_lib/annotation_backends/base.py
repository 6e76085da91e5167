"""Types shared by every annotation backend: the request, the reply, the image encoding, and the two
kinds of failure (one photo failed, or the whole run must stop)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..errors import AnnotationError
from ..images import encode_image, fit_within, load_image
from ..prompts import Prompt


@dataclass(frozen=True)
class EncodedImage:
    """A photo as sent to a remote backend: upright, downscaled, re-encoded as JPEG."""

    data: bytes
    mime_type: str
    size: tuple[int, int]

    def data_url(self) -> str:
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass
class AnnotationRequest:
    """One photo to annotate, with its prompt and the output token limit of this attempt."""

    key: str
    image_path: Path
    prompt: Prompt
    max_answer_length: int
    image: Image.Image | None = None
    encoded: EncodedImage | None = None


@dataclass
class BackendReply:
    """A backend's reply to one request, before validation."""

    text: str | None
    finish_reason: str | None = None
    refusal: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    attempts: int = 1
    structured: bool = False


class RequestFailed(Exception):
    """One photo could not be annotated (retries used up, a rejected request); the run goes on."""

    def __init__(self, reason: str, *, attempts: int = 1):
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


class RunStopped(AnnotationError):
    """A failure no retry can fix (exhausted quota, rejected credentials); the run stops at once."""


def encode_for_request(path: str | Path, *, max_side: int, quality: int) -> EncodedImage:
    """Load a photo upright (EXIF applied), cap its longer side and re-encode it as JPEG.

    Re-encoding bounds the request size whatever the source file is (a 20 MB PNG, a 16-bit TIFF)
    and makes the MIME type follow the bytes actually sent rather than the file extension.
    """
    image = fit_within(load_image(path).image, max_side)
    data, mime_type = encode_image(image, image_format="JPEG", quality=quality)
    return EncodedImage(data=data, mime_type=mime_type, size=image.size)
