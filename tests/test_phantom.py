"""The phantom cohort: synthetic faces whose drawn features follow each class's profile."""

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.cli import main
from wgsy_lib.errors import ConfigError
from wgsy_lib.features import load_features
from wgsy_lib.images import file_sha256, load_image
from wgsy_lib.manifest import data_root_for, read_manifest
from wgsy_lib.phantom import make_phantom_cohort, phantom_settings
from wgsy_lib.phantom_draw import Face, Shot, draw_photo
from wgsy_lib.phantom_profiles import DRAWABLE, PRESETS, expressivity_preset, load_profiles, sample_features


def _digest(folder):
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != "cohort.json"}


def test_cohort_has_every_drawable_class_and_says_it_is_synthetic(phantom_cohort, labels):
    frame = read_manifest(phantom_cohort.manifest)
    drawable = {c.name for c in labels.classes if c.phenotype}
    assert set(frame["label"]) == drawable
    assert set(frame["source"]) == {"phantom"}
    assert set(frame["synthetic"]) == {"true"}
    assert frame.groupby("subject_id").size().max() >= 2
    assert set(frame["sex"]) <= {"female", "male"}
    assert frame["age"].notna().all()
    assert "SYNTHETIC" in phantom_cohort.readme.read_text()
    card = json.loads((phantom_cohort.manifest.parent / "cohort.json").read_text())
    assert card["synthetic"] is True
    assert data_root_for(phantom_cohort.manifest) == phantom_cohort.root.resolve()


def test_photos_load_upright_rgb(phantom_cohort):
    frame = read_manifest(phantom_cohort.manifest)
    loaded = load_image(phantom_cohort.root / frame["image"].iloc[0]).image
    assert loaded.mode == "RGB"
    assert loaded.size == (192, 192)


def test_planted_duplicates_are_flagged_and_really_duplicates(phantom_cohort):
    frame = read_manifest(phantom_cohort.manifest)
    planted = frame[frame["planted_duplicate_of"] != ""]
    assert len(planted) >= 2
    assert set(planted["duplicate_kind"]) <= {"exact", "resized", "reencoded"}
    for row in planted.itertuples():
        original = frame[frame["image"] == row.planted_duplicate_of].iloc[0]
        assert row.subject_id != original.subject_id
        assert row.label == original.label
        copy, source = (np.asarray(load_image(phantom_cohort.root / path).image.resize((64, 64)), dtype=float)
                        for path in (row.image, original.image))
        assert np.abs(copy - source).mean() < 6
        if row.duplicate_kind == "exact":
            assert file_sha256(phantom_cohort.root / row.image) == file_sha256(phantom_cohort.root / original.image)


def test_reference_annotations_hold_true_values_in_the_store_format(phantom_cohort):
    frame = read_manifest(phantom_cohort.manifest)
    records = AnnotationStore(phantom_cohort.annotations).read()
    schema = load_features()
    assert {r.image for r in records} | set(frame[frame["duplicate_kind"] == "exact"]["image"]) == set(frame["image"])
    for record in records:
        assert (record.backend, record.model, record.mode, record.status) == ("phantom-reference", "phantom-v1", "blind", "ok")
        assert record.image_sha256 == file_sha256(phantom_cohort.root / record.image)
        assert set(record.features) == set(schema.names)
        for name, value in record.features.items():
            assert value in schema[name].values, (name, value)


def test_fixed_seed_gives_byte_identical_output_also_in_parallel(tmp_path):
    first = make_phantom_cohort(tmp_path / "a", subjects_per_class=2, photos_per_subject=2, duplicate_rate=0.2, workers=1)
    second = make_phantom_cohort(tmp_path / "b", subjects_per_class=2, photos_per_subject=2, duplicate_rate=0.2, workers=2)
    assert _digest(first.root) == _digest(second.root)
    other = make_phantom_cohort(tmp_path / "c", subjects_per_class=2, photos_per_subject=2, duplicate_rate=0.2, seed=1)
    assert _digest(other.root) != _digest(first.root)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sampled_features_follow_each_profile(preset):
    schema = load_features()
    profiles = load_profiles(features=schema)
    expressivity = expressivity_preset(preset)
    rng = np.random.default_rng(0)
    for name, profile in profiles.profiles.items():
        draws = [sample_features(profile, profiles, schema, expressivity, rng) for _ in range(600)]
        for feature in schema.names:
            counts = Counter(draw[feature][0] for draw in draws)
            chances = profile.features.get(feature, {})
            total = sum(chances.values())
            if total:
                expected_total = min(1.0, max(total * expressivity.penetrance_scale, expressivity.penetrance_floor))
                for value, chance in chances.items():
                    assert counts[value] / 600 == pytest.approx(chance * expected_total / total, abs=0.07), (name, feature, value)
            else:
                background = profiles.background_rate if expressivity.background else 0.0
                assert 1 - counts["typical"] / 600 == pytest.approx(background, abs=0.03), (name, feature)


def test_annotated_values_match_the_class_profiles(phantom_cohort):
    frame = read_manifest(phantom_cohort.manifest)
    by_image = {r.image: r.features for r in AnnotationStore(phantom_cohort.annotations).read()}
    williams = [by_image[i] for i in frame[frame["label"] == "Williams syndrome"]["image"] if i in by_image]
    controls = [by_image[i] for i in frame[frame["label"] == "healthy control"]["image"] if i in by_image]
    assert all(f["mouth_width"] in ("wide", "typical") for f in williams)
    assert sum(v not in ("typical", "not_visible") for f in controls for v in f.values()) <= len(controls) * 3


def test_every_drawable_value_draws_at_extreme_gain():
    shot = Shot(size=96, background=((200, 200, 200), (100, 100, 100)), light=0.1, brightness=1.0, angle=3.0,
                scale=0.95, shift=(0.01, 0.0), mouth_open=True, quality=90, shirt=(50, 60, 70))
    for feature, values in DRAWABLE.items():
        for value in values:
            for side in (-1, 1):
                face = Face(features={feature: (value, 1.0)}, gain=3.0, child=side > 0, side=side,
                            one_sided=frozenset({"ear_shape"}), skin=(200, 160, 120), hair=(30, 20, 10),
                            iris=(60, 40, 20), long_hair=False, ears_hidden=False)
                assert draw_photo(face, shot).size == (96, 96)


def test_cli_writes_a_cohort(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "c"), "--subjects-per-class", "1", "--photos-per-subject", "1",
                 "--expressivity", "exaggerated"]) == 0
    assert "synthetic" in capsys.readouterr().out
    assert len(read_manifest(tmp_path / "c" / "manifest.csv")) >= 4


def test_bad_settings_name_the_value_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match="expressivity 'loud' is invalid; expected one of subtle, realistic, exaggerated"):
        phantom_settings(expressivity="loud")
    with pytest.raises(ConfigError, match=r"unknown phantom setting\(s\) \['colour'\]"):
        phantom_settings(colour=1)
    with pytest.raises(ConfigError, match="photos_per_subject"):
        phantom_settings(photos_per_subject=(3, 1))
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        make_phantom_cohort(tmp_path)


def test_profile_with_an_undrawable_value_is_rejected(tmp_path):
    bad = tmp_path / "phantom.yaml"
    bad.write_text("version: 1\nprofiles:\n  noonan:\n    features:\n      ptosis: {severe: 0.5}\n")
    with pytest.raises(ConfigError, match="profile 'noonan', feature 'ptosis': the phantom cannot draw 'severe'"):
        load_profiles(bad, features=load_features())


def test_labels_with_a_phenotype_but_no_profile_are_rejected(tmp_path):
    labels = tmp_path / "labels.yaml"
    labels.write_text("unknown: Unknown\nbinary: {positive: Noonan syndrome, negative: healthy control}\nclasses:\n"
                      "  - {name: Noonan syndrome, phenotype: noonan, synonyms: {en: [Noonan syndrome]}}\n"
                      "  - {name: healthy control, phenotype: control, synonyms: {en: [healthy control]}}\n")
    with pytest.raises(ConfigError, match=r"phenotype\(s\) \['Noonan syndrome \(noonan\)'\] that have no profile"):
        make_phantom_cohort(tmp_path / "out", labels_path=labels)


@pytest.mark.benchmark
def test_phantom_speed_200_photos(tmp_path):
    """Report the time to draw about 200 photos, serially and with two workers (target: under 20 s on 2 cores)."""
    import time

    seconds = {}
    for workers in (1, 2):
        started = time.perf_counter()
        cohort = make_phantom_cohort(tmp_path / str(workers), subjects_per_class=17, photos_per_subject=3, workers=workers)
        seconds[workers] = time.perf_counter() - started
    print(f"phantom: {cohort.photos} photos; serial {seconds[1]:.1f} s, two workers {seconds[2]:.1f} s "
          f"(parallel/serial ratio {seconds[2] / seconds[1]:.2f})")
    assert _digest(tmp_path / "1") == _digest(tmp_path / "2")
