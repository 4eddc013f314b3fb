"""Nonparametric comparison of a canary's per-request samples with the stable version's.

Kayenta judges a canary by comparing its samples with a baseline's through the Mann–Whitney U
test; so do we. The samples are whatever a version produced per request — latencies, answer
lengths, feedback scores — given either as plain values or, as Prometheus keeps them, as a
histogram: cumulative counts per upper bound (`le`). A histogram's requests in one bucket are
ties (their exact values are not known), which the tie-corrected normal approximation handles
the same way it handles equal plain values.

Three things decide, and all three must agree before a canary is called worse:

* enough samples on each side (`min_samples`): fewer is *inconclusive*, never a pass;
* significance: the one-sided p-value of "canary worse than stable" is below `1 - confidence`;
* effect size: the probability that a canary request is worse than a stable one (ties count
  half; 0.5 means no difference) exceeds 0.5 by at least `min_effect_size`, so a large sample
  does not fail a canary for a difference nobody would notice.

Pure: no scipy (the normal tail is `math.erfc`), no I/O.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence


class Outcome(enum.StrEnum):
    WORSE = "Worse"  # significant and large enough: the canary is worse
    NOT_WORSE = "NotWorse"  # enough samples and no significant, large enough degradation
    INCONCLUSIVE = "Inconclusive"  # too few samples to tell


@dataclasses.dataclass(frozen=True)
class MannWhitney:
    """The test's figures; `effect` is P(canary sample > stable sample) + P(equal) / 2."""

    u: float
    canary_n: int
    stable_n: int
    z: float
    p_greater: float  # one-sided p-value of "canary samples tend to be greater"
    p_less: float  # one-sided p-value of "canary samples tend to be smaller"
    effect: float


def counts_from_histogram(buckets: Mapping[float, float]) -> dict[float, int]:
    """Per-bucket counts from cumulative Prometheus buckets (upper bound -> count up to it).

    Counts come from `increase()` and may be fractional or, after a counter reset seen partly,
    slightly non-monotonic: they are rounded and a negative difference counts as 0.
    """
    counts: dict[float, int] = {}
    below = 0.0
    for bound in sorted(buckets):
        cumulative = max(float(buckets[bound]), below)
        counts[bound] = int(round(cumulative - below))
        below = cumulative
    return counts


def counts_from_values(values: Iterable[float]) -> dict[float, int]:
    counts: dict[float, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def mann_whitney(canary: Mapping[float, int], stable: Mapping[float, int]) -> MannWhitney:
    """The Mann–Whitney U of canary against stable, from value -> count maps (ties by value).

    Normal approximation with tie and continuity corrections; good from a few dozen samples per
    side, which the minimum sample size of a judgement ensures.
    """
    n1, n2 = sum(canary.values()), sum(stable.values())
    if n1 == 0 or n2 == 0:
        raise ValueError(f"Mann–Whitney U needs samples on both sides (canary {n1}, stable {n2})")
    n = n1 + n2
    rank_sum_canary = 0.0
    tie_term = 0.0
    below = 0
    for value in sorted(set(canary) | set(stable)):
        c, s = canary.get(value, 0), stable.get(value, 0)
        t = c + s
        if t == 0:
            continue
        mid_rank = below + (t + 1) / 2
        rank_sum_canary += c * mid_rank
        tie_term += t**3 - t
        below += t
    u = rank_sum_canary - n1 * (n1 + 1) / 2
    mean = n1 * n2 / 2
    variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every sample equal: no evidence either way
        return MannWhitney(u, n1, n2, 0.0, 1.0, 1.0, u / (n1 * n2))
    sd = math.sqrt(variance)
    z_greater = (u - mean - 0.5) / sd
    z_less = (u - mean + 0.5) / sd
    return MannWhitney(
        u=u,
        canary_n=n1,
        stable_n=n2,
        z=(u - mean) / sd,
        p_greater=_upper_tail(z_greater),
        p_less=1.0 - _upper_tail(z_less),
        effect=u / (n1 * n2),
    )


def _upper_tail(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclasses.dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    test: MannWhitney | None
    message: str


def judge(
    canary: Mapping[float, int],
    stable: Mapping[float, int],
    *,
    higher_is_better: bool = False,
    min_samples: int = 50,
    min_effect_size: float = 0.06,
    confidence: float = 0.95,
) -> Judgement:
    """Is the canary worse than stable? (see the module docstring for the three conditions)"""
    n1, n2 = sum(canary.values()), sum(stable.values())
    if n1 < min_samples or n2 < min_samples:
        return Judgement(
            Outcome.INCONCLUSIVE,
            None,
            f"too few samples for Mann-Whitney U: canary {n1}, stable {n2}, need {min_samples} each",
        )
    test = mann_whitney(canary, stable)
    # "worse" is greater for lower-is-better metrics (latency), smaller for higher-is-better ones.
    p_worse = test.p_less if higher_is_better else test.p_greater
    worse_effect = (1.0 - test.effect) if higher_is_better else test.effect
    alpha = 1.0 - confidence
    figures = (
        f"Mann-Whitney U={test.u:g}, n={n1}/{n2}, p(worse)={p_worse:.3g}, "
        f"P(canary worse than stable)={worse_effect:.3f}"
    )
    if p_worse < alpha and worse_effect - 0.5 >= min_effect_size:
        return Judgement(
            Outcome.WORSE,
            test,
            f"canary worse than stable: {figures} (p < {alpha:g}, effect >= 0.5 + {min_effect_size:g})",
        )
    return Judgement(Outcome.NOT_WORSE, test, f"canary not worse than stable: {figures}")


def quantile_from_counts(counts: Mapping[float, int], q: float) -> float:
    """The q-quantile of value -> count (the smallest value with at least q of the mass at or below)."""
    total = sum(counts.values())
    if total == 0:
        return math.nan
    running = 0
    for value in sorted(counts):
        running += counts[value]
        if running >= q * total:
            return value
    return max(counts)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
