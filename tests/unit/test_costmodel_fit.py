"""CostModel: estimates, per-job service shares, fitting, persistence, profiling."""

import pytest

from fastserve.runtime.sched.cost_model import CostModel, profile


def test_affine_estimates() -> None:
    cm = CostModel.affine(0.002, 0.0005, 0.02, 0.001, 1e-6)
    assert cm.estimate_prefill(0) == 0.0
    assert cm.estimate_prefill(100) == pytest.approx(0.052)
    assert cm.estimate_prefill(4000) == pytest.approx(2.002)  # extrapolated
    assert cm.estimate_decode(0) == 0.0
    assert cm.estimate_decode(4, 1000) == pytest.approx(0.02 + 0.004 + 0.001)


def test_service_shares_sum_to_iteration_time() -> None:
    cm = CostModel.affine(0.0, 0.001, 0.02, 0.001)
    batch = [(100, True), (1, False), (1, False), (50, True)]
    shares = cm.service_shares(batch)
    assert shares == pytest.approx([0.1, 0.011, 0.011, 0.05])
    assert sum(shares) == pytest.approx(cm.iteration_time(batch))
    assert cm.service_shares([]) == []


def test_fit_recovers_affine_decode_and_piecewise_prefill() -> None:
    true = CostModel.affine(0.0, 0.0002, 0.025, 0.001, 2e-6)
    prefill = [(n, true.estimate_prefill(n)) for n in (16, 64, 256, 1024) for _ in range(3)]
    prefill.append((64, 10.0))  # one outlier: the median ignores it
    decode = [(b, b * c, true.estimate_decode(b, b * c)) for b in (1, 4, 16) for c in (100, 900)]
    cm = CostModel.fit(prefill, decode, meta={"device": "test"})
    assert cm.decode_base == pytest.approx(0.025)
    assert cm.decode_per_job == pytest.approx(0.001)
    assert cm.decode_per_context_token == pytest.approx(2e-6)
    for n in (16, 100, 500, 1024, 3000):
        assert cm.estimate_prefill(n) == pytest.approx(true.estimate_prefill(n))
    assert cm.meta == {"device": "test"}


def test_fit_keeps_prefill_monotone_and_drops_negative_terms() -> None:
    prefill = [(100, 0.05), (200, 0.04), (400, 0.2)]  # noisy dip at 200
    decode = [(1, 0, 0.02), (8, 0, 0.02), (1, 500, 0.03), (8, 4000, 0.01)]
    cm = CostModel.fit(prefill, decode)
    assert cm.estimate_prefill(200) >= cm.estimate_prefill(100)
    assert cm.decode_per_job >= 0 and cm.decode_per_context_token >= 0 and cm.decode_base >= 0
    single = CostModel.fit([(128, 0.064)], [(1, 0, 0.02)])
    assert single.estimate_prefill(256) == pytest.approx(0.128)
    assert single.estimate_decode(1) == pytest.approx(0.02)
    with pytest.raises(ValueError):
        CostModel.fit([], [(1, 0, 0.02)])


def test_json_round_trip(tmp_path) -> None:
    cm = CostModel.affine(0.001, 0.0003, 0.02, 0.001, 1e-6)
    cm.meta["model"] = "x"
    again = CostModel.from_json(cm.to_json())
    assert again == cm
    path = tmp_path / "profile.json"
    cm.save(str(path))
    assert CostModel.load(str(path)).estimate_prefill(777) == pytest.approx(
        cm.estimate_prefill(777)
    )


def test_profile_through_a_callback() -> None:
    true = CostModel.affine(0.003, 0.0004, 0.03, 0.002, 1e-6)
    calls = []

    def run_batch(new_tokens: list[int], context_lens: list[int]) -> float:
        calls.append((list(new_tokens), list(context_lens)))
        if context_lens == [0]:
            return true.estimate_prefill(new_tokens[0])
        return true.estimate_decode(len(new_tokens), sum(context_lens))

    cm = profile(run_batch, prefill_sizes=(16, 256, 1024), batch_sizes=(1, 4, 8), repeats=2)
    assert calls[0] == ([16], [0])  # warm-up first
    assert cm.estimate_prefill(512) == pytest.approx(true.estimate_prefill(512))
    assert cm.estimate_decode(6, 3000) == pytest.approx(true.estimate_decode(6, 3000))
