"""Sample controls so their age and sex distribution matches the patients'.

Controls often come from another source and age range than patients (UTKFace adults against clinic
children), and a model can then learn "child versus adult" instead of the syndrome. Matching works on
people, not photos: each subject gets one age (the median over their photos) and one sex, subjects are
put into strata of sex x age bin, and in each stratum up to `ratio` controls per patient are drawn
at random (seeded). Controls without age or sex, or in a stratum without patients, are left out.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchResult:
    """Which rows to keep after matching, and the per-stratum counts of people."""

    keep: pd.Series  # bool, indexed like the input frame
    strata: pd.DataFrame  # sex, age_bin, patients, controls_available, controls_kept
    controls_unmatchable: int  # control subjects without age or sex
    patients_unmatchable: int  # patient subjects without age or sex (kept, but no controls drawn for them)


def subject_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Return one row per subject: label (most frequent), age (median) and sex (most frequent non-empty)."""
    rows = []
    for subject, photos in frame.groupby("subject_id", sort=True):
        labels = photos["label"].value_counts()
        sexes = photos.loc[photos["sex"] != "", "sex"].value_counts()
        ages = pd.to_numeric(photos["age"], errors="coerce").dropna()
        rows.append({
            "subject_id": subject,
            "label": labels.index[0],
            "age": float(ages.median()) if len(ages) else math.nan,
            "sex": sexes.index[0] if len(sexes) else "",
        })
    return pd.DataFrame(rows, columns=["subject_id", "label", "age", "sex"])


def match_controls(frame: pd.DataFrame, *, control_label: str, seed: int, ratio: float = 1.0,
                   age_bin_years: float = 5.0) -> MatchResult:
    """Keep all patients and, in each sex x age-bin stratum, up to `ratio` control subjects per patient."""
    if ratio <= 0:
        raise ConfigError(f"match_ratio = {ratio}: must be above 0 (controls kept per patient)")
    if age_bin_years <= 0:
        raise ConfigError(f"match_age_bin_years = {age_bin_years}: must be above 0")
    subjects = subject_table(frame)
    if control_label not in set(subjects["label"]):
        raise ConfigError(f"control_label {control_label!r} does not occur in the cohort (labels: "
                          f"{', '.join(sorted(set(subjects['label'])))}); set control_label to the control class")

    known = subjects["age"].notna() & (subjects["sex"] != "")
    subjects["age_bin"] = np.where(known, np.floor(subjects["age"].fillna(0) / age_bin_years) * age_bin_years, np.nan)
    is_control = subjects["label"] == control_label
    patients = subjects[~is_control & known]
    controls = subjects[is_control & known]

    rng = np.random.default_rng(seed)
    kept_controls: list[str] = []
    strata_rows = []
    for (sex, age_bin), stratum in patients.groupby(["sex", "age_bin"], sort=True):
        available = controls[(controls["sex"] == sex) & (controls["age_bin"] == age_bin)]["subject_id"].tolist()
        wanted = int(round(ratio * len(stratum)))
        chosen = [available[index] for index in sorted(rng.permutation(len(available))[:wanted])]
        kept_controls += chosen
        strata_rows.append({"sex": sex, "age_bin": f"{age_bin:g}-{age_bin + age_bin_years:g}", "patients": len(stratum),
                            "controls_available": len(available), "controls_kept": len(chosen)})
        if len(available) < wanted:
            logger.warning("matching: stratum %s, age %g-%g has %d patients but only %d controls", sex, age_bin,
                           age_bin + age_bin_years, len(stratum), len(available))

    kept_subjects = set(subjects.loc[~is_control, "subject_id"]) | set(kept_controls)
    strata = pd.DataFrame(strata_rows, columns=["sex", "age_bin", "patients", "controls_available", "controls_kept"])
    result = MatchResult(keep=frame["subject_id"].isin(kept_subjects), strata=strata,
                         controls_unmatchable=int((is_control & ~known).sum()),
                         patients_unmatchable=int((~is_control & ~known).sum()))
    logger.info("matching: kept %d of %d control subjects for %d patients (%d controls and %d patients lack age or sex)",
                len(kept_controls), int(is_control.sum()), int((~is_control).sum()), result.controls_unmatchable,
                result.patients_unmatchable)
    return result
