"""A/B statistics tested for what they promise, on simulated exposure and outcome tables.

The pipeline is not run here: exposures (who was recommended what, in which arm) and outcomes
(events after the run date) are drawn with a known truth, then attributed and read out.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from recsys_core.abtest import (
    NO_FEEDBACK,
    SRM_BLOCKED,
    ExperimentChangedError,
    assign_arms,
    attribute,
    bucket,
    difference_in_proportions,
    pin_experiment,
    readout,
    srm_test,
    wilson_interval,
)
from recsys_core.config import AbTestConfig, Settings
from recsys_core.io import Warehouse

D0 = dt.date(2026, 3, 1)
ARMS = {"control": "popularity", "treatment": "ease"}
SHARES = {"control": 0.5, "treatment": 0.5}


def _wilson99(k: int, n: int) -> tuple[float, float]:
    return wilson_interval(k, n, 0.99)


# ---- assignment -----------------------------------------------------------------------------------
def test_assignment_is_a_stable_hash_of_salt_and_user():
    users = [f"u{i}" for i in range(20_000)]
    a = assign_arms(users, {"a": 0.2, "b": 0.8}, "exp1")
    # the same on every call, in any order, one user at a time (new users assigned the same way)
    b = assign_arms(list(reversed(users)), {"a": 0.2, "b": 0.8}, "exp1")
    assert dict(a.iter_rows()) == dict(b.iter_rows())
    one = assign_arms(["u17"], {"a": 0.2, "b": 0.8}, "exp1")["arm"][0]
    assert one == dict(a.iter_rows())["u17"]
    assert one == ("a" if bucket("exp1", "u17") < 0.2 else "b")
    # shares respected (20,000 users: 20% +- 1 point is > 3 sigma) and the salt reshuffles
    share_a = (a["arm"] == "a").mean()
    assert abs(share_a - 0.2) < 0.01
    c = assign_arms(users, {"a": 0.2, "b": 0.8}, "exp2")
    assert (a["arm"] != c["arm"]).mean() > 0.2


# ---- the statistics on counts ---------------------------------------------------------------------
def test_aa_false_positive_rate_on_counts_is_nominal():
    """20,000 A/A experiments drawn as binomial counts: p < 0.05 about 5% of the time."""
    rng = np.random.default_rng(1)
    n, p, runs = 800, 0.12, 20_000
    x1, x2 = rng.binomial(n, p, size=runs), rng.binomial(n, p, size=runs)
    hits = sum(
        difference_in_proportions(a, n, b, n).p_value < 0.05 for a, b in zip(x1, x2, strict=True)
    )
    low, high = _wilson99(hits, runs)
    print(
        f"A/A false-positive rate on counts: {hits / runs:.4f} (99% interval {low:.4f}-{high:.4f})"
    )
    assert low <= 0.05 <= high + 0.005  # the pooled z-test is very slightly conservative


def test_interval_covers_the_true_difference_at_its_nominal_rate():
    rng = np.random.default_rng(2)
    n1, n2, p1, p2, runs = 600, 500, 0.10, 0.14, 20_000
    x1, x2 = rng.binomial(n1, p1, size=runs), rng.binomial(n2, p2, size=runs)
    covered = 0
    for a, b in zip(x1, x2, strict=True):
        d = difference_in_proportions(a, n1, b, n2)
        covered += d.low <= p2 - p1 <= d.high
    rate = covered / runs
    low, high = _wilson99(covered, runs)
    print(f"coverage of the 95% Newcombe interval: {rate:.4f} (99% interval {low:.4f}-{high:.4f})")
    assert 0.94 <= rate <= 0.965


def test_difference_is_second_minus_first_and_detects_a_real_effect():
    d = difference_in_proportions(100, 1000, 150, 1000)
    assert d.diff == pytest.approx(0.05)
    assert 0 < d.low < 0.05 < d.high
    assert d.p_value < 0.01
    flat = difference_in_proportions(0, 10, 0, 10)
    assert flat.p_value == 1.0 and flat.low <= 0 <= flat.high


def test_srm_flags_a_planted_mismatch_and_passes_a_fair_split():
    assert srm_test([5000, 5100], [0.5, 0.5]) > 0.001
    assert srm_test([5000, 4500], [0.5, 0.5]) < 1e-5  # 5% of one arm lost
    assert srm_test([2000, 8000], [0.2, 0.8]) > 0.001
    assert srm_test([0, 0], [0.5, 0.5]) == 1.0
    with pytest.raises(ValueError, match="one count per share"):
        srm_test([1, 2, 3], [0.5, 0.5])


# ---- simulated exposure and outcome tables --------------------------------------------------------
def _world(
    seed: int,
    *,
    users: int = 1500,
    nights: int = 3,
    p: dict[str, float] | None = None,
    shares: dict[str, float] = SHARES,
    drop_arm: tuple[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Exposures (5 items per user per night) and events; a user hits a night's list with
    probability ``p[arm]`` (one click on one of its items the next day) and also clicks an
    unrelated item. ``drop_arm`` = (arm, fraction): that share of the arm's users is lost from
    the logs (exposures, events and assignments), a planted sample-ratio mismatch."""
    rng = np.random.default_rng(seed)
    p = p or {"control": 0.1, "treatment": 0.1}
    ids = [f"u{seed}-{i}" for i in range(users)]
    assigned = assign_arms(ids, shares, f"salt-{seed}")
    if drop_arm:
        arm, frac = drop_arm
        lost = (assigned["arm"] == arm) & pl.Series(rng.random(users) < frac)
        assigned = assigned.filter(~lost)
    exp_rows, ev_rows = [], []
    items = np.array([f"i{j:03d}" for j in range(200)])
    for night in range(nights):
        day = D0 + dt.timedelta(days=night)
        for user, arm in assigned.iter_rows():
            recs = rng.choice(200, size=5, replace=False)
            exp_rows += [(day, user, arm, items[j]) for j in recs]
            if rng.random() < p[arm]:
                ev_rows.append((user, items[recs[rng.integers(5)]], "click", day + dt.timedelta(1)))
            ev_rows.append((user, items[rng.integers(200)], "view", day + dt.timedelta(1)))
    exposures = pl.DataFrame(
        exp_rows, schema=["run_date", "user_id", "arm", "item_id"], orient="row"
    )
    events = pl.DataFrame(
        ev_rows, schema=["user_id", "item_id", "event_type", "date"], orient="row"
    )
    counts = dict(assigned.group_by("arm").len().iter_rows())
    return exposures, events, counts


def _read(exposures, events, counts, as_of, shares=SHARES, **kw):
    nights = attribute(exposures, events, as_of=as_of, window_days=1, hit_events=["click"])
    return readout(nights, counts, ARMS, shares, experiment="t", as_of=as_of, min_users=100, **kw)


def _aa_rate(seeds: range) -> tuple[int, int]:
    false_pos = 0
    for seed in seeds:
        exp, ev, counts = _world(seed, users=600, nights=2)
        out = _read(exp, ev, counts, D0 + dt.timedelta(days=2))
        assert out["decision"] != SRM_BLOCKED or out["srm_p_value"] < 0.001
        false_pos += out["p_value"] < 0.05
    return false_pos, len(seeds)


def test_aa_on_tables_few_seeds():
    k, n = _aa_rate(range(12))
    low, high = wilson_interval(k, n)
    print(
        f"A/A on tables: {k}/{n} false positives ({k / n:.3f}, 95% interval {low:.3f}-{high:.3f})"
    )
    assert k <= 3  # P(>= 4 of 12 | 5%) < 0.3%


@pytest.mark.slow
def test_aa_on_tables_many_seeds():
    k, n = _aa_rate(range(100, 300))
    low, high = wilson_interval(k, n)
    print(
        f"A/A on tables: {k}/{n} false positives ({k / n:.3f}, 95% interval {low:.3f}-{high:.3f})"
    )
    assert low <= 0.05 <= high


@pytest.mark.slow
def test_interval_coverage_on_tables():
    """The true per-user difference of the simulated world: 1-(1-p)^nights per arm."""
    truth = (1 - 0.85**2) - (1 - 0.9**2)
    covered = 0
    seeds = range(500, 620)
    for seed in seeds:
        exp, ev, counts = _world(seed, users=600, nights=2, p={"control": 0.1, "treatment": 0.15})
        out = _read(exp, ev, counts, D0 + dt.timedelta(days=2))
        covered += out["ci"][0] <= truth <= out["ci"][1]
    low, high = wilson_interval(covered, len(seeds))
    print(f"coverage on tables: {covered}/{len(seeds)} (95% interval {low:.3f}-{high:.3f})")
    assert low <= 0.95 <= high


def test_readout_finds_a_planted_effect_and_names_the_winner():
    exp, ev, counts = _world(7, p={"control": 0.08, "treatment": 0.16})
    out = _read(exp, ev, counts, D0 + dt.timedelta(days=3))
    assert out["decision"] == "treatment wins" and out["winner"] == "treatment"
    assert out["ci"][0] > 0 and out["p_value"] < 0.05
    assert out["comparison"] == "treatment - control"
    for key in ("arms", "difference", "ci", "p_value", "srm_p_value", "decision"):
        assert key in out
    assert [a["name"] for a in out["arms"]] == ["control", "treatment"]
    assert all(set(a) >= {"users", "hit_rate"} for a in out["arms"])


def test_unit_is_the_user_not_the_user_night():
    exp, ev, counts = _world(3, users=400, nights=3)
    out = _read(exp, ev, counts, D0 + dt.timedelta(days=3))
    assert sum(a["users"] for a in out["arms"]) == 400  # 3 nights, still 400 users
    assert out["nights_with_feedback"] == 3


def test_planted_sample_ratio_mismatch_blocks_the_decision():
    exp, ev, counts = _world(
        11, users=3000, p={"control": 0.08, "treatment": 0.16}, drop_arm=("treatment", 0.12)
    )
    out = _read(exp, ev, counts, D0 + dt.timedelta(days=3))
    assert out["srm"] is True and out["srm_p_value"] < 0.001
    assert out["decision"] == SRM_BLOCKED and out["winner"] is None
    assert "SAMPLE RATIO MISMATCH" in out["reason"]


def test_no_feedback_yet_says_so():
    exp, ev, counts = _world(5, users=200, nights=1)
    out = _read(exp, ev, counts, D0)  # the night's own date: no day after it yet
    assert out["decision"] == NO_FEEDBACK
    assert out["difference"] is None and out["p_value"] is None
    assert "No feedback yet" in out["reason"]


def test_attribution_window_and_hit_events():
    exposures = pl.DataFrame(
        {"run_date": [D0] * 2, "user_id": ["a", "b"], "arm": ["x", "y"], "item_id": ["i1", "i1"]}
    )
    events = pl.DataFrame(
        {
            "user_id": ["a", "a", "b", "b"],
            "item_id": ["i1", "i1", "i1", "i2"],
            "event_type": ["view", "click", "click", "click"],
            "date": [D0, D0 + dt.timedelta(3), D0 + dt.timedelta(1), D0 + dt.timedelta(1)],
        }
    )
    out = attribute(
        exposures, events, as_of=D0 + dt.timedelta(5), window_days=2, hit_events=["click"]
    )
    got = {r["user_id"]: (r["hit"], r["feedback_days"]) for r in out.iter_rows(named=True)}
    # a: a same-day view and a click 3 days later (outside 1..2) -> no hit; b: click on day 1
    assert got == {"a": (False, 2), "b": (True, 2)}


# ---- configuration and the experiment's definition ------------------------------------------------
def test_bad_experiment_configs_are_refused():
    with pytest.raises(ValidationError, match="unknown model 'bogus'"):
        Settings(abtest={"experiment": "e", "arms": {"a": "popularity", "b": "bogus"}})
    with pytest.raises(ValidationError, match="sum to 1"):
        AbTestConfig(experiment="e", arms=ARMS, shares={"control": 0.5, "treatment": 0.6})
    with pytest.raises(ValidationError, match="expected the arms"):
        AbTestConfig(experiment="e", arms=ARMS, shares={"control": 1.0})
    with pytest.raises(ValidationError, match="at least 2 arms"):
        AbTestConfig(experiment="e", arms={"a": "ease"})
    assert Settings().abtest.experiment is None


def test_arm_changed_mid_experiment_is_refused_unless_renamed(tmp_path):
    wh = Warehouse(tmp_path)
    cfg = AbTestConfig(experiment="e1", arms=ARMS)
    pin_experiment(wh, cfg, D0)
    pin_experiment(wh, cfg, D0 + dt.timedelta(1))  # unchanged: fine
    changed = AbTestConfig(experiment="e1", arms={"control": "popularity", "treatment": "als"})
    with pytest.raises(ExperimentChangedError, match="rename the experiment"):
        pin_experiment(wh, changed, D0 + dt.timedelta(2))
    reshared = AbTestConfig(experiment="e1", arms=ARMS, shares={"control": 0.3, "treatment": 0.7})
    with pytest.raises(ExperimentChangedError, match="shares"):
        pin_experiment(wh, reshared, D0 + dt.timedelta(2))
    renamed = AbTestConfig(experiment="e2", arms=changed.arms)
    assert pin_experiment(wh, renamed, D0 + dt.timedelta(2))["started"] == "2026-03-03"


def test_assignments_round_trip_through_sql(tmp_path):
    from recsys_core.serving import read_assignments_sql, write_assignments_sql

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    frame = assign_arms(["u1", "u2", "u3"], SHARES, "s").with_columns(
        pl.lit("e1").alias("experiment"),
        pl.lit("m1").alias("model_id"),
        pl.lit(D0).alias("run_date"),
    )
    write_assignments_sql(frame, url, D0)
    write_assignments_sql(frame, url, D0)  # a re-run replaces the date
    back = read_assignments_sql(url, D0)
    assert back.height == 3
    assert dict(back.select("user_id", "arm").iter_rows()) == dict(
        frame.select("user_id", "arm").iter_rows()
    )
