"""Safe image loading, used by every stage so the annotator, the trainer and the evaluator see the
same upright RGB pixels.

`load_image` applies the EXIF orientation, converts every Pillow mode (grayscale, palette, CMYK,
LA, RGBA, 16-bit and 32-bit) to 8-bit RGB, downscales images above a pixel limit, and turns every
decoding failure into an `ImageError` that names the file and says what to do.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

# Images with more pixels than this are downscaled (aspect ratio kept) right after decoding.
# 16 megapixels keeps a modern phone photo nearly intact while bounding memory per image to ~48 MB.
DEFAULT_MAX_PIXELS = 16_000_000
# Files that claim more pixels than this are not decoded at all (a decompression bomb: a small
# file that expands to gigabytes). Pillow's own default limit is about 89 megapixels.
DEFAULT_BOMB_PIXELS = 180_000_000
# Transparent areas are composited onto white, the usual background of clinical photographs.
_BACKGROUND = (255, 255, 255)
_MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}


@dataclass(frozen=True)
class LoadedImage:
    """An image decoded for use: upright 8-bit RGB, with what was done to it."""

    image: Image.Image
    path: Path
    source_format: str | None
    source_mode: str
    source_size: tuple[int, int]
    rotated: bool
    downscaled: bool


def load_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               bomb_pixels: int = DEFAULT_BOMB_PIXELS) -> LoadedImage:
    """Decode `path` into an upright RGB image, or raise ImageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"image {path} not found; check the path in the manifest and the data root")

    try:
        with warnings.catch_warnings():
            # The size check below replaces Pillow's warning; Pillow still raises its own
            # DecompressionBombError above twice Image.MAX_IMAGE_PIXELS, caught below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as opened:
                width, height = opened.size
                if width * height > bomb_pixels:
                    raise ImageError(
                        f"image {path} claims {width}x{height} pixels, above the limit of {bomb_pixels:,} "
                        "(possible decompression bomb); resize it, or raise bomb_pixels if it is genuine"
                    )
                source_format, source_mode = opened.format, opened.mode
                opened.draft("RGB", _draft_size(opened.size, max_pixels))
                opened.load()
                image = opened.copy()
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise ImageError(f"image {path} is too large to decode safely ({error}); resize it before use") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path} is not an image Pillow can read (first bytes {_head(path)!r}); "
                         "remove it or convert it to JPEG or PNG") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"image {path} is truncated or corrupt ({error}); re-export the photo or remove it") from None

    rotated = _has_rotation(image)
    rgb = to_rgb(ImageOps.exif_transpose(image), path=path)
    downscaled = False
    if rgb.width * rgb.height > max_pixels:
        rgb = downscale(rgb, max_pixels)
        downscaled = True
    return LoadedImage(rgb, path, source_format, source_mode, (width, height), rotated, downscaled)


def to_rgb(image: Image.Image, *, path: str | Path = "<image>") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing transparency onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise ImageError(f"image {path} has mode {mode}, which cannot be converted to RGB ({error}); re-save it as RGB") from None


def downscale(image: Image.Image, max_pixels: int) -> Image.Image:
    """Return a copy of `image` scaled down (aspect kept) to at most `max_pixels` pixels."""
    scale = (max_pixels / (image.width * image.height)) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Return `image` scaled down so its longer side is at most `max_side` pixels."""
    if max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, *, image_format: str = "JPEG", quality: int = 90) -> tuple[bytes, str]:
    """Encode an RGB image; return the bytes and the MIME type of the format actually written."""
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, quality=quality)
    return buffer.getvalue(), _MIME_TYPES.get(image_format.upper(), f"image/{image_format.lower()}")


def file_sha256(path: str | Path, *, chunk_size: int = 1 << 20) -> str:
    """Return the SHA-256 hex digest of a file's bytes (the content hash used as an image's identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255, turning most medical grayscale images white.
    # Scale by the type's range instead (the data's own range for float images).
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
    elif image.mode == "I" and values.max(initial=0) > 65535:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = 0.0, 65535.0
    span = high - low if high > low else 1.0
    scaled = np.clip((values - low) / span * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def _draft_size(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    # JPEG draft mode decodes at 1/2, 1/4 or 1/8 scale when that still covers the target size,
    # which makes huge JPEGs far cheaper to load; other formats ignore it.
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = (max_pixels / (width * height)) ** 0.5
    return max(1, int(width * scale)), max(1, int(height * scale))


def _has_rotation(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - a broken EXIF block only means no rotation is known
        return False


def _head(path: Path, size: int = 8) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)
