"""Drawing of one phantom face photograph with Pillow: SYNTHETIC test images, not patients.

A `Face` holds everything fixed for a subject (proportions, colours, the drawn feature values and
their strengths); a `Shot` holds what changes between photos of that subject (background, lighting,
pose, scale, open mouth, JPEG quality). `draw_photo` renders a face at twice the photo size and
downsamples, so edges are smooth.

Coordinates: face units, where the face is 2 wide (x from -1 to 1, positive to the image's right)
and y grows downwards from the face centre; `Face.unit` converts them to pixels.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from .features import TYPICAL

SUPERSAMPLE = 2
# Skin tones from light to dark, and hair and iris colours; each subject jitters its pick.
SKIN_TONES = [(246, 220, 200), (236, 200, 170), (224, 180, 150), (206, 160, 124), (180, 130, 96),
              (150, 104, 74), (118, 80, 56), (92, 62, 44)]
HAIR_COLOURS = [(20, 16, 14), (52, 36, 26), (96, 64, 40), (150, 110, 64), (200, 170, 110), (140, 60, 30),
                (150, 150, 150)]
IRIS_COLOURS = [(70, 46, 30), (110, 74, 40), (60, 100, 140), (80, 120, 80), (40, 30, 26)]


@dataclass
class Face:
    """Everything fixed for one subject."""

    features: dict[str, tuple[str, float]]  # feature -> (true value, strength 0..1)
    gain: float
    child: bool
    side: int  # the side one-sided features affect: -1 image left, +1 image right
    one_sided: frozenset[str]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    long_hair: bool
    ears_hidden: bool
    jitter: dict[str, float] = field(default_factory=dict)  # ordinary variation of typical proportions

    def amount(self, feature: str, value: str) -> float:
        """How far `value` of `feature` is drawn from typical: 0 if absent, else strength x gain."""
        drawn, strength = self.features.get(feature, (TYPICAL, 0.0))
        return strength * self.gain if drawn == value else 0.0

    def value(self, feature: str) -> str:
        return self.features.get(feature, (TYPICAL, 0.0))[0]


@dataclass
class Shot:
    """What changes between photos of one subject."""

    size: int
    background: tuple[tuple[int, int, int], tuple[int, int, int]]
    light: float  # left-right lighting slope
    brightness: float
    angle: float  # degrees
    scale: float
    shift: tuple[float, float]  # fraction of the image
    mouth_open: bool
    quality: int
    shirt: tuple[int, int, int]


def draw_photo(face: Face, shot: Shot) -> Image.Image:
    """Return the RGB photo of `face` taken as `shot` (before JPEG encoding)."""
    size = shot.size * SUPERSAMPLE
    layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    painter = _Painter(ImageDraw.Draw(layer), face, shot, size)
    painter.draw()
    layer = layer.rotate(shot.angle, resample=Image.BILINEAR, center=(size / 2, size * 0.55),
                         translate=(shot.shift[0] * size, shot.shift[1] * size))
    if shot.scale != 1.0:
        scaled = layer.resize((round(size * shot.scale),) * 2, Image.BILINEAR)
        offset = (size - scaled.width) // 2
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        layer.paste(scaled, (offset, offset)) if offset >= 0 else layer.paste(scaled.crop(
            (-offset, -offset, -offset + size, -offset + size)))
    photo = _background(shot, size)
    photo.alpha_composite(layer)
    photo = photo.convert("RGB").reduce(SUPERSAMPLE)
    return _light(photo, shot)


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


def _background(shot: Shot, size: int) -> Image.Image:
    top, bottom = (np.array(colour, dtype=np.float32) for colour in shot.background)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    pixels = top * (1 - ramp) + bottom * ramp
    pixels = np.broadcast_to(pixels, (size, size, 3)).astype(np.uint8)
    return Image.fromarray(pixels, "RGB").convert("RGBA")


def _light(photo: Image.Image, shot: Shot) -> Image.Image:
    pixels = np.asarray(photo, dtype=np.float32)
    ramp = np.linspace(1 - shot.light, 1 + shot.light, photo.width, dtype=np.float32)[None, :, None]
    pixels = np.clip(pixels * ramp * shot.brightness, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, channel * factor))) for channel in colour)


def _mix(first: tuple[int, int, int], second: tuple[int, int, int], weight: float) -> tuple[int, int, int]:
    return tuple(int(a * (1 - weight) + b * weight) for a, b in zip(first, second))


class _Painter:
    """Draws one face into an RGBA layer; one method per part, in painting order."""

    def __init__(self, draw: ImageDraw.ImageDraw, face: Face, shot: Shot, size: int):
        self.d = draw
        self.f = face
        self.shot = shot
        self.size = size
        self.unit = size * (0.3 if face.child else 0.28) * (1 + face.jitter.get("face", 0.0))
        self.cx = size / 2
        self.cy = size * (0.47 if face.child else 0.45)
        self.height_up = 1.25 if face.child else 1.2
        self.height_low = (1.0 if face.child else 1.25) * (1 + face.jitter.get("length", 0.0))
        self.line = max(1, round(size / 170))
        self._layout()

    def px(self, x: float, y: float) -> tuple[float, float]:
        return (self.cx + x * self.unit, self.cy + y * self.unit)

    def box(self, x: float, y: float, half_width: float, half_height: float) -> list[float]:
        left, top = self.px(x - half_width, y - half_height)
        right, bottom = self.px(x + half_width, y + half_height)
        return [left, top, right, bottom]

    def _layout(self) -> None:
        f, j = self.f, self.f.jitter
        self.forehead_width = 1 + 0.2 * f.amount("forehead", "broad") - 0.18 * f.amount("forehead", "narrow")
        self.eye_y = (0.05 if f.child else -0.12) + j.get("eyes", 0.0)
        self.eye_x = 0.40 + 0.16 * f.amount("eye_spacing", "wide") - 0.12 * f.amount("eye_spacing", "close")
        self.eye_w = (0.2 if f.child else 0.17) * (1 + j.get("eye_size", 0.0))
        self.nose_y = self.eye_y + (0.36 if f.child else 0.44) - 0.08 * f.amount("nasal_tip", "upturned")
        philtrum = ((0.14 if f.child else 0.17) + 0.14 * f.amount("philtrum_length", "long")
                    - 0.08 * f.amount("philtrum_length", "short"))
        self.mouth_y = self.nose_y + philtrum
        self.chin_scale = 1 - 0.16 * f.amount("chin_size", "small") + 0.14 * f.amount("chin_size", "prominent")
        self.chin_taper = 0.3 + 0.3 * f.amount("chin_size", "small") - 0.2 * f.amount("chin_size", "prominent")
        self.asymmetry = 0.2 * f.amount("facial_asymmetry", "present")

    def draw(self) -> None:
        self.neck()
        if self.f.long_hair:
            self.back_hair()
        self.ears()
        self.face_outline()
        self.forehead()
        self.top_hair()
        self.periorbital()
        for side in (-1, 1):
            self.eye(side)
            self.eyebrow(side)
        self.synophrys()
        self.nose()
        self.mouth()

    # --- head and hair

    def outline_points(self, grow: float = 1.0) -> list[tuple[float, float]]:
        points = []
        for step in range(96):
            angle = 2 * math.pi * step / 96
            cos, sin = math.cos(angle), math.sin(angle)
            if sin < 0:
                x, y = cos * self.forehead_width, sin * self.height_up
            else:
                x = cos * (1 - self.chin_taper * sin ** 2)
                y = sin * self.height_low * self.chin_scale
            if self.asymmetry and x * self.f.side > 0 and y > -0.3:
                # The affected side is smaller below the eyes (hemifacial microsomia).
                weight = min(1.0, (y + 0.3) / 0.6)
                x *= 1 - self.asymmetry * weight
                y *= 1 - 0.4 * self.asymmetry * weight
            points.append(self.px(x * grow, y * grow))
        return points

    def neck(self) -> None:
        skin = _shade(self.f.skin, 0.9)
        self.d.polygon([self.px(-0.42, 0.6), self.px(0.42, 0.6), self.px(0.48, 2.2), self.px(-0.48, 2.2)], fill=skin)
        self.d.ellipse(self.box(0, 2.5, 2.0, 0.9), fill=self.shot.shirt)

    def back_hair(self) -> None:
        hair = self.f.hair
        self.d.ellipse(self.box(0, -0.15, 1.28 * self.forehead_width, 1.5), fill=hair)
        self.d.rectangle(self.box(0, 0.75, 1.2, 0.9), fill=hair)

    def face_outline(self) -> None:
        self.d.polygon(self.outline_points(), fill=self.f.skin, outline=_shade(self.f.skin, 0.7), width=self.line)

    def forehead(self) -> None:
        prominent = self.f.amount("forehead", "prominent")
        if prominent:
            light = _mix(self.f.skin, (255, 255, 255), min(0.45, 0.25 * prominent))
            self.d.ellipse(self.box(0, -0.72, 0.55 + 0.2 * prominent, 0.22 + 0.1 * prominent), fill=light)

    def top_hair(self) -> None:
        f = self.f
        hairline = -0.62 * self.height_up + 0.24 * f.amount("hairline", "low") - 0.26 * f.amount("hairline", "high")
        cap = [point for point in self.outline_points(grow=1.07)]
        top = [point for point in cap if point[1] <= self.px(0, hairline)[1]]
        edge_y = self.px(0, hairline)[1]
        if len(top) < 3:
            return
        left = min(point[0] for point in top)
        right = max(point[0] for point in top)
        self.d.polygon(top + [(left, edge_y)] if top[0][0] > top[-1][0] else top + [(right, edge_y)], fill=f.hair)
        self.d.chord([left, edge_y - (right - left) * 0.06, right, edge_y + (right - left) * 0.06], 180, 360, fill=f.hair)
        if f.long_hair and f.ears_hidden:
            for side in (-1, 1):
                self.d.rectangle(self.box(side * 1.08 * self.forehead_width, 0.2, 0.16, 0.9), fill=f.hair)

    def ears(self) -> None:
        if self.f.ears_hidden:
            return
        for side in (-1, 1):
            self.ear(side)

    def ear(self, side: int) -> None:
        f = self.f
        affected = "ear_shape" not in f.one_sided or side == f.side
        position_affected = "ear_position" not in f.one_sided or side == f.side
        small = f.amount("ear_shape", "small") if affected else 0.0
        malformed = f.amount("ear_shape", "malformed") if affected else 0.0
        tag = f.amount("ear_shape", "preauricular_tag") if affected else 0.0
        low = f.amount("ear_position", "low_set") if position_affected else 0.0
        rotated = f.amount("ear_position", "posteriorly_rotated") if position_affected else 0.0

        scale = max(0.25, 1 - 0.42 * small - 0.3 * malformed)
        face_edge = 1 - (self.asymmetry * 0.6 if side == f.side else 0.0)
        x = side * (face_edge + 0.06)
        y = (self.eye_y + self.nose_y) / 2 + 0.06 + 0.3 * low
        half_w, half_h = 0.13 * scale, 0.3 * scale
        tilt = math.radians(18 * rotated) * side
        points = []
        for step in range(24):
            angle = 2 * math.pi * step / 24
            radius = 1.0
            if malformed:
                radius += 0.35 * malformed * (1 if step % 3 == 0 else -0.5)  # crumpled rim
            dx, dy = math.cos(angle) * half_w * radius, math.sin(angle) * half_h * radius
            dx, dy = dx * math.cos(tilt) - dy * math.sin(tilt), dx * math.sin(tilt) + dy * math.cos(tilt)
            points.append(self.px(x + side * half_w * 0.6 + dx, y + dy))
        skin = _shade(f.skin, 0.95)
        self.d.polygon(points, fill=skin, outline=_shade(f.skin, 0.6), width=self.line)
        inner = self.box(x + side * half_w * 0.6, y, half_w * 0.45, half_h * 0.55)
        self.d.arc(inner, 90 if side > 0 else -90, 270 if side > 0 else 90, fill=_shade(f.skin, 0.65), width=self.line)
        if tag:
            radius = 0.04 + 0.03 * tag
            self.d.ellipse(self.box(side * (face_edge - 0.04), y + 0.05, radius, radius), fill=_shade(f.skin, 0.9),
                           outline=_shade(f.skin, 0.6), width=self.line)

    # --- eyes and brows

    def periorbital(self) -> None:
        fullness = self.f.amount("periorbital_fullness", "present")
        if not fullness:
            return
        puffy = _shade(self.f.skin, 1 - 0.08 * min(fullness, 1.5))
        for side in (-1, 1):
            x = side * self.eye_x
            self.d.ellipse(self.box(x, self.eye_y + 0.1, self.eye_w * 1.15, 0.05 + 0.05 * fullness), fill=puffy,
                           outline=_shade(self.f.skin, 0.75), width=self.line)
            self.d.ellipse(self.box(x, self.eye_y - 0.06, self.eye_w * 1.2, 0.05 + 0.04 * fullness), fill=puffy)

    def eye_points(self, side: int, opening: float) -> tuple[list, list]:
        f = self.f
        slant = math.radians(16) * (f.amount("palpebral_fissure_slant", "upslanted")
                                    - f.amount("palpebral_fissure_slant", "downslanted"))
        height = self.eye_w * opening
        upper, lower = [], []
        for step in range(13):
            t = math.pi * step / 12
            local = -math.cos(t)  # -1 inner corner ... 1 outer corner
            x = side * (self.eye_x + local * self.eye_w)
            lift = -math.tan(slant) * local * self.eye_w
            upper.append(self.px(x, self.eye_y + lift - math.sin(t) * height))
            lower.append(self.px(x, self.eye_y + lift + math.sin(t) * height * 0.8))
        return upper, lower

    def eye(self, side: int) -> None:
        f = self.f
        upper, lower = self.eye_points(side, 0.48)
        self.d.polygon(upper + lower[::-1], fill=(245, 245, 240))
        iris = f.iris
        if f.value("iris_pattern") == "heterochromia" and side == f.side:
            iris = (120, 150, 190) if sum(f.iris) < 300 else (90, 60, 30)
        radius = self.eye_w * 0.42
        centre = (side * self.eye_x, self.eye_y)
        self.d.ellipse(self.box(*centre, radius, radius), fill=iris)
        self.iris_pattern(centre, radius)
        self.d.ellipse(self.box(*centre, radius * 0.42, radius * 0.42), fill=(10, 10, 10))
        # Lids: skin above and below the opening hides the iris outside it.
        lid = _shade(f.skin, 0.97)
        top = min(point[1] for point in upper)
        self.d.polygon(upper + [(upper[-1][0], top - 2 * radius * self.unit), (upper[0][0], top - 2 * radius * self.unit)],
                       fill=lid)
        bottom = max(point[1] for point in lower)
        self.d.polygon(lower + [(lower[-1][0], bottom + radius * self.unit), (lower[0][0], bottom + radius * self.unit)],
                       fill=lid)
        ptosis = f.amount("ptosis", "present")
        if ptosis:
            droop, _ = self.eye_points(side, 0.48 * (1 - 0.5 * min(ptosis, 1.6)))
            self.d.polygon(upper + droop[::-1], fill=_shade(f.skin, 0.93))
            upper = droop
        self.d.line(upper, fill=(40, 30, 30), width=self.line * 2)
        self.d.line(lower, fill=_shade(f.skin, 0.6), width=self.line)
        self.epicanthus(side, upper, lower)

    def iris_pattern(self, centre: tuple[float, float], radius: float) -> None:
        pattern = self.f.value("iris_pattern")
        if pattern == "stellate":
            light = _mix(self.f.iris, (255, 255, 255), 0.55)
            for spoke in range(8):
                angle = 2 * math.pi * spoke / 8
                end = (centre[0] + math.cos(angle) * radius * 0.95, centre[1] + math.sin(angle) * radius * 0.95)
                self.d.line([self.px(*centre), self.px(*end)], fill=light, width=self.line)
        elif pattern == "brushfield_spots":
            for spot in range(10):
                angle = 2 * math.pi * spot / 10
                x, y = centre[0] + math.cos(angle) * radius * 0.72, centre[1] + math.sin(angle) * radius * 0.72
                self.d.ellipse(self.box(x, y, radius * 0.12, radius * 0.12), fill=(250, 250, 250))

    def epicanthus(self, side: int, upper: list, lower: list) -> None:
        fold = self.f.amount("epicanthal_folds", "present")
        if not fold:
            return
        # A skin web over the inner corner (the first points of each lid run from the inner corner).
        reach = min(len(upper) - 1, 2 + round(3 * min(fold, 1.6)))
        web = [upper[0], upper[reach], lower[reach], lower[0]]
        inner = self.px(side * (self.eye_x - self.eye_w * 1.12), self.eye_y)
        self.d.polygon([inner] + web[1:3], fill=_shade(self.f.skin, 0.96))
        self.d.line([upper[reach], inner], fill=_shade(self.f.skin, 0.55), width=self.line * 2)

    def eyebrow(self, side: int) -> None:
        f = self.f
        thick, sparse = f.amount("eyebrows", "thick"), f.amount("eyebrows", "sparse")
        flare = f.amount("eyebrows", "medial_flaring")
        width = 0.035 + 0.045 * thick - 0.02 * sparse
        colour = _mix(f.hair, f.skin, min(0.7, 0.45 * sparse))
        y = self.eye_y - 0.2
        inner, outer = self.eye_x - self.eye_w * 1.05, self.eye_x + self.eye_w * 1.25
        points = []
        for step in range(9):
            t = step / 8
            x = inner + (outer - inner) * t
            arch = -0.06 * math.sin(math.pi * min(1.0, t * 1.3))
            lift = -0.08 * flare * (1 - t) ** 2  # inner ends flare upwards
            points.append(self.px(side * x, y + arch + lift))
        self.d.line(points, fill=colour, width=max(1, round(width * self.unit)))
        if flare:
            self.d.line(points[:3], fill=colour, width=max(1, round((width + 0.05 * flare) * self.unit)))

    def synophrys(self) -> None:
        joined = self.f.amount("eyebrows", "synophrys")
        if joined:
            y = self.eye_y - 0.2
            inner = self.eye_x - self.eye_w * 1.05
            self.d.line([self.px(-inner, y), self.px(inner, y)], fill=self.f.hair,
                        width=max(1, round((0.02 + 0.02 * joined) * self.unit)))

    # --- nose and mouth

    def nose(self) -> None:
        f = self.f
        dark = _shade(f.skin, 0.62)
        flat, wide = f.amount("nasal_bridge", "flat"), f.amount("nasal_bridge", "wide")
        upturned = f.amount("nasal_tip", "upturned")
        half = 0.13 + 0.11 * f.amount("nasal_tip", "broad") + 0.03 * flat
        if flat < 0.5:
            spread = 0.06 + 0.08 * wide
            start = self.eye_y + 0.05 + 0.2 * flat
            for side in (-1, 1):
                self.d.line([self.px(side * spread, start), self.px(side * half * 0.75, self.nose_y - 0.08)],
                            fill=_shade(f.skin, 0.8), width=self.line)
        else:
            # A depressed bridge: a soft crease between the eyes instead of a ridge.
            self.d.arc(self.box(0, self.eye_y + 0.06, 0.12, 0.05), 20, 160, fill=_shade(f.skin, 0.75), width=self.line)
        bulb = f.amount("nasal_tip", "bulbous")
        self.d.ellipse(self.box(0, self.nose_y - 0.02, half * 0.65 + 0.07 * bulb, 0.07 + 0.06 * bulb),
                       fill=_shade(f.skin, 1.04), outline=_shade(f.skin, 0.8), width=self.line)
        nostril_h = 0.025 + 0.04 * upturned
        for side in (-1, 1):
            self.d.ellipse(self.box(side * half * 0.55, self.nose_y + 0.04, 0.045 + 0.015 * upturned, nostril_h), fill=dark)

    def mouth(self) -> None:
        f = self.f
        asymmetric = f.amount("mouth_shape", "asymmetric")
        tongue = f.amount("mouth_shape", "open_with_protruding_tongue")
        wide_amount = f.amount("mouth_width", "wide")
        half = (0.24 if f.child else 0.28) - 0.1 * f.amount("mouth_width", "narrow")
        lip = max(0.01, 0.045 + 0.05 * f.amount("lip_fullness", "full") - 0.03 * f.amount("lip_fullness", "thin"))
        reach = {-1: half, 1: half}
        drop = {-1: 0.0, 1: 0.0}
        if "mouth_width" in f.one_sided:
            reach[f.side] += 0.2 * wide_amount
        else:
            reach = {side: value + 0.2 * wide_amount for side, value in reach.items()}
        reach[f.side] += 0.08 * asymmetric
        drop[f.side] += 0.1 * asymmetric
        y = self.mouth_y
        self.philtrum()
        lip_colour = _mix(f.skin, (180, 70, 80), 0.45)
        opening = 0.07 if (self.shot.mouth_open or tongue) else 0.0
        left, right = self.px(-reach[-1], y + drop[-1]), self.px(reach[1], y + drop[1])
        upper = [left, self.px(-0.4 * half, y - lip * 1.3), self.px(0, y - lip), self.px(0.4 * half, y - lip * 1.3), right]
        upper_inner = [right, self.px(0.4 * half, y), self.px(-0.4 * half, y), left]
        lower = [left, self.px(-0.45 * half, y + opening + lip * 1.4), self.px(0.45 * half, y + opening + lip * 1.4), right]
        lower_inner = [right, self.px(0.4 * half, y + opening), self.px(-0.4 * half, y + opening), left]
        if opening:
            self.d.polygon(upper_inner[::-1] + lower_inner[1:-1], fill=(60, 20, 25))
            self.teeth(half, y)
        self.d.polygon(upper + upper_inner[1:-1], fill=lip_colour)
        self.d.polygon(lower + lower_inner[1:-1], fill=_shade(lip_colour, 1.05))
        self.d.line([left, self.px(0, y), right] if not opening else [left, right], fill=_shade(lip_colour, 0.6),
                    width=self.line)
        if tongue:
            self.d.ellipse(self.box(0, y + opening + 0.06, 0.12 + 0.04 * tongue, 0.05 + 0.05 * tongue), fill=(215, 100, 110),
                           outline=(160, 60, 70), width=self.line)

    def teeth(self, half: float, y: float) -> None:
        f = self.f
        spaced, small = f.amount("dental_anomalies", "widely_spaced"), f.amount("dental_anomalies", "small_teeth")
        count = 6
        gap = 0.01 + 0.03 * spaced
        tooth_h = 0.04 * (1 - 0.45 * min(small, 1.5))
        tooth_w = (1.2 * half - gap * (count - 1)) / count * (1 - 0.3 * min(small, 1.5))
        start = -(count * tooth_w + (count - 1) * gap) / 2
        for index in range(count):
            x = start + index * (tooth_w + gap)
            self.d.rectangle([*self.px(x, y), *self.px(x + tooth_w, y + tooth_h)], fill=(245, 240, 225))

    def philtrum(self) -> None:
        colour = _shade(self.f.skin, 0.88)
        for side in (-1, 1):
            self.d.line([self.px(side * 0.04, self.nose_y + 0.08), self.px(side * 0.06, self.mouth_y - 0.05)],
                        fill=colour, width=self.line)
