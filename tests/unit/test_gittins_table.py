"""Length distribution learning (Kaplan-Meier, window, tail) and the Gittins index tables."""

import math

import numpy as np
import pytest

from fastserve.runtime.sched.gittins_table import (
    Levels,
    bin_width,
    build_cap_table,
    hull_indices,
    tangent_slope,
)
from fastserve.runtime.sched.length_dist import LengthDist, LengthWindow


def dist_of(pmf: dict[int, float], max_len: int) -> LengthDist:
    p = np.zeros(max_len + 1)
    for t, mass in pmf.items():
        p[t] = mass
    return LengthDist(p / p.sum(), 0, 0, max(pmf), 0.0)


def brute_index(dist: LengthDist, cap: int, k: int) -> float:
    """sup_{k<b<=cap} (F(b)-F(k)) / (W(b)-W(k)), straight from the definition."""
    pmf = dist.pmf.copy()
    pmf[cap] += pmf[cap + 1 :].sum()
    pmf[cap + 1 :] = 0
    cdf = np.cumsum(pmf)
    w = np.concatenate([[0.0], np.cumsum(1 - cdf)])
    end = min(cap, int(np.nonzero(pmf)[0][-1]))  # past the last length there is no work
    return max((cdf[b] - cdf[k]) / (w[b] - w[k]) for b in range(k + 1, end + 1))


# -- length distribution -------------------------------------------------------------------


def test_kaplan_meier_with_censoring_and_tail() -> None:
    w = LengthWindow(100, 10)
    w.observe(2, censored=False)
    w.observe(3, censored=True)  # N > 3
    w.observe(5, censored=False)
    d = w.estimate()
    # h(2) = 1/3 -> S = 2/3; the censored one leaves the risk set after 3; h(5) = 1 -> 0.
    # KM leaves no mass past 5: 1/(2 finished + 1) goes to the log-uniform tail on 6..10.
    assert d.pmf[2] == pytest.approx(1 / 3 * 2 / 3)
    assert d.pmf[5] == pytest.approx(2 / 3 * 2 / 3)
    tail = np.array([1 / t for t in range(6, 11)])
    assert d.pmf[6:] == pytest.approx(tail / tail.sum() / 3)
    assert (d.largest_seen, d.num_finished, d.num_censored) == (5, 2, 1)
    assert d.pmf.sum() == pytest.approx(1.0)


def test_finish_reasons_and_in_flight_censoring() -> None:
    w = LengthWindow(100, 100)
    w.observe_end(10, "stop")  # event at 10
    w.observe_end(20, "length")  # N >= 20: censored at 19
    w.observe_end(7, "abort")  # N > 7
    w.observe_end(0, "abort")  # no information: dropped
    assert (len(w), w.num_finished) == (3, 1)
    d = w.estimate(in_flight=[30, 0])
    assert d.num_censored == 3 and d.largest_seen == 30
    assert d.pmf[10] == pytest.approx(1 / 3)  # 3 at risk at t = 10 (19, 30 and the event)
    assert d.pmf[:10].sum() == 0 and d.pmf[11:31].sum() == 0
    # Counting in-flight requests as censored raises the estimate: they are the long ones.
    assert d.mean > w.estimate().mean


def test_window_slides_and_caps_at_max_len() -> None:
    w = LengthWindow(3, 50)
    for n in (1, 2, 3, 4):
        w.observe(n, censored=False)
    assert (len(w), w.num_finished, w.total_finished) == (3, 3, 4)
    w.observe(9, censored=True)
    assert w.num_finished == 2
    w.observe(80, censored=False)  # beyond the largest allowed output: clipped
    w.observe(60, censored=True)  # N > 60 >= max_len: exactly max_len once clipped
    d = w.estimate()
    assert d.pmf[50] == pytest.approx(1.0) and d.tail_mass == 0.0  # 9 is censored before


def test_observed_moments_leave_the_tail_out() -> None:
    w = LengthWindow(1000, 4096)
    for n in range(50, 151):
        w.observe(n, censored=False)
    d = w.estimate()
    mean, cv = d.observed_moments()
    assert mean == pytest.approx(100, rel=1e-6) and cv == pytest.approx(0.29, abs=0.01)
    assert d.mean > mean  # the assumed tail to 4096 adds to the full mean


# -- hull and tables -----------------------------------------------------------------------


def test_hull_indices_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(2, 40))
        xs = np.cumsum(rng.uniform(0.1, 2.0, n)).tolist()
        ys = np.cumsum(rng.exponential(1.0, n) * (rng.random(n) < 0.6)).tolist()
        g, hull = hull_indices(xs, ys)
        for i in range(n - 1):
            best = max((ys[j] - ys[i]) / (xs[j] - xs[i]) for j in range(i + 1, n))
            assert g[i] == pytest.approx(best)
        qx = xs[1] - float(rng.uniform(0.01, 5.0))
        want = max((ys[j] - 0.0) / (xs[j] - qx) for j in range(1, n))
        got = tangent_slope(qx, 0.0, [xs[v] for v in hull], [ys[v] for v in hull])
        assert got == pytest.approx(want)


@pytest.mark.parametrize("cap", [40, 17, 5, 1])
def test_cap_table_matches_definition(cap: int) -> None:
    dist = dist_of({3: 0.5, 10: 0.2, 30: 0.3}, 40)
    table = build_cap_table(dist, cap, 1)
    end = min(cap, 30)
    for k in range(1, end):
        assert table.at(k) == pytest.approx(brute_index(dist, cap, k))
    if end > 1:
        assert table.at(end - 1) == pytest.approx(1.0)  # one token left, surely the last


def test_deterministic_lengths_rise_with_age_fcfs() -> None:
    table = build_cap_table(dist_of({50: 1.0}, 64), 64, 1)
    assert [table.at(k) for k in (1, 10, 49)] == pytest.approx([1 / 49, 1 / 40, 1.0])
    levels = Levels.fit(table, dist_of({50: 1.0}, 64), 8)
    by_age = [levels.level(table.at(k)) for k in range(1, 50)]
    assert by_age == sorted(by_age, reverse=True) and by_age[0] > by_age[-1]


def test_bimodal_index_drops_after_the_short_mode() -> None:
    dist = dist_of({10: 0.8, 200: 0.2}, 256)
    table = build_cap_table(dist, 256, 1)
    assert table.at(11) < table.at(1) / 10  # past 10 tokens it is surely a long one
    assert table.at(199) == pytest.approx(1.0)


def test_prefill_lowers_the_start_index() -> None:
    dist = dist_of({3: 0.5, 10: 0.2, 30: 0.3}, 40)
    table = build_cap_table(dist, 40, 1)
    assert table.before_prefill(1.0) == pytest.approx(table.index[0])  # Q = P_0
    starts = [table.before_prefill(c) for c in (0.1, 1.0, 5.0, 50.0)]
    assert starts == sorted(starts, reverse=True)
    # Brute force: steepest chord from (1 - c, 0) to the points b >= 1.
    cdf = np.cumsum(dist.pmf)
    w = np.concatenate([[0.0], np.cumsum(1 - cdf)])
    want = max(cdf[b] / (w[b] - (1 - 5.0)) for b in range(1, 41))
    assert table.before_prefill(5.0) == pytest.approx(want)


def test_bins_keep_tables_small() -> None:
    assert bin_width(4096, 4096) == 1 and bin_width(32768, 4096) == 8
    t = np.arange(1, 32769, dtype=float)
    smooth = np.exp(-((np.log(t) - 5.0) ** 2) / (2 * 1.5**2)) / t  # lognormal density
    d = dist_of(dict(enumerate(smooth, start=1)), 32768)
    table = build_cap_table(d, 32768, 8)
    exact = build_cap_table(d, 32768, 1)
    assert len(table.index) == 4096
    for k in (100, 1000, 10000):
        # A sup over bin boundaries only: never above the exact one, and close to it.
        assert table.at(k) <= exact.at(k - k % 8) * (1 + 1e-9)
        assert math.isclose(table.at(k), exact.at(k - k % 8), rel_tol=0.05)


def test_log_smoothing_keeps_mass_and_short_lengths_and_widens_with_length() -> None:
    from fastserve.runtime.sched.length_dist import log_smooth

    pmf = np.zeros(301)
    pmf[[1, 2, 100, 200]] = [0.1, 0.2, 0.3, 0.4]
    out = log_smooth(pmf, 0.5)
    assert out.sum() == pytest.approx(1.0) and out[0] == 0.0
    assert out[1] == pytest.approx(0.1)  # [1/1.5, 1.5] holds only 1
    assert out[2] == pytest.approx(0.2 / 2 + 0.3 * 0 + 0)  # 2 -> [2, 3]
    spread = np.nonzero(log_smooth(np.eye(301)[100], 0.5))[0]
    assert (spread[0], spread[-1]) == (67, 150)
    assert np.nonzero(log_smooth(np.eye(301)[200], 0.5))[0][-1] == 300  # cut at max_len


def test_smoothing_steadies_the_levels_of_a_sampled_heavy_tail() -> None:
    """200 lognormal lengths (CV ~3): the raw histogram's spikes make a job's level jump
    up and down with age; the smoothed estimate's levels change far less often."""
    rng = np.random.default_rng(0)
    sample = np.minimum(np.maximum(1, rng.lognormal(2.3, 1.5, 200).astype(int)), 1024)

    def level_changes(h: float) -> int:
        window = LengthWindow(500, 1024, smoothing=h)
        for n in sample:
            window.observe(int(n), censored=False)
        dist = window.estimate()
        table = build_cap_table(dist, 1024, 1)
        levels = Levels.fit(table, dist, 12)
        by_age = [levels.level(table.at(k)) for k in range(1, 400)]
        return sum(a != b for a, b in zip(by_age, by_age[1:], strict=False))

    raw, smooth = level_changes(0.0), level_changes(0.5)
    assert smooth < raw / 2, (raw, smooth)
    with pytest.raises(ValueError):
        LengthWindow(10, 100, smoothing=-0.1)
