"""Pipeline (and tensor x pipeline) parallelism over gloo on the CPU: greedy tokens and
log-probabilities equal a single process's, on a tiny model whose heads split over 3."""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime.dist import RankLayout
from fastserve.runtime.model.parallel import split_layers
from fastserve.runtime.model.runner import ModelRunner
from tests.engine_driver import divergence_report, greedy_generate
from tests.model_fixtures import make_tiny_llama_dir
from tests.parallel_driver import TP3_OVERRIDES, greedy_job, run_parallel

PROMPTS = [list(range(10, 10 + n)) for n in (3, 9, 17, 5, 26, 1, 12, 8)]
STEPS = 6


def test_split_layers_covers_every_layer_once():
    assert split_layers(30, 2) == [(0, 15), (15, 30)]
    assert split_layers(3, 2) == [(0, 2), (2, 3)]
    assert split_layers(7, 3) == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ValueError):
        split_layers(2, 3)


def test_rank_layout_reporting_rank():
    layout = RankLayout(tp=3, pp=2)
    assert [layout.reports_tokens(r) for r in range(6)] == [False] * 3 + [True, False, False]
    assert (layout.stage(4), layout.tp_rank(4)) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("tp,pp", [(3, 1), (1, 2), (3, 2)])
def test_parallel_greedy_equals_single_process(tmp_path, tp, pp):
    model = make_tiny_llama_dir(tmp_path / "m", seed=7, **TP3_OVERRIDES)
    ref_runner = ModelRunner(model, "float32", "cpu", num_device_blocks=64, block_size=4)
    reference = greedy_generate(ref_runner, PROMPTS, STEPS)
    got = run_parallel(RankLayout(tp, pp), tmp_path, greedy_job, model, PROMPTS, STEPS, 64, 4)
    for i, (a, b) in enumerate(zip(got, reference, strict=True)):
        assert divergence_report(a, b) is None, f"prompt {i}"
        assert a.tokens == b.tokens, f"prompt {i}"  # float32 on a tiny model: no near-ties
        top_a = torch.tensor([a.top[s][t] for s, t in enumerate(a.tokens)])
        top_b = torch.tensor([b.top[s][t] for s, t in enumerate(b.tokens)])
        torch.testing.assert_close(top_a, top_b, atol=1e-4, rtol=0)
