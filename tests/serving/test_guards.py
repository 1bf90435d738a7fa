"""Guards: arm statistics, PSI, merging across workers and every verdict branch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kiln.core import InvalidInput
from kiln.serving.guards import PSI_MIN_SAMPLE, ArmStats, Verdict, judge, psi
from kiln.serving.specs import Guard

RNG = np.random.default_rng(42)
SAME = RNG.normal(0.3, 0.1, 4000)


def arm(
    requests: int,
    *,
    errors: int = 0,
    latency_ms: float = 5.0,
    predictions: np.ndarray | None = None,
    seed: int = 0,
) -> ArmStats:
    stats = ArmStats(seed=seed)
    preds = np.array_split(predictions, requests) if predictions is not None else None
    for i in range(requests):
        stats.record(
            latency_ms, error=i < errors, predictions=preds[i] if preds is not None else None
        )
    return stats


def champion() -> ArmStats:
    return arm(1000, predictions=RNG.normal(0.3, 0.1, 3000), seed=1)


def test_arm_stats_count_requests_errors_and_latency_quantiles() -> None:
    stats = ArmStats()
    assert stats.p95_ms is None and stats.error_rate == 0.0
    for ms in range(1, 101):
        stats.record(float(ms), error=ms % 10 == 0)
    assert stats.requests == 100 and stats.errors == 10
    assert stats.error_rate == pytest.approx(0.1)
    assert stats.p95_ms == pytest.approx(95.0, rel=0.03)
    assert stats.latency_quantile_ms(0.5) == pytest.approx(50.0, rel=0.03)
    stats.record(0.0)
    stats.record(float("nan"))
    stats.record(10**9)  # clipped into the last bin, never an error
    assert stats.requests == 103
    with pytest.raises(InvalidInput, match="a quantile must be in"):
        stats.latency_quantile_ms(1.5)


def test_the_prediction_sample_is_bounded_and_uniform() -> None:
    stats = ArmStats(sample_size=500, seed=3)
    for start in range(0, 10_000, 100):
        stats.record(1.0, predictions=np.arange(start, start + 100, dtype=float))
    stats.record(1.0, predictions=np.array([np.nan, np.inf]))
    sample = stats.predictions()
    assert len(sample) == 500 and stats.predictions_seen == 10_000
    assert np.mean(sample) == pytest.approx(5000, rel=0.08)  # not just the first values
    assert np.mean(sample < 5000) == pytest.approx(0.5, abs=0.08)
    stats.record(1.0, predictions=0.7)  # a scalar counts as one prediction
    assert stats.predictions_seen == 10_001


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    base = RNG.normal(0.3, 0.1, 5000)
    assert psi(base, RNG.normal(0.3, 0.1, 5000)) < 0.02
    assert psi(base, RNG.normal(0.45, 0.1, 5000)) > 0.5
    assert psi(base, base) == 0.0
    # an arm that puts everything in one bin is smoothed, not infinite
    assert np.isfinite(psi(base, np.full(100, 10.0)))
    assert psi(np.zeros(100), np.zeros(100)) == 0.0  # ties collapse the bins
    with pytest.raises(InvalidInput, match="at least one value"):
        psi([], [1.0])


def test_stats_survive_a_json_round_trip_and_merge_across_workers() -> None:
    a = arm(300, errors=30, latency_ms=2.0, predictions=RNG.normal(0, 1, 900), seed=1)
    b = arm(100, errors=0, latency_ms=50.0, predictions=RNG.normal(10, 1, 300), seed=2)
    again = ArmStats.from_dict(json.loads(json.dumps(a.to_dict())))
    assert (again.requests, again.errors, again.p95_ms) == (a.requests, a.errors, a.p95_ms)
    np.testing.assert_array_equal(again.predictions(), a.predictions())
    assert again.predictions_seen == a.predictions_seen

    merged = a.merge(b)
    assert (merged.requests, merged.errors) == (400, 30)
    assert merged.p95_ms == pytest.approx(50.0, rel=0.03)
    assert merged.latency_quantile_ms(0.5) == pytest.approx(2.0, rel=0.03)
    assert merged.predictions_seen == 1200
    sample = merged.predictions()
    assert len(sample) == 1200  # both fit: kept whole
    assert (a.requests, b.requests) == (300, 100)  # merge left its inputs alone


def test_merging_full_samples_weights_each_worker_by_what_it_saw() -> None:
    a = arm(100, predictions=np.zeros(30_000), seed=1)
    b = arm(100, predictions=np.ones(10_000), seed=2)
    sample = a.merge(b).predictions()
    assert len(sample) == 2048
    assert np.mean(sample) == pytest.approx(0.25, abs=0.02)


def test_from_dict_refuses_other_layouts() -> None:
    data = ArmStats().to_dict()
    with pytest.raises(InvalidInput, match="cannot be read by this version"):
        ArmStats.from_dict({**data, "latency_bins": [0.1, 1.1, 100]})
    with pytest.raises(InvalidInput, match=r"not a dict written by ArmStats\.to_dict"):
        ArmStats.from_dict({"format": 1})


def test_no_judgment_before_min_requests_even_with_errors() -> None:
    verdict = judge(Guard(min_requests=100), champion(), arm(99, errors=99), 0.0, 1000.0)
    assert verdict == Verdict("wait", ("challenger has 99 of 100 requests needed",))


def test_an_error_rate_over_the_limit_rolls_back_and_says_so() -> None:
    guard = Guard(max_error_rate=0.05, max_psi=None, min_requests=100)
    verdict = judge(guard, champion(), arm(240, errors=29), 0.0, 10.0)
    assert verdict.action == "rollback"
    assert verdict.reasons == ("error rate 0.121 > max 0.05 over 240 requests",)


def test_a_slow_challenger_rolls_back_on_p95() -> None:
    guard = Guard(max_error_rate=None, max_p95_ms=100.0, max_psi=None, min_requests=50)
    verdict = judge(guard, champion(), arm(200, latency_ms=250.0), 0.0, 10.0)
    assert verdict.action == "rollback"
    assert verdict.reasons[0].startswith("p95 latency 2")
    assert verdict.reasons[0].endswith("ms > max 100 ms over 200 requests")
    assert judge(guard, champion(), arm(200, latency_ms=80.0), 0.0, 10.0).action == "pass"


def test_shifted_predictions_roll_back_and_the_same_distribution_passes() -> None:
    guard = Guard(max_psi=0.25, min_requests=100)
    shifted = arm(500, predictions=RNG.normal(0.5, 0.1, 1500), seed=5)
    verdict = judge(guard, champion(), shifted, 0.0, 10.0)
    assert verdict.action == "rollback"
    assert verdict.reasons[0].startswith("PSI ")
    assert "> max 0.25 (1500 challenger vs 2048 champion predictions)" in verdict.reasons[0]
    same = arm(500, predictions=RNG.normal(0.3, 0.1, 1500), seed=6)
    assert judge(guard, champion(), same, 0.0, 10.0).action == "pass"


def test_every_breached_limit_is_named() -> None:
    guard = Guard(max_error_rate=0.01, max_p95_ms=10.0, max_psi=0.1, min_requests=100)
    bad = arm(300, errors=60, latency_ms=40.0, predictions=RNG.normal(2.0, 1.0, 900))
    reasons = judge(guard, champion(), bad, 0.0, 1.0).reasons
    assert [r.split(" ")[0] for r in reasons] == ["error", "p95", "PSI"]


def test_psi_is_not_judged_without_enough_champion_predictions() -> None:
    guard = Guard(max_psi=0.1, min_requests=100)
    challenger = arm(200, predictions=RNG.normal(5, 1, 400))
    verdict = judge(guard, ArmStats(), challenger, 0.0, 1.0)  # blue-green: champion idle
    assert verdict.action == "pass"
    assert (
        f"PSI not judged: 400 challenger and 0 champion predictions (needs {PSI_MIN_SAMPLE} each)"
        in verdict.reasons
    )


def test_a_passing_challenger_is_promoted_only_with_auto_promote_after_the_window() -> None:
    good = arm(200, errors=1, predictions=RNG.normal(0.3, 0.1, 600))
    manual = Guard(min_requests=100, window_s=60)
    auto = Guard(min_requests=100, window_s=60, auto_promote=True)
    assert judge(manual, champion(), good, 0.0, 3600.0).action == "pass"
    early = judge(auto, champion(), good, 100.0, 159.0)
    assert early.action == "pass"
    assert early.reasons[-1] == "59 s of window 60 s over 200 requests"
    late = judge(auto, champion(), good, 100.0, 160.0)
    assert late.action == "promote"
    assert late.reasons[0] == "passed for 60 s >= window 60 s over 200 requests"
    assert any(r.startswith("error rate 0.005 <= max 0.05") for r in late.reasons)
    assert judge(auto, champion(), arm(99), 0.0, 1e6).action == "wait"


def test_verdicts_are_frozen_and_arguments_are_checked() -> None:
    verdict = Verdict("pass")
    with pytest.raises(AttributeError):
        verdict.action = "promote"  # type: ignore[misc]
    with pytest.raises(InvalidInput, match="'guard' parameter of judge must be a Guard"):
        judge(None, ArmStats(), ArmStats(), 0.0, 0.0)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="'sample_size' parameter of ArmStats"):
        ArmStats(sample_size=0)
    with pytest.raises(InvalidInput, match="merge takes an ArmStats"):
        ArmStats().merge({})  # type: ignore[arg-type]
