"""The phantom cohort: SYNTHETIC drawn face photographs for running and testing the pipeline offline.

Every class of params/labels.yaml with a `phenotype` gets subjects whose drawn geometry follows the
class's profile in params/phantom.yaml (which feature values show, how often). Features vary in
strength and are sometimes absent; skin tone, hair, proportions (child or adult), background,
lighting, pose, scale and JPEG quality vary by subject and photo. A few exact and resized or
re-encoded copies are planted under other subject ids and flagged, for duplicate detection.

Written into the output folder:

    README.md           says the cohort is synthetic and how it was made
    manifest.csv        the cohort manifest (wgsy_lib.manifest), source "phantom", plus free columns
                        synthetic, phenotype, expressivity, planted_duplicate_of, duplicate_kind
    cohort.json         data root and the generation settings
    annotations.jsonl   reference annotations with the true drawn feature values, in the format
                        01_annotate writes (backend "phantom-reference", mode "blind": they come from
                        the drawing, not from anyone who knew the label)
    images/*.jpg        the photos

Output is a pure function of the settings: the same seed gives byte-identical files. The cohort
tests the pipeline; it says nothing about real patients.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from .annotation_store import AnnotationRecord
from .errors import ConfigError
from .features import FeatureSchema, load_features
from .labels import LabelSet, load_labels
from .log import log_written
from .manifest import write_manifest
from .paths import cache_dir
from .phantom_draw import HAIR_COLOURS, IRIS_COLOURS, SKIN_TONES, Face, Shot, draw_photo, encode_jpeg
from .phantom_profiles import ProfileSet, expressivity_preset, load_profiles, sample_features

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
# The modules whose code decides the drawn pixels; their text is part of the cache key.
_SOURCE_FILES = ("phantom.py", "phantom_draw.py", "phantom_profiles.py")
SOURCE = "phantom"
REFERENCE_BACKEND = "phantom-reference"
REFERENCE_MODEL = "phantom-v1"
REFERENCE_PROMPT_VERSION = "reference"
# A fixed creation time keeps the reference annotations byte-identical between runs.
REFERENCE_CREATED = "2000-01-01T00:00:00+00:00"
DUPLICATE_KINDS = ("exact", "resized", "reencoded")
CHILD_SHARE = 0.5
# Middle colours that presets with little colour nuisance (Expressivity.nuisance below 1) pull towards.
SKIN_MIDDLE = (215, 172, 140)
HAIR_MIDDLE = (60, 42, 30)
BACKGROUND_MIDDLE = (150, 160, 170)
SHIRT_MIDDLE = (90, 110, 140)


@dataclass(frozen=True)
class PhantomSettings:
    """Everything that decides the cohort's files; its hash names the cache folder."""

    subjects_per_class: int = 8
    photos_per_subject: tuple[int, int] = (2, 4)
    expressivity: str = "realistic"
    image_size: int = 192
    seed: int = 0
    duplicate_rate: float = 0.03

    def key(self, *inputs: str) -> str:
        payload = json.dumps({**asdict(self), "generator": GENERATOR_VERSION, "inputs": inputs}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class PhantomCohort:
    """Where a written phantom cohort's files are."""

    root: Path
    manifest: Path
    annotations: Path
    readme: Path
    photos: int
    subjects: int


@dataclass(frozen=True)
class _Job:
    """One subject to draw; picklable so workers can draw subjects in parallel."""

    subject_id: str
    label: str
    phenotype: str
    number: int
    settings: PhantomSettings
    profiles: ProfileSet
    schema: FeatureSchema
    one_sided: frozenset[str]
    images_dir: str


def make_phantom_cohort(out_dir: str | Path, *, settings: PhantomSettings | None = None, labels_path=None,
                        profiles_path=None, features_path=None, workers: int | None = None, overwrite: bool = False,
                        **overrides) -> PhantomCohort:
    """Draw a phantom cohort into `out_dir` and return where its files are."""
    settings = settings or phantom_settings(**overrides)
    out_dir = Path(out_dir)
    _prepare_folder(out_dir, overwrite)
    labels = load_labels(labels_path)
    schema = load_features(features_path)
    profiles = load_profiles(profiles_path, features=schema)
    jobs = _plan_subjects(settings, labels, profiles, schema, out_dir / "images")

    rows = _draw_all(jobs, workers)
    rows += _plant_duplicates(rows, settings, out_dir)
    frame = pd.DataFrame([row["manifest"] for row in rows])
    card = {"synthetic": True, "generator": f"wgsy phantom v{GENERATOR_VERSION}", "settings": asdict(settings),
            "profiles": profiles.source, "note": "SYNTHETIC drawn faces for testing the pipeline; not patients"}
    manifest = write_manifest(frame, out_dir / "manifest.csv", data_root=out_dir, card=card)
    annotations = _write_reference_annotations(rows, out_dir / "annotations.jsonl")
    readme = _write_readme(out_dir, settings, frame)
    return PhantomCohort(root=out_dir, manifest=manifest, annotations=annotations, readme=readme,
                         photos=len(frame), subjects=frame["subject_id"].nunique())


def phantom_settings(**overrides) -> PhantomSettings:
    """Return checked settings; `photos_per_subject` may be a number or a (fewest, most) pair."""
    known = set(PhantomSettings.__dataclass_fields__)
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown phantom setting(s) {unknown}; known settings are {sorted(known)}")
    photos = overrides.get("photos_per_subject", PhantomSettings.photos_per_subject)
    if isinstance(photos, int):
        photos = (photos, photos)
    photos = tuple(int(count) for count in photos)
    overrides["photos_per_subject"] = photos
    settings = PhantomSettings(**overrides)
    expressivity_preset(settings.expressivity)
    if len(photos) != 2 or not 1 <= photos[0] <= photos[1] <= 20:
        raise ConfigError(f"phantom photos_per_subject {photos} must be a number or a (fewest, most) pair between 1 and 20")
    if not 1 <= settings.subjects_per_class <= 10_000:
        raise ConfigError(f"phantom subjects_per_class {settings.subjects_per_class} must be between 1 and 10000")
    if not 48 <= settings.image_size <= 1024:
        raise ConfigError(f"phantom image_size {settings.image_size} must be between 48 and 1024 pixels")
    if not 0 <= settings.duplicate_rate <= 0.5:
        raise ConfigError(f"phantom duplicate_rate {settings.duplicate_rate} must be between 0 and 0.5")
    return settings


def phantom_cohort_path(*, root: str | Path | None = None, workers: int | None = None, **settings) -> PhantomCohort:
    """Return the cached cohort with these settings, drawing it first if not cached."""
    resolved = phantom_settings(**settings)
    folder = Path(root) if root is not None else cache_dir() / "phantom"
    target = folder / f"{resolved.expressivity}-{cache_key(resolved)}"
    if not (target / "annotations.jsonl").is_file():
        staging = folder / f".{target.name}.{os.getpid()}"
        make_phantom_cohort(staging, settings=resolved, workers=workers, overwrite=True)
        _move_into_place(staging, target)
    frame = pd.read_csv(target / "manifest.csv", dtype=str, keep_default_na=False)
    return PhantomCohort(root=target, manifest=target / "manifest.csv", annotations=target / "annotations.jsonl",
                         readme=target / "README.md", photos=len(frame), subjects=frame["subject_id"].nunique())


def cache_key(settings: PhantomSettings) -> str:
    """Return the identity of a cohort drawn with `settings` by this code from these params files.

    The drawing code is part of the key, so a cached cohort is redrawn after any change to how
    faces are drawn, not only after a change of settings or of GENERATOR_VERSION.
    """
    inputs = [_file_digest(path) for path in ("labels.yaml", "features.yaml", "phantom.yaml")]
    package = Path(__file__).resolve().parent
    source = hashlib.sha256(b"".join((package / name).read_bytes() for name in _SOURCE_FILES)).hexdigest()[:12]
    return settings.key(*inputs, source)


def _file_digest(name: str) -> str:
    from .paths import params_dir

    return hashlib.sha256((params_dir() / name).read_bytes()).hexdigest()[:12]


def _move_into_place(staging: Path, target: Path) -> None:
    # The manifest's data root names the folder it was written in; point it at the final folder.
    card_path = staging / "cohort.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["data_root"] = str(target.resolve())
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    try:
        os.replace(staging, target)
    except OSError:
        # Another process finished the same cohort first; its files are identical.
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "annotations.jsonl").is_file():
            raise


def _prepare_folder(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ConfigError(f"phantom output folder {out_dir} already exists and is not empty; "
                              "choose a new folder or pass overwrite=True (--overwrite) to replace it")
        shutil.rmtree(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)


def _plan_subjects(settings: PhantomSettings, labels: LabelSet, profiles: ProfileSet, schema: FeatureSchema,
                   images_dir: Path) -> list[_Job]:
    drawable = [label_class for label_class in labels.classes if label_class.phenotype]
    missing = [f"{c.name} ({c.phenotype})" for c in drawable if c.phenotype not in profiles.profiles]
    if missing:
        raise ConfigError(f"labels.yaml names phenotype(s) {missing} that have no profile in {profiles.source}; "
                          "add a profile for each, or remove `phenotype` from those classes")
    if not drawable:
        raise ConfigError(f"no class in {labels.source} has a `phenotype`; the phantom has nothing to draw")
    slots = [(label_class, index) for label_class in drawable for index in range(settings.subjects_per_class)]
    # Neutral subject ids in shuffled order, so neither id nor file name gives the class away.
    order = np.random.default_rng([settings.seed, 7]).permutation(len(slots))
    jobs = []
    for number, slot in enumerate(order):
        label_class, _ = slots[slot]
        profile = profiles.profiles[label_class.phenotype]
        jobs.append(_Job(subject_id=f"PH{number + 1:04d}", label=label_class.name, phenotype=label_class.phenotype,
                         number=number, settings=settings, profiles=profiles, schema=schema,
                         one_sided=frozenset(profile.one_sided), images_dir=str(images_dir)))
    return jobs


def _draw_all(jobs: list[_Job], workers: int | None) -> list[dict]:
    photos = sum(sum(job.settings.photos_per_subject) / 2 for job in jobs)
    workers = workers if workers is not None else (min(2, os.cpu_count() or 1) if photos >= 60 else 1)
    if workers <= 1:
        results = [_draw_subject(job) for job in jobs]
    else:
        # Each subject's drawing depends only on its own seed, so the result is the same in any order.
        with ProcessPoolExecutor(max_workers=workers, mp_context=_fork_context()) as pool:
            results = list(pool.map(_draw_subject, jobs, chunksize=max(1, len(jobs) // (workers * 4))))
    return [row for rows in results for row in rows]


def _fork_context():
    import multiprocessing

    # fork starts workers in milliseconds; spawn would re-import pandas and the library in each.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _draw_subject(job: _Job) -> list[dict]:
    settings = job.settings
    rng = np.random.default_rng([settings.seed, 1, job.number])
    expressivity = expressivity_preset(settings.expressivity)
    profile = job.profiles.profiles[job.phenotype]
    features = sample_features(profile, job.profiles, job.schema, expressivity, rng)
    face, age, sex = _make_face(features, expressivity, job, rng)
    count = int(rng.integers(settings.photos_per_subject[0], settings.photos_per_subject[1] + 1))

    rows = []
    for index in range(count):
        shot = _make_shot(settings, np.random.default_rng([settings.seed, 2, job.number, index]), expressivity)
        data = encode_jpeg(draw_photo(face, shot), shot.quality)
        name = f"images/{job.subject_id}_{index + 1}.jpg"
        (Path(job.images_dir) / Path(name).name).write_bytes(data)
        rows.append({
            "manifest": {"image": name, "subject_id": job.subject_id, "label": job.label, "label_raw": job.phenotype,
                         "source": SOURCE, "age": age, "sex": sex, "ethnicity": "", "split": "", "synthetic": "true",
                         "phenotype": job.phenotype, "expressivity": settings.expressivity,
                         "planted_duplicate_of": "", "duplicate_kind": ""},
            "features": _visible_features(features, shot, face),
            "sha256": hashlib.sha256(data).hexdigest(),
        })
    return rows


def _make_face(features: dict[str, tuple[str, float]], expressivity, job: _Job,
               rng: np.random.Generator) -> tuple[Face, float, str]:
    child = rng.random() < CHILD_SHARE
    age = float(rng.integers(2, 13) if child else rng.integers(18, 61))
    sex = "female" if rng.random() < 0.5 else "male"
    nuisance = expressivity.nuisance
    skin = tuple(int(np.clip(c + rng.normal(0, 6), 0, 255)) for c in SKIN_TONES[rng.integers(len(SKIN_TONES))])
    skin = _towards(skin, SKIN_MIDDLE, nuisance)
    hair = _towards(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS) - (0 if age > 45 else 1))], HAIR_MIDDLE, nuisance)
    iris = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]
    long_hair = rng.random() < (0.7 if sex == "female" else 0.1) * nuisance
    ears_hidden = bool(long_hair and rng.random() < expressivity.hidden_ears)
    jitter = {"face": rng.uniform(-0.05, 0.05), "length": rng.uniform(-0.06, 0.06), "eyes": rng.uniform(-0.03, 0.03),
              "eye_size": rng.uniform(-0.08, 0.08)}
    side = -1 if rng.random() < 0.5 else 1
    face = Face(features=features, gain=expressivity.gain, child=child, side=side, one_sided=job.one_sided,
                skin=skin, hair=hair, iris=iris, long_hair=long_hair, ears_hidden=ears_hidden, jitter=jitter)
    return face, age, sex


def _towards(colour: tuple[int, int, int], middle: tuple[int, int, int], nuisance: float) -> tuple[int, int, int]:
    """Pull `colour` towards `middle`, keeping the share `nuisance` of its difference (1 = unchanged)."""
    if nuisance >= 1.0:
        return colour
    return tuple(int(round(m + nuisance * (c - m))) for c, m in zip(colour, middle))


def _make_shot(settings: PhantomSettings, rng: np.random.Generator, expressivity) -> Shot:
    def colour(low: int, high: int) -> tuple[int, int, int]:
        return tuple(int(value) for value in rng.integers(low, high, 3))

    pose, nuisance = expressivity.pose, expressivity.nuisance
    # Draw every random value in the same order whatever the preset, so presets share one stream.
    top = colour(60, 250)
    bottom = tuple(int(np.clip(c + rng.integers(-50, 50), 0, 255)) for c in top)
    light, brightness = float(rng.uniform(0, 0.22)), float(rng.uniform(0.85, 1.1))
    angle, scale = float(rng.uniform(-6, 6)), float(rng.uniform(-0.08, 0.06))
    shift = (float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.03, 0.03)))
    mouth_open, quality, shirt = bool(rng.random() < 0.35 * nuisance), int(rng.integers(70, 96)), colour(30, 220)
    return Shot(size=settings.image_size,
                background=(_towards(top, BACKGROUND_MIDDLE, nuisance), _towards(bottom, BACKGROUND_MIDDLE, nuisance)),
                light=light * nuisance, brightness=brightness if nuisance >= 1 else 1 + (brightness - 1) * nuisance, angle=pose * angle,
                scale=1 + pose * scale, shift=(pose * shift[0], pose * shift[1]), mouth_open=mouth_open,
                quality=quality, shirt=_towards(shirt, SHIRT_MIDDLE, nuisance))


def _visible_features(features: dict[str, tuple[str, float]], shot: Shot, face: Face) -> dict[str, str]:
    """Return the true value of each feature as this photo shows it."""
    values = {name: value for name, (value, _strength) in features.items()}
    mouth_open = shot.mouth_open or values.get("mouth_shape") == "open_with_protruding_tongue"
    if "dental_anomalies" in values and not mouth_open:
        values["dental_anomalies"] = "not_visible"
    if face.ears_hidden:
        for name in ("ear_shape", "ear_position"):
            if name in values:
                values[name] = "not_visible"
    return values


def _plant_duplicates(rows: list[dict], settings: PhantomSettings, out_dir: Path) -> list[dict]:
    count = round(settings.duplicate_rate * len(rows))
    if not count:
        return []
    rng = np.random.default_rng([settings.seed, 3])
    picks = sorted(rng.choice(len(rows), size=min(count, len(rows)), replace=False))
    planted = []
    for number, pick in enumerate(picks):
        original = rows[pick]
        kind = DUPLICATE_KINDS[number % len(DUPLICATE_KINDS)]
        data = _copy_bytes(out_dir / original["manifest"]["image"], kind)
        # Filed under another subject id, as when one photo enters a cohort twice from two sources.
        subject = f"{original['manifest']['subject_id']}D{number + 1}"
        name = f"images/{subject}_1.jpg"
        (out_dir / name).write_bytes(data)
        manifest = {**original["manifest"], "image": name, "subject_id": subject,
                    "planted_duplicate_of": original["manifest"]["image"], "duplicate_kind": kind}
        planted.append({"manifest": manifest, "features": original["features"], "sha256": hashlib.sha256(data).hexdigest()})
    logger.info("planted %d duplicate photos (%s) under new subject ids", len(planted), ", ".join(DUPLICATE_KINDS))
    return planted


def _copy_bytes(path: Path, kind: str) -> bytes:
    data = path.read_bytes()
    if kind == "exact":
        return data
    with Image.open(path) as image:
        image = image.convert("RGB")
        if kind == "resized":
            image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.BILINEAR)
        return encode_jpeg(image, 60)


def _write_reference_annotations(rows: list[dict], path: Path) -> Path:
    # Written in one go rather than through AnnotationStore.append, which syncs every line to disk;
    # the lines are AnnotationRecord JSON exactly as 01_annotate writes them.
    lines, seen = [], set()
    for row in rows:
        record = AnnotationRecord(
            image_sha256=row["sha256"], image=row["manifest"]["image"], backend=REFERENCE_BACKEND, model=REFERENCE_MODEL,
            prompt_version=REFERENCE_PROMPT_VERSION, mode="blind", status="ok", features=row["features"],
            explanation="phantom reference: the feature values the face was drawn with (synthetic)",
            seconds=0.0, created=REFERENCE_CREATED)
        if record.key not in seen:  # byte-identical copies share one annotation, as in 01_annotate
            seen.add(record.key)
            lines.append(record.to_json())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log_written(path, f"phantom reference annotations ({len(lines)} photos)")
    return path


def _write_readme(out_dir: Path, settings: PhantomSettings, frame: pd.DataFrame) -> Path:
    counts = frame.groupby("label")["subject_id"].nunique()
    table = "\n".join(f"| {label} | {counts[label]} | {int((frame['label'] == label).sum())} |" for label in counts.index)
    text = (
        "# Phantom cohort: SYNTHETIC, not patients\n\n"
        "Every photo here is a drawn face made by `wgsy phantom` (wgsy_lib/phantom.py) from the profiles in\n"
        "params/phantom.yaml. It exists to run and test the WGSY pipeline without real data. It says nothing\n"
        "about real patients, and no result on it says anything about a model's clinical value.\n\n"
        f"Settings: {json.dumps(asdict(settings))}\n\n"
        "| class | subjects | photos |\n| --- | --- | --- |\n" + table + "\n\n"
        "Planted duplicates (exact, resized, re-encoded copies filed under another subject id) are flagged in\n"
        "the manifest's `planted_duplicate_of` column. annotations.jsonl holds the true drawn feature values\n"
        "(backend `phantom-reference`).\n"
    )
    path = out_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    log_written(path, "phantom cohort card (synthetic)")
    return path


def drawable_values() -> dict[str, tuple[str, ...]]:
    """Return the abnormal values the phantom can draw, per feature (others are drawn typical)."""
    from .phantom_profiles import DRAWABLE

    return dict(DRAWABLE)


__all__ = ["PhantomCohort", "PhantomSettings", "make_phantom_cohort", "phantom_cohort_path", "phantom_settings",
           "drawable_values"]
