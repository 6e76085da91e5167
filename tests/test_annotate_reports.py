"""Reports of 01_annotate: status counts, feature table and plot, agreement with reference
annotations, phenopackets, and the notebook views."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from google.protobuf.json_format import Parse
from phenopackets import Phenopacket

from annotate_helpers import make_cohort, server_config
from wgsy_lib.agreement import feature_agreement, measure_agreement, read_reference
from wgsy_lib.annotate import run_annotation
from wgsy_lib.annotation_report import (annotation_browser, annotation_table, show_annotations, summarize_annotations,
                                        write_feature_table)
from wgsy_lib.annotation_store import AnnotationStore
from wgsy_lib.errors import DataError
from wgsy_lib.features import load_features
from wgsy_lib.openai_mock import MockOpenAIServer
from wgsy_lib.phenopacket_export import export_phenopackets


@pytest.fixture(scope="module")
def annotated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("annotated")
    manifest = make_cohort(folder, 8)
    with MockOpenAIServer() as server:
        server.script.extend(["refusal"])
        config = server_config(manifest, server, folder, concurrency=1, phenopackets=True)
        run_annotation(config)
    return config


def _reference_file(config, path, change=None):
    records = [record for record in AnnotationStore(config.store_path).read() if record.status == "ok"]
    lines = []
    for record in records:
        features = dict(record.features)
        if change and record.image == change[0]:
            features[change[1]] = change[2]
        lines.append(json.dumps({"image_sha256": record.image_sha256, "image": record.image, "features": features}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_status_counts(annotated):
    counts = summarize_annotations(annotated)
    assert counts.loc["all", "ok"] == 7
    assert counts.loc["all", "refused"] == 1
    assert (annotated.output_path / "status_counts.csv").is_file()


def test_feature_table_and_plot(annotated):
    fractions = write_feature_table(annotated)
    table = pd.read_csv(annotated.output_path / "feature_values.csv")
    assert set(table["feature"]) == set(load_features().names)
    assert table.groupby(["label", "feature"])["count"].sum().max() <= 2
    assert (annotated.output_path / "feature_abnormal_fraction.png").stat().st_size > 1000
    assert list(fractions.index) == load_features().names


def test_agreement_perfect_with_own_answers(annotated, tmp_path):
    reference = _reference_file(annotated, tmp_path / "reference.jsonl")
    config = annotated.model_copy(update={"reference": str(reference)})
    result = measure_agreement(config)
    assert (result["agreement"] == 1.0).all()
    assert (result["photos"] == 7).all()
    assert (annotated.output_path / "agreement.csv").is_file()


def test_agreement_counts_disagreement(annotated, tmp_path):
    table = annotation_table(annotated)
    image = table[table["status"] == "ok"]["image"].iloc[0]
    current = table.set_index("image").loc[image, "forehead"]
    other = "narrow" if current != "narrow" else "broad"
    reference = read_reference(_reference_file(annotated, tmp_path / "ref.jsonl", (image, "forehead", other)),
                               load_features())
    result = feature_agreement(table, reference, load_features()).set_index("feature")
    assert result.loc["forehead", "agreement"] == pytest.approx(6 / 7)
    assert result.loc["forehead", "kappa"] < 1.0
    assert result.loc["hairline", "agreement"] == 1.0


def test_agreement_without_reference_returns_none(annotated):
    assert measure_agreement(annotated) is None


def test_reference_without_feature_columns_message(tmp_path):
    path = tmp_path / "reference.csv"
    path.write_text("image,colour\na.jpg,red\n")
    with pytest.raises(DataError, match="no column named after a feature"):
        read_reference(path, load_features())


def test_phenopackets_observed_and_excluded(annotated):
    paths = export_phenopackets(annotated)
    assert len(paths) == 4
    table = annotation_table(annotated)
    features = load_features()
    for path in paths:
        packet = Parse(path.read_text(), Phenopacket())
        photos = table[(table["subject_id"] == packet.subject.id) & (table["status"] == "ok")]
        observed = {item.type.id for item in packet.phenotypic_features if not item.excluded}
        excluded = {item.type.id for item in packet.phenotypic_features if item.excluded}
        assert not observed & excluded
        expected = {features[name].values[value] for name in features.names for value in photos[name]
                    if features[name].values.get(value)}
        assert observed == expected
        assert packet.meta_data.phenopacket_schema_version == "2.0"
        assert all(item.type.label for item in packet.phenotypic_features)


def test_phenopacket_disease_from_label(annotated):
    packets = [Parse(path.read_text(), Phenopacket()) for path in export_phenopackets(annotated)]
    diseases = {disease.term.id for packet in packets for disease in packet.diseases}
    assert "OMIM:194050" in diseases


def test_static_view_hides_photos_by_default(annotated):
    view = show_annotations(annotated)
    assert list(view.columns) == ["image", "label", "abnormal features", "explanation"]
    assert len(view) == 7


def test_browser_off_when_headless(annotated, monkeypatch):
    monkeypatch.setenv("WGSY_HEADLESS", "1")
    assert annotation_browser(annotated.model_copy(update={"browser": True})) is None


def test_browser_built_when_interactive(annotated, monkeypatch):
    monkeypatch.delenv("WGSY_HEADLESS", raising=False)
    browser = annotation_browser(annotated.model_copy(update={"browser": True, "show_photos": True}))
    assert browser is not None
