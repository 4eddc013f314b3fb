"""Exact and near-duplicate detection for training records.

Duplicates make a model memorize and inflate validation scores when copies land in both splits.
Exact duplicates are found by hashing normalized text (case-folded, whitespace collapsed).
Near duplicates (the same ticket with a changed greeting, say) are found with MinHash over word
shingles: banded locality-sensitive hashing proposes candidate pairs cheaply, and each candidate
is confirmed with the exact Jaccard similarity of the shingle sets, so the threshold means what
it says. The first occurrence is kept; later copies are dropped. Everything is deterministic.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

import numpy as np

_PRIME = (1 << 31) - 1  # hash values and coefficients stay < 2**31, so a*x+b fits in uint64
_NUM_PERM = 64
_BANDS = 16  # 16 bands x 4 rows: pairs above ~0.5 Jaccard almost always become candidates
_WORD = re.compile(r"\w+", re.UNICODE)


def normalize(text: str) -> str:
    return " ".join(text.casefold().split())


def exact_key(text: str) -> str:
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()


def shingles(text: str, size: int) -> frozenset[str]:
    words = _WORD.findall(text.casefold())
    if len(words) <= size:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + size]) for i in range(len(words) - size + 1))


def _shingle_hashes(items: frozenset[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=4).digest(), "little") % _PRIME for s in items],
        dtype=np.uint64,
    )


def _permutations(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, size=_NUM_PERM, dtype=np.uint64)
    b = rng.integers(0, _PRIME, size=_NUM_PERM, dtype=np.uint64)
    return a, b


def minhash(items: frozenset[str], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    hashes = _shingle_hashes(items)
    if hashes.size == 0:
        return np.full(_NUM_PERM, _PRIME, dtype=np.uint64)
    return ((a[:, None] * hashes[None, :] + b[:, None]) % _PRIME).min(axis=1)


def jaccard(x: frozenset[str], y: frozenset[str]) -> float:
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def near_duplicates(texts: list[str], threshold: float, shingle_size: int = 3) -> dict[int, int]:
    """Map index -> index of the earlier record it nearly duplicates, for every dropped record."""
    a, b = _permutations(0)
    rows = _NUM_PERM // _BANDS
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    sets = [shingles(t, shingle_size) for t in texts]
    dropped: dict[int, int] = {}
    for i, items in enumerate(sets):
        signature = minhash(items, a, b)
        keys = [(band, signature[band * rows : (band + 1) * rows].tobytes()) for band in range(_BANDS)]
        candidates = sorted({j for key in keys for j in buckets.get(key, ())})
        match = next((j for j in candidates if jaccard(items, sets[j]) >= threshold), None)
        if match is not None:
            dropped[i] = match
            continue  # only kept records act as originals
        for key in keys:
            buckets[key].append(i)
    return dropped
