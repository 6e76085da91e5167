"""Safe image loading: orientation, every Pillow mode, size limits and broken files."""

import io

import numpy as np
import pytest
from PIL import Image

from wgsy_lib.errors import ImageError
from wgsy_lib.images import encode_image, file_sha256, fit_within, load_image, to_rgb

ORIENTATION_TAG = 0x0112


def _marked_image(width=40, height=20):
    """A landscape RGB image, red on the left half and blue on the right, so rotation is visible."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)
    pixels[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(pixels, mode="RGB")


def _save_with_orientation(path, orientation):
    image = _marked_image()
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    image.save(path, format="JPEG", exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize("orientation,expected_size", [
    (1, (40, 20)), (2, (40, 20)), (3, (40, 20)), (4, (40, 20)),
    (5, (20, 40)), (6, (20, 40)), (7, (20, 40)), (8, (20, 40)),
])
def test_exif_orientation_applied(tmp_path, orientation, expected_size):
    path = tmp_path / f"o{orientation}.jpg"
    _save_with_orientation(path, orientation)
    loaded = load_image(path)
    assert loaded.image.size == expected_size
    assert loaded.image.mode == "RGB"
    assert loaded.rotated == (orientation != 1)


def test_exif_orientation_3_turns_upside_down(tmp_path):
    path = tmp_path / "o3.jpg"
    _save_with_orientation(path, 3)
    image = load_image(path).image
    # Rotated 180 degrees: the red half moves to the right.
    assert image.getpixel((35, 10))[0] > 200
    assert image.getpixel((5, 10))[2] > 200


def test_exif_orientation_6_and_8_rotate_opposite_ways(tmp_path):
    _save_with_orientation(tmp_path / "o6.jpg", 6)
    _save_with_orientation(tmp_path / "o8.jpg", 8)
    six = load_image(tmp_path / "o6.jpg").image
    eight = load_image(tmp_path / "o8.jpg").image
    # 6 means "rotate 90 clockwise to view": the red left half ends up on top.
    assert six.getpixel((10, 5))[0] > 200
    assert six.getpixel((10, 35))[2] > 200
    # 8 means "rotate 90 counter-clockwise": the red half ends up at the bottom.
    assert eight.getpixel((10, 35))[0] > 200
    assert eight.getpixel((10, 5))[2] > 200


def test_grayscale_l_becomes_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.new("L", (8, 8), 77).save(path)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.source_mode == "L"
    assert loaded.image.getpixel((0, 0)) == (77, 77, 77)


def test_palette_without_transparency(tmp_path):
    path = tmp_path / "palette.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    loaded = load_image(path)
    assert loaded.source_mode == "P"
    assert loaded.image.mode == "RGB"
    assert loaded.image.getpixel((0, 0)) == (10, 200, 30)


def test_palette_transparency_composited_on_white(tmp_path):
    path = tmp_path / "palette_transparent.png"
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    image.putpixel((7, 7), 1)
    image.save(path, transparency=0)
    loaded = load_image(path).image
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((7, 7)) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(path, quality=100)
    loaded = load_image(path)
    assert loaded.source_mode == "CMYK"
    red, green, blue = loaded.image.getpixel((4, 4))
    assert red > 200
    assert green < 60
    assert blue < 60


def test_la_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    image = Image.new("LA", (8, 8), (0, 0))
    image.putpixel((1, 1), (50, 255))
    image.save(path)
    loaded = load_image(path).image
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 1)) == (50, 50, 50)


def test_rgba_composited_on_white(tmp_path):
    path = tmp_path / "rgba.png"
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.putpixel((2, 2), (0, 128, 0, 255))
    image.save(path)
    loaded = load_image(path).image
    assert loaded.mode == "RGB"
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((2, 2)) == (0, 128, 0)


def test_16_bit_grayscale_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.full((8, 8), 32768, dtype=np.uint16)
    values[0, 0] = 65535
    Image.fromarray(values).save(path)
    loaded = load_image(path)
    assert loaded.source_mode.startswith("I")
    # Pillow's own convert would clip 32768 to 255 (white); the loader scales it to mid-grey.
    assert loaded.image.getpixel((4, 4)) == (128, 128, 128)
    assert loaded.image.getpixel((0, 0)) == (255, 255, 255)


def test_1_bit_becomes_rgb(tmp_path):
    path = tmp_path / "bw.png"
    image = Image.new("1", (8, 8), 0)
    image.putpixel((3, 3), 1)
    image.save(path)
    loaded = load_image(path).image
    assert loaded.getpixel((0, 0)) == (0, 0, 0)
    assert loaded.getpixel((3, 3)) == (255, 255, 255)


def test_float_mode_uses_data_range():
    values = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)
    rgb = to_rgb(Image.fromarray(values, mode="F"))
    assert rgb.getpixel((0, 0)) == (0, 0, 0)
    assert rgb.getpixel((0, 1)) == (255, 255, 255)


def test_large_image_downscaled(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (400, 300), (1, 2, 3)).save(path)
    loaded = load_image(path, max_pixels=30_000)
    assert loaded.downscaled
    assert loaded.image.width * loaded.image.height <= 30_000
    assert loaded.source_size == (400, 300)
    # Aspect ratio kept within a pixel.
    assert abs(loaded.image.width / loaded.image.height - 4 / 3) < 0.02


def test_large_jpeg_downscaled_through_draft(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (200, 100, 50)).save(path)
    loaded = load_image(path, max_pixels=100_000)
    assert loaded.downscaled
    assert loaded.image.width * loaded.image.height <= 100_000


def test_bomb_limit_names_file(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("L", (2000, 2000), 0).save(path)
    with pytest.raises(ImageError) as caught:
        load_image(path, bomb_pixels=1_000_000)
    message = str(caught.value)
    assert str(path) in message
    assert "2000x2000" in message
    assert "decompression bomb" in message


def test_pillow_bomb_error_names_file(tmp_path, monkeypatch):
    path = tmp_path / "pillow_bomb.png"
    Image.new("L", (300, 300), 0).save(path)
    # Pillow raises DecompressionBombError above twice MAX_IMAGE_PIXELS, before WGSY's own check.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    assert "too large" in str(caught.value)


def test_truncated_jpeg_rejected_with_name(tmp_path):
    path = tmp_path / "cut.jpg"
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buffer, format="JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    assert "truncated or corrupt" in str(caught.value)


def test_text_file_named_jpg_rejected(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("patient list, not a photo")
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)
    assert "not an image" in str(caught.value)
    assert "b'patient '" in str(caught.value)


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_missing_file_rejected(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nowhere.jpg")


def test_png_named_jpg_reports_png(tmp_path):
    path = tmp_path / "really_png.jpg"
    Image.new("RGB", (8, 8), (5, 6, 7)).save(path, format="PNG")
    loaded = load_image(path)
    assert loaded.source_format == "PNG"
    assert loaded.image.getpixel((0, 0)) == (5, 6, 7)


@pytest.mark.parametrize("suffix,pillow_format", [
    (".webp", "WEBP"), (".bmp", "BMP"), (".tif", "TIFF"), (".gif", "GIF"), (".JPG", "JPEG"),
])
def test_common_formats_load(tmp_path, suffix, pillow_format):
    path = tmp_path / f"photo{suffix}"
    Image.new("RGB", (8, 8), (90, 90, 90)).save(path, format=pillow_format)
    loaded = load_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.source_format == pillow_format


def test_encode_image_reports_written_format():
    data, mime = encode_image(Image.new("RGB", (4, 4)), image_format="PNG")
    assert mime == "image/png"
    assert data.startswith(b"\x89PNG")


def test_fit_within_keeps_small_images():
    image = Image.new("RGB", (10, 5))
    assert fit_within(image, 20) is image
    assert fit_within(Image.new("RGB", (100, 50)), 20).size == (20, 10)


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    path = tmp_path / "bytes.bin"
    path.write_bytes(b"abc" * 1000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1000).hexdigest()
