"""How GittinsPolicy moves from its prior to what it learns: the prior fades as requests
finish, and a young class is shrunk towards the pooled shape until it has its own."""

import pytest

from fastserve.runtime.sched.gittins import GittinsPolicy
from fastserve.runtime.sched.length_dist import LengthWindow, quantile_lengths
from tests.unit.test_gittins_policy import COST, teach


def pooled_mean(p: GittinsPolicy) -> float:
    return p.model.classes["*"].dist.observed_moments()[0]


def test_prior_pseudo_requests_weigh_what_they_are_given() -> None:
    window = LengthWindow(100, 1000)
    for _ in range(10):
        window.observe(10, censored=False)
    alone = window.estimate()
    assert window.estimate(prior=[100] * 10, prior_weight=0.0).pmf.tolist() == alone.pmf.tolist()
    half = window.estimate(prior=[100] * 10, prior_weight=1.0).observed_moments()[0]
    assert half == pytest.approx(55.0)  # ten real 10s and ten pseudo 100s
    tenth = window.estimate(prior=[100] * 10, prior_weight=0.1).observed_moments()[0]
    assert tenth == pytest.approx((10 * 10 + 100) / 11)


def test_the_prior_fades_out_as_requests_finish() -> None:
    p = GittinsPolicy(COST, min_completions=40, learn_after=10, length_smoothing=0.0)
    prior = pooled_mean(p)
    teach(p, [5] * 9)
    assert p.learning and pooled_mean(p) == prior  # 9 < learn_after: the prior alone
    teach(p, [5])
    assert not p.learning and p.num_rebuilds == 1
    blended = pooled_mean(p)
    assert 5 < blended < prior  # 10 finished against the prior at 3/4 of its weight
    teach(p, [5] * 10)  # rebuilt every learn_after ends while the prior still weighs
    assert p.num_rebuilds == 2 and 5 < pooled_mean(p) < blended
    teach(p, [5] * 10)
    teach(p, [5] * 10)  # the last rebuild with the prior was due 10 ends later
    assert p.model.prior_weight() == 0.0 and not p.model.blended
    assert pooled_mean(p) == pytest.approx(5.0)


def test_a_young_class_is_shrunk_towards_the_pooled_shape() -> None:
    p = GittinsPolicy(
        COST,
        min_completions=40,
        learn_after=10,
        rebuild_every=10,
        class_by="max_tokens",
        length_smoothing=0.0,
    )
    teach(p, [500] * 40, max_tokens=1024)
    teach(p, [3] * 10, max_tokens=16)
    young = p.model.classes["le16"].dist.observed_moments()[0]
    assert 3 < young < pooled_mean(p)  # its ten 3s pulled towards the pooled mix
    teach(p, [3] * 30, max_tokens=16)
    assert p.model.classes["le16"].dist.observed_moments()[0] == pytest.approx(3.0)


def test_quantile_lengths_describe_the_distribution() -> None:
    window = LengthWindow(1000, 1000)
    for n in (10, 10, 20, 40) * 250:
        window.observe(n, censored=False)
    # The last quantile stays below the tail past 40 (1 / 1001 of the mass).
    assert quantile_lengths(window.estimate(), 4) == [10, 10, 20, 40]
