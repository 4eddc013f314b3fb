"""Canary judgement: how often the analysis catches a worse canary, how often it rolls back an
identical one, and how long it takes to decide — relative to stable against absolute thresholds.

    python benchmarks/canary_judgement.py                 # 200 simulated canaries per effect size
    python benchmarks/canary_judgement.py --runs 500 --rpm 600

Each simulated canary is a stable and a canary version serving noisy traffic (Poisson request
counts per minute, the canary at 10% of them; errors Bernoulli; latencies log-normal, binned
into the serving histogram's buckets, as Prometheus sees them). Every simulated minute the
metrics that are due are measured from the last minute (rates) or the last five minutes
(histograms) and fed to the operator's own analysis (`logic.analysis.start_run/advance`), until
the run has a verdict: Failed (rolled back), Successful (promoted) or Inconclusive (paused).

Two analyses judge the same traffic:

* relative (ours, the default when spec.analysis lists no metrics): error rate at most 1 point
  above stable's, p95 latency at most 1.5x stable's, and a Mann–Whitney U test of the latency
  histograms (at least 50 samples per side, effect >= 0.06, 95% confidence);
* absolute (the baseline, what a user writes without a comparison): error rate <= 5% and
  p95 latency <= 1.5x the stable's nominal p95, fixed in advance.

Printed per effect size: the share of runs rolled back (the detection rate for worse canaries;
the false rollback rate for identical ones, goal <= 5%), promoted, paused, and the median
minutes to a decision. Nothing passes or fails.
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _path in ("operator", ""):
    if str(REPO_ROOT / _path) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / _path))

from finetune_operator.api.rollout import AnalysisMetric, AnalysisPhase, Thresholds  # noqa: E402
from finetune_operator.logic import analysis  # noqa: E402
from finetune_operator.logic.analysis import Measured  # noqa: E402

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, math.inf)
STABLE_ERROR_RATE = 0.01
STABLE_MEDIAN_LATENCY = 0.4  # seconds
LATENCY_SIGMA = 0.5  # log-normal spread
NOMINAL_P95 = STABLE_MEDIAN_LATENCY * math.exp(1.645 * LATENCY_SIGMA)
MAX_MINUTES = 30


@dataclass(frozen=True)
class Effect:
    name: str
    error_rate: float  # canary's
    latency_factor: float  # canary's median latency / stable's


EFFECTS = (
    Effect("identical", STABLE_ERROR_RATE, 1.0),
    Effect("errors 1% -> 2%", 0.02, 1.0),
    Effect("errors 1% -> 3%", 0.03, 1.0),
    Effect("errors 1% -> 6%", 0.06, 1.0),
    Effect("latency x1.25", STABLE_ERROR_RATE, 1.25),
    Effect("latency x1.5", STABLE_ERROR_RATE, 1.5),
    Effect("latency x2", STABLE_ERROR_RATE, 2.0),
)


def relative_metrics() -> list[AnalysisMetric]:
    defaults = {m.name: m for m in analysis.default_metrics()}
    return [
        defaults[analysis.ERROR_RATE],
        defaults[analysis.LATENCY_P95],
        AnalysisMetric(name="latency-mann-whitney", query="q", mann_whitney={"min_samples": 50}, interval="1m",
                       count=5, failure_limit=1, inconclusive_limit=2),
    ]


def absolute_metrics() -> list[AnalysisMetric]:
    return [
        AnalysisMetric(name="error-rate", query="q", thresholds=Thresholds(max=0.05), inconclusive_band=0.01,
                       interval="1m", count=5, failure_limit=1, inconclusive_limit=2),
        AnalysisMetric(name="latency-p95", query="q", thresholds=Thresholds(max=1.5 * NOMINAL_P95),
                       interval="1m", count=5, failure_limit=1, inconclusive_limit=2),
    ]


def poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


@dataclass
class Minute:
    requests: int
    errors: int
    buckets: list[int]  # per-bucket counts of latencies


def serve(rng: random.Random, requests: int, error_rate: float, median: float) -> Minute:
    errors = sum(rng.random() < error_rate for _ in range(requests))
    counts = [0] * len(BUCKETS)
    for _ in range(requests):
        latency = median * math.exp(rng.gauss(0.0, LATENCY_SIGMA))
        counts[next(i for i, b in enumerate(BUCKETS) if latency <= b)] += 1
    return Minute(requests, errors, counts)


def cumulative(minutes: list[Minute]) -> dict[float, float]:
    totals = [sum(m.buckets[i] for m in minutes) for i in range(len(BUCKETS))]
    running, out = 0, {}
    for bound, count in zip(BUCKETS, totals):
        running += count
        out[bound] = float(running)
    return out


def p95(histogram: dict[float, float]) -> float | None:
    total = histogram[math.inf]
    if total == 0:
        return None
    below_bound, below_count = 0.0, 0.0
    for bound in BUCKETS:  # Prometheus' histogram_quantile: linear within the bucket
        count = histogram[bound]
        if count >= 0.95 * total:
            if bound == math.inf:
                return BUCKETS[-2]
            return below_bound + (bound - below_bound) * (0.95 * total - below_count) / max(count - below_count, 1e-9)
        below_bound, below_count = bound, count
    return None


def measure(metric: AnalysisMetric, canary: list[Minute], stable: list[Minute]) -> Measured:
    def error_rate(minutes: list[Minute]) -> float | None:
        last = minutes[-1]
        return None if last.requests == 0 else last.errors / last.requests

    if metric.mann_whitney is not None:
        return Measured(canary_samples=cumulative(canary[-5:]), stable_samples=cumulative(stable[-5:]))
    if metric.name == "error-rate":
        return Measured(value=error_rate(canary), stable_value=error_rate(stable))
    return Measured(value=p95(cumulative(canary[-5:])), stable_value=p95(cumulative(stable[-5:])))


def judge(metrics: list[AnalysisMetric], effect: Effect, seed: int, rpm: float, weight: float) -> tuple[str, int]:
    """One simulated canary: (verdict, minutes to it)."""
    rng = random.Random(seed)
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    run = analysis.start_run(metrics, 0, start)
    canary: list[Minute] = []
    stable: list[Minute] = []
    for minute in range(1, MAX_MINUTES + 1):
        total = poisson(rng, rpm)
        to_canary = sum(rng.random() < weight for _ in range(total))
        canary.append(serve(rng, to_canary, effect.error_rate, STABLE_MEDIAN_LATENCY * effect.latency_factor))
        stable.append(serve(rng, total - to_canary, STABLE_ERROR_RATE, STABLE_MEDIAN_LATENCY))
        now = start + datetime.timedelta(minutes=minute)
        due = analysis.due_metrics(metrics, run, now)
        run = analysis.advance(metrics, run, {m.name: measure(m, canary, stable) for m in due}, now)
        if run.phase != AnalysisPhase.RUNNING:
            return str(run.phase), minute
    return "Running", MAX_MINUTES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="simulated canaries per effect size (default 200)")
    parser.add_argument("--rpm", type=float, default=2000, help="requests per minute, both versions (default 2000)")
    parser.add_argument("--weight", type=float, default=0.10, help="canary share of traffic (default 0.10)")
    args = parser.parse_args(argv)
    sides = {"relative": relative_metrics(), "absolute": absolute_metrics()}
    print(f"{args.runs} simulated canaries per row; {args.rpm:g} requests/min, canary at {args.weight:.0%}; "
          f"stable: {STABLE_ERROR_RATE:.0%} errors, median latency {STABLE_MEDIAN_LATENCY}s "
          f"(nominal p95 {NOMINAL_P95:.2f}s); one measurement a minute, count 5, failureLimit 1")
    header = (f"{'canary':<18} {'analysis':<9} {'rolled back':>11} {'promoted':>9} {'paused':>7} "
              f"{'median min to decision':>23}")
    print()
    print(header)
    print("-" * len(header))
    for effect in EFFECTS:
        for side, metrics in sides.items():
            verdicts, minutes = [], []
            for run in range(args.runs):
                verdict, took = judge(metrics, effect, seed=run, rpm=args.rpm, weight=args.weight)
                verdicts.append(verdict)
                minutes.append(took)
            n = len(verdicts)
            rolled = verdicts.count("Failed") / n
            promoted = verdicts.count("Successful") / n
            paused = (verdicts.count("Inconclusive") + verdicts.count("Running")) / n
            print(f"{effect.name:<18} {side:<9} {rolled:>11.1%} {promoted:>9.1%} {paused:>7.1%} "
                  f"{statistics.median(minutes):>23g}")
    print()
    print("rolled back on the 'identical' rows is the false rollback rate (goal <= 5%); on the others it is the "
          "detection rate.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
