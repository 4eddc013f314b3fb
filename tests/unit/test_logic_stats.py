"""Mann-Whitney U judgement of a canary's per-request samples against stable's (logic/stats.py)."""

from __future__ import annotations

import itertools
import random

import pytest

from finetune_operator.logic import stats


def brute_force_u(canary, stable):
    return sum((c > s) + 0.5 * (c == s) for c, s in itertools.product(canary, stable))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_u_counts_pairs_where_the_canary_is_greater_ties_half(seed):
    rng = random.Random(seed)
    canary = [rng.choice([0.1, 0.2, 0.3, 0.5]) for _ in range(40)]
    stable = [rng.choice([0.1, 0.2, 0.3]) for _ in range(55)]
    test = stats.mann_whitney(stats.counts_from_values(canary), stats.counts_from_values(stable))
    assert test.u == brute_force_u(canary, stable)
    assert test.effect == pytest.approx(test.u / (40 * 55))


def test_p_value_agrees_with_a_permutation_test():
    rng = random.Random(7)
    canary = [round(rng.gauss(1.25, 1.0), 1) for _ in range(60)]
    stable = [round(rng.gauss(1.0, 1.0), 1) for _ in range(60)]
    observed = brute_force_u(canary, stable)
    pooled = canary + stable
    extreme = 0
    trials = 2000
    for _ in range(trials):
        rng.shuffle(pooled)
        extreme += brute_force_u(pooled[:60], pooled[60:]) >= observed
    test = stats.mann_whitney(stats.counts_from_values(canary), stats.counts_from_values(stable))
    assert test.p_greater == pytest.approx(extreme / trials, abs=0.03)
    assert test.p_greater + test.p_less == pytest.approx(1.0, abs=0.05)


def test_histogram_buckets_are_ties_per_bucket():
    # cumulative le -> count, as `sum by (le) (increase(x_bucket[5m]))` returns them
    assert stats.counts_from_histogram({0.1: 10, 0.5: 30, float("inf"): 31}) == {0.1: 10, 0.5: 20, float("inf"): 1}
    # a partly seen counter reset never makes a negative bucket
    assert stats.counts_from_histogram({0.1: 10, 0.5: 9.6, float("inf"): 12}) == {0.1: 10, 0.5: 0, float("inf"): 2}


SLOW = {0.1: 20, 0.25: 40, 0.5: 80, 1.0: 60}  # per-bucket counts
FAST = {0.1: 60, 0.25: 80, 0.5: 40, 1.0: 20}


@pytest.mark.parametrize(
    ("canary", "stable", "kwargs", "outcome"),
    [
        pytest.param(SLOW, FAST, {}, stats.Outcome.WORSE, id="slower-canary-is-worse"),
        pytest.param(FAST, SLOW, {}, stats.Outcome.NOT_WORSE, id="faster-canary-is-not-worse"),
        pytest.param(FAST, FAST, {}, stats.Outcome.NOT_WORSE, id="identical-is-not-worse"),
        pytest.param(FAST, SLOW, {"higher_is_better": True}, stats.Outcome.WORSE, id="lower-score-is-worse"),
        pytest.param({0.1: 5, 1.0: 20}, {0.1: 20, 1.0: 5}, {}, stats.Outcome.INCONCLUSIVE,
                     id="too-few-samples-is-inconclusive-never-a-pass"),
        pytest.param({k: v * 100 for k, v in {0.1: 50, 0.25: 50}.items()},
                     {k: v * 100 for k, v in {0.1: 52, 0.25: 48}.items()}, {}, stats.Outcome.NOT_WORSE,
                     id="significant-but-tiny-effect-passes"),
    ],
)
def test_judge(canary, stable, kwargs, outcome):
    judgement = stats.judge(canary, stable, **kwargs)
    assert judgement.outcome == outcome, judgement.message
    if outcome == stats.Outcome.INCONCLUSIVE:
        assert "too few samples" in judgement.message and judgement.test is None
    else:
        assert "Mann-Whitney U=" in judgement.message


def test_significant_tiny_effect_really_is_significant():
    canary = {0.1: 5000, 0.25: 5000}
    stable = {0.1: 5200, 0.25: 4800}
    assert stats.mann_whitney(canary, stable).p_greater < 0.05


def test_no_samples_raise():
    with pytest.raises(ValueError, match="samples on both sides"):
        stats.mann_whitney({}, {1.0: 3})


def test_quantile_and_median():
    assert stats.quantile_from_counts({0.1: 10, 0.5: 80, 1.0: 10}, 0.95) == 1.0
    assert stats.quantile_from_counts({0.1: 10, 0.5: 80, 1.0: 10}, 0.5) == 0.5
    assert stats.median([3, 1, 2, 10]) == 2.5
