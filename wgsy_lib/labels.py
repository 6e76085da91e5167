"""Diagnostic classes and the normalisation of free label text to them.

The classes, their OMIM ids and their English and Chinese synonyms live in params/labels.yaml.
`LabelSet.normalize` maps any label text (a folder name, a manifest cell, a model's answer) to one
canonical class or to Unknown, keeping the raw text and the reason:

- synonyms match whole words or phrases, so "normal" never matches inside "abnormal" and "DS"
  never matches inside "words";
- a negated mention ("not Down syndrome", "不是唐氏综合征", "Down syndrome ruled out") does not count;
- text that names two different classes is ambiguous and becomes Unknown rather than a guess.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError
from .paths import params_dir, resolve_path

UNKNOWN = "Unknown"

# Words that negate a mention when they come within NEGATION_WINDOW tokens before it ("no signs of
# Down syndrome") or right after it ("Down syndrome is ruled out").
NEGATION_WINDOW = 3
_NEGATION_BEFORE = (
    "not", "no", "non", "without", "never", "negative for", "absence of", "rather than",
    "instead of", "rule out", "rules out", "ruled out", "excluding", "exclude", "excluded",
)
_NEGATION_AFTER = ("ruled out", "excluded", "unlikely", "negative", "not likely")
_CJK_NEGATION_BEFORE = ("不是", "并非", "非", "无", "没有", "排除", "否认", "不像", "不符合", "不")
_CJK_NEGATION_AFTER = ("除外", "可排除", "已排除", "不符合")
_EMPTY_TEXTS = frozenset({"", "na", "n a", "none", "null", "nan", "unknown", "无", "未知", "不详", "-"})


@dataclass(frozen=True)
class LabelClass:
    """One diagnostic class from labels.yaml."""

    name: str
    omim: str | None
    phenotype: str | None
    synonyms: tuple[str, ...]
    exact: tuple[str, ...]


@dataclass(frozen=True)
class LabelResult:
    """The outcome of normalising one label text; `label` is a class name or Unknown."""

    label: str
    raw: str
    reason: str | None = None

    @property
    def known(self) -> bool:
        return self.label != UNKNOWN


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    label: str


class LabelSet:
    """The classes of one labels.yaml, with normalisation of free text to them."""

    def __init__(self, classes: list[LabelClass], *, binary_positive: str, binary_negative: str,
                 source: str = "labels"):
        self.classes = classes
        self.source = source
        self.binary_positive = binary_positive
        self.binary_negative = binary_negative
        self._by_name = {label_class.name: label_class for label_class in classes}
        self._exact: dict[str, str] = {}
        phrases: list[tuple[str, str]] = []
        for label_class in classes:
            for text in (label_class.name, *label_class.synonyms):
                phrases.append((_normalize_text(text), label_class.name))
            for text in (label_class.name, *label_class.synonyms, *label_class.exact):
                self._exact[_normalize_text(text)] = label_class.name
        # Longest phrases first, so "healthy control" wins over "control" on the same span.
        phrases.sort(key=lambda item: len(item[0]), reverse=True)
        self._patterns = [(re.compile(_phrase_pattern(phrase)), label) for phrase, label in phrases if phrase]

    @property
    def names(self) -> list[str]:
        """Canonical class names, in the order of labels.yaml."""
        return [label_class.name for label_class in self.classes]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def get(self, name: str) -> LabelClass:
        try:
            return self._by_name[name]
        except KeyError:
            raise ConfigError(f"{name!r} is not a class in {self.source}; the classes are: {', '.join(self.names)}") from None

    def normalize(self, text: Any) -> LabelResult:
        """Map label text to a canonical class, or to Unknown with the reason."""
        raw = "" if text is None else str(text)
        normalized = _normalize_text(raw)
        if normalized in _EMPTY_TEXTS:
            return LabelResult(UNKNOWN, raw, "empty or not available")
        if normalized in self._exact:
            return LabelResult(self._exact[normalized], raw)

        matches = self._find_matches(normalized)
        affirmed = {match.label for match in matches if not _is_negated(normalized, match)}
        negated = {match.label for match in matches} - affirmed
        if len(affirmed) == 1:
            return LabelResult(affirmed.pop(), raw)
        if len(affirmed) > 1:
            return LabelResult(UNKNOWN, raw, f"ambiguous: names {' and '.join(sorted(affirmed))}")
        if negated:
            return LabelResult(UNKNOWN, raw, f"negated mention of {' and '.join(sorted(negated))}")
        return LabelResult(UNKNOWN, raw, "matches no class or synonym")

    def from_binary(self, value: Any) -> LabelResult:
        """Map the earlier scripts' binary coding (1/0, yes/no, true/false) to the two binary classes."""
        raw = "" if value is None else str(value)
        key = raw.strip().lower()
        if key in {"1", "1.0", "yes", "true", "y", "positive"}:
            return LabelResult(self.binary_positive, raw)
        if key in {"0", "0.0", "no", "false", "n", "negative"}:
            return LabelResult(self.binary_negative, raw)
        return LabelResult(UNKNOWN, raw, "not a binary label (expected 1/0, yes/no or true/false)")

    def _find_matches(self, normalized: str) -> list[_Match]:
        taken = [False] * len(normalized)
        matches: list[_Match] = []
        for pattern, label in self._patterns:
            for found in pattern.finditer(normalized):
                start, end = found.span()
                if any(taken[start:end]):
                    continue
                taken[start:end] = [True] * (end - start)
                matches.append(_Match(start, end, label))
        return sorted(matches, key=lambda match: match.start)


def load_labels(path: str | Path | None = None) -> LabelSet:
    """Read labels.yaml (params/labels.yaml by default) and check it."""
    resolved = resolve_path(path) if path is not None else params_dir() / "labels.yaml"
    return _load_labels_cached(str(resolved), resolved.stat().st_mtime_ns if resolved.exists() else 0)


@lru_cache(maxsize=8)
def _load_labels_cached(path: str, _mtime: int) -> LabelSet:
    resolved = Path(path)
    if not resolved.is_file():
        raise ConfigError(f"label file {resolved} not found; pass the path of a labels.yaml (see params/labels.yaml)")
    try:
        data = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"label file {resolved} is not valid YAML: {error}") from None

    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"label file {resolved}: 'classes' must be a non-empty list of classes")
    classes = [_parse_class(entry, index, resolved) for index, entry in enumerate(entries)]
    _check_unique(classes, resolved)

    names = [label_class.name for label_class in classes]
    binary = data.get("binary") or {}
    positive = binary.get("positive", names[0])
    negative = binary.get("negative", names[-1])
    for role, name in (("positive", positive), ("negative", negative)):
        if name not in names:
            raise ConfigError(f"label file {resolved}: binary.{role} is {name!r}, which is not one of the classes {names}")
    return LabelSet(classes, binary_positive=positive, binary_negative=negative, source=str(resolved))


def _parse_class(entry: Any, index: int, path: Path) -> LabelClass:
    where = f"label file {path}, class #{index + 1}"
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise ConfigError(f"{where}: every class needs a non-empty 'name'")
    name = entry["name"].strip()
    if _normalize_text(name) in _EMPTY_TEXTS:
        raise ConfigError(f"{where}: {name!r} is reserved for unplaceable labels; choose another class name")
    unexpected = set(entry) - {"name", "omim", "phenotype", "synonyms", "exact"}
    if unexpected:
        raise ConfigError(f"{where} ({name}): unknown key(s) {sorted(unexpected)}; allowed are name, omim, phenotype, synonyms, exact")
    synonyms = entry.get("synonyms") or {}
    if isinstance(synonyms, list):
        synonyms = {"en": synonyms}
    if not isinstance(synonyms, dict):
        raise ConfigError(f"{where} ({name}): 'synonyms' must map a language code (en, zh) to a list of phrases")
    phrases = [str(text) for texts in synonyms.values() for text in (texts or [])]
    omim = entry.get("omim")
    if omim is not None and not re.fullmatch(r"\d{6}", str(omim)):
        raise ConfigError(f"{where} ({name}): OMIM id {omim!r} must be six digits, or null for classes without one")
    return LabelClass(
        name=name,
        omim=None if omim is None else str(omim),
        phenotype=entry.get("phenotype"),
        synonyms=tuple(phrases),
        exact=tuple(str(text) for text in entry.get("exact") or []),
    )


def _check_unique(classes: Iterable[LabelClass], path: Path) -> None:
    owner: dict[str, str] = {}
    for label_class in classes:
        for text in (label_class.name, *label_class.synonyms, *label_class.exact):
            key = _normalize_text(text)
            if key in owner and owner[key] != label_class.name:
                raise ConfigError(
                    f"label file {path}: synonym {text!r} belongs to both {owner[key]!r} and {label_class.name!r}; "
                    "keep it in one class only"
                )
            owner[key] = label_class.name


def _normalize_text(text: str) -> str:
    """Fold case, width and punctuation, so "Down's-Syndrome" and "downs syndrome" compare equal."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = re.sub(r"['’`]", "", text)
    text = re.sub(r"[^\w\u4e00-\u9fff]+|_", " ", text)
    return " ".join(text.split())


def _phrase_pattern(phrase: str) -> str:
    # Latin letters and digits need a word boundary; Chinese characters have none to need.
    before = r"(?<![a-z0-9])" if re.match(r"[a-z0-9]", phrase) else ""
    after = r"(?![a-z0-9])" if re.search(r"[a-z0-9]$", phrase) else ""
    return before + re.escape(phrase) + after


def _is_negated(text: str, match: _Match) -> bool:
    before_words = text[: match.start].split()[-NEGATION_WINDOW:]
    after_words = text[match.end:].split()[:NEGATION_WINDOW]
    before = " " + " ".join(before_words) + " "
    after = " " + " ".join(after_words) + " "
    if any(f" {cue} " in before for cue in _NEGATION_BEFORE):
        return True
    if any(f" {cue} " in after for cue in _NEGATION_AFTER):
        return True
    # Chinese negation attaches directly to the phrase ("不是唐氏综合征"), so look at adjacent characters.
    head = text[max(0, match.start - 4): match.start].replace(" ", "")
    tail = text[match.end: match.end + 4].replace(" ", "")
    return any(head.endswith(cue) for cue in _CJK_NEGATION_BEFORE) or any(tail.startswith(cue) for cue in _CJK_NEGATION_AFTER)
