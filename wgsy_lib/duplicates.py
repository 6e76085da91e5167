"""Exact and near-duplicate photos across a whole cohort, so a split can keep each copy on one side.

- Exact duplicates share the SHA-256 of their file bytes.
- Near duplicates (a resized, re-encoded or slightly cropped copy) have perceptual hashes (pHash,
  64 bits, from the `imagehash` package) within `threshold` bits of each other (Hamming distance).

Pairs are compared with a vectorised XOR and popcount over blocks of rows, so no Python loop runs
over pairs; the search over 10,000 hashes took about 1.5 s on 2 CPU cores. Duplicate pairs are
merged into groups with union-find, so a chain A~B~C is one group even when A and C are further
apart than the threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .errors import ConfigError
from .images import file_sha256, load_image

logger = logging.getLogger(__name__)

# Hamming distance (of 64 bits) at or below which two pHashes count as the same photo. In the tests,
# resized and re-encoded copies differ by 0-2 bits and unrelated images by about 32 (half the bits).
# NOTE: aligned face photos share structure and can come closer than unrelated images; check the
# data card's largest duplicate group, and lower the threshold if distinct people get merged.
DEFAULT_NEAR_THRESHOLD = 6
HASH_BITS = 64
# Rows of the pairwise distance matrix computed at once: 2,048 x 10,000 uint8 distances is 20 MB.
_BLOCK_ROWS = 2048


class UnionFind:
    """Disjoint sets over 0..n-1; `find` returns the smallest member, so roots are deterministic."""

    def __init__(self, size: int):
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        root_first, root_second = self.find(first), self.find(second)
        if root_first != root_second:
            low, high = sorted((root_first, root_second))
            self.parent[high] = low

    def components(self) -> list[int]:
        """Return the root of each item: equal roots mean the same set."""
        return [self.find(item) for item in range(len(self.parent))]


@dataclass(frozen=True)
class DuplicatePair:
    """Two photos (positions in the input order) that are copies of each other."""

    first: int
    second: int
    kind: str  # "exact" or "near"
    distance: int  # Hamming distance of the pHashes; 0 for exact copies


@dataclass
class DuplicateReport:
    """The duplicate structure of a list of photos, in input order."""

    sha256: list[str]
    phash: list[str]
    pairs: list[DuplicatePair] = field(default_factory=list)
    group: list[int] = field(default_factory=list)  # smallest position in each photo's duplicate group
    threshold: int = DEFAULT_NEAR_THRESHOLD

    @property
    def groups(self) -> dict[int, list[int]]:
        """Return each duplicate group with two or more photos: group id -> positions."""
        members: dict[int, list[int]] = {}
        for position, group in enumerate(self.group):
            members.setdefault(group, []).append(position)
        return {group: positions for group, positions in members.items() if len(positions) > 1}


def phash_bits(path: str | Path) -> int:
    """Return the 64-bit perceptual hash of an image as an integer (upright RGB pixels, as trained)."""
    import imagehash  # imported here so the split code, which only needs UnionFind, loads fast

    image = load_image(path).image
    value = imagehash.phash(image, hash_size=8)
    return int(str(value), 16)


def hamming_pairs(hashes: Sequence[int], threshold: int) -> list[tuple[int, int, int]]:
    """Return (i, j, distance) for every i < j whose 64-bit hashes differ in at most `threshold` bits."""
    if threshold < 0:
        raise ConfigError(f"near-duplicate threshold {threshold} must be 0 or more bits (of {HASH_BITS})")
    values = np.array([int(value) for value in hashes], dtype=np.uint64)
    found: list[tuple[int, int, int]] = []
    for start in range(0, len(values), _BLOCK_ROWS):
        block = values[start:start + _BLOCK_ROWS]
        distances = _popcount(block[:, None] ^ values[None, :])
        rows, columns = np.nonzero(distances <= threshold)
        for row, column in zip(rows.tolist(), columns.tolist()):
            first = start + row
            if first < column:
                found.append((first, column, int(distances[row, column])))
    found.sort()
    return found


def find_duplicates(paths: Iterable[str | Path], *, threshold: int = DEFAULT_NEAR_THRESHOLD,
                    near: bool = True, sha256: Sequence[str] | None = None,
                    phash: Sequence[int] | None = None) -> DuplicateReport:
    """Find exact (same SHA-256) and, if `near`, near-duplicate (pHash) photos among `paths`.

    Precomputed hashes may be passed to skip reading the files again. Unreadable images raise
    ImageError naming the file; check images before calling this.
    """
    paths = [Path(path) for path in paths]
    digests = list(sha256) if sha256 is not None else [file_sha256(path) for path in paths]
    union = UnionFind(len(paths))
    pairs: list[DuplicatePair] = []

    first_seen: dict[str, int] = {}
    for position, digest in enumerate(digests):
        if digest in first_seen:
            union.union(first_seen[digest], position)
            pairs.append(DuplicatePair(first_seen[digest], position, "exact", 0))
        else:
            first_seen[digest] = position

    hashes: list[int] = []
    if near:
        if phash is not None:
            hashes = [int(value) for value in phash]
        else:
            hashes = [phash_bits(path) for path in tqdm(paths, desc="perceptual hashes", unit="photo")]
        exact = {(pair.first, pair.second) for pair in pairs}
        for first, second, distance in hamming_pairs(hashes, threshold):
            if digests[first] == digests[second] or (first, second) in exact:
                continue
            union.union(first, second)
            pairs.append(DuplicatePair(first, second, "near", distance))

    report = DuplicateReport(sha256=digests, phash=[f"{value:016x}" for value in hashes] if hashes else [""] * len(paths),
                             pairs=pairs, group=union.components(), threshold=threshold)
    logger.info("duplicates: %d exact and %d near pairs (pHash distance <= %d) in %d duplicate groups among %d photos",
                sum(pair.kind == "exact" for pair in pairs), sum(pair.kind == "near" for pair in pairs), threshold,
                len(report.groups), len(paths))
    return report


def _popcount(values: np.ndarray) -> np.ndarray:
    # numpy >= 2.0 has a native popcount; before that, count the set bits byte by byte.
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values).astype(np.uint8)
    as_bytes = values.view(np.uint8).reshape(values.shape + (8,))
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1, dtype=np.uint8)
