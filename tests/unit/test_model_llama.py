"""Our Llama forward vs transformers, and batching/paging invariances, on a tiny model."""

from __future__ import annotations

import pytest
import torch

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.attention import SeqInput, build_metadata
from fastserve.runtime.model.runner import BatchEntry, ModelRunner
from tests.engine_driver import block_tables, greedy_generate
from tests.model_fixtures import make_tiny_llama_dir

transformers = pytest.importorskip("transformers")

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama_dir(tmp_path_factory.mktemp("tiny"), seed=0)


def _runner(path, **kw) -> ModelRunner:
    kw.setdefault("num_device_blocks", 128)
    kw.setdefault("block_size", 4)
    return ModelRunner(path, "float32", "cpu", **kw)


def _hf(path):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


def _all_logits(runner: ModelRunner, ids: list[int]) -> torch.Tensor:
    """Logits at every position of one prefill of `ids`."""
    table = block_tables(runner, [len(ids)])[0]
    meta = build_metadata([SeqInput(len(ids), 0, table)], runner.block_size, runner.device)
    with torch.inference_mode():
        return runner.model.forward(torch.tensor(ids), meta, runner._kv_layers, None)


def _prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 265, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_word_embeddings": True},
        {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]},
        {
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 32,
            }
        },
    ],
    ids=["llama", "tied", "qwen2-bias", "llama3-rope"],
)
def test_prefill_logits_match_transformers(tmp_path, overrides):
    path = make_tiny_llama_dir(tmp_path / "m", seed=1, **overrides)
    ids = _prompt(80, seed=2)
    ours = _all_logits(_runner(path), ids)
    with torch.inference_mode():
        ref = _hf(path)(torch.tensor([ids])).logits[0].float()
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("together", [True, False], ids=["split-k", "single-job"])
def test_decode_matches_transformers(tiny_dir, together):
    prompts = [_prompt(n, seed=n) for n in (3, 17, 40)]
    runner = _runner(tiny_dir)  # 4-token blocks: many split-K partials per job
    ours = greedy_generate(runner, prompts, max_new_tokens=24, together=together)
    model = _hf(tiny_dir)
    for prompt, got in zip(prompts, ours, strict=True):
        full = prompt + got.tokens
        with torch.inference_mode():
            ref = torch.log_softmax(model(torch.tensor([full])).logits[0].float(), -1)
        for step, token in enumerate(got.tokens):
            row = ref[len(prompt) - 1 + step]
            assert int(row.argmax()) == token or row.max() - row[token] < 1e-4
            assert abs(float(row[token]) - got.top[step][token]) < 1e-4


def _entry(rid, ids, start, table, sample=True):
    return BatchEntry(rid, ids, start, table, sample, GREEDY, 0)


def test_mixed_batch_equals_each_job_alone(tiny_dir):
    """Decodes, a fresh prefill and a continued (chunked) prefill in one forward."""
    runner = _runner(tiny_dir)
    lengths = {"d1": 50, "d2": 3, "p": 30, "c": 37}
    tables = dict(zip(lengths, block_tables(runner, list(lengths.values())), strict=True))
    ids = {rid: _prompt(n, seed=i) for i, (rid, n) in enumerate(lengths.items())}
    # Cache everything but the last token of the decodes and the last 15 tokens of "c".
    warm = [
        _entry("d1", ids["d1"][:49], 0, tables["d1"]),
        _entry("d2", ids["d2"][:2], 0, tables["d2"]),
        _entry("c", ids["c"][:22], 0, tables["c"]),
    ]
    runner.execute(warm)
    batch = [
        _entry("p", ids["p"], 0, tables["p"]),
        _entry("d1", ids["d1"][49:], 49, tables["d1"]),
        _entry("c", ids["c"][22:], 22, tables["c"]),
        _entry("d2", ids["d2"][2:], 2, tables["d2"]),
    ]
    _, together = runner.execute_with_logprobs(batch)
    for i, entry in enumerate(batch):
        # Alone, from scratch, on fresh blocks: the same distribution must come out.
        alone = _runner(tiny_dir)
        table = block_tables(alone, [lengths[entry.request_id]], shuffle_seed=i)[0]
        full = ids[entry.request_id]
        _, lp = alone.execute_with_logprobs([_entry(entry.request_id, full, 0, table)])
        torch.testing.assert_close(together[i], lp[0], atol=1e-4, rtol=0)


def test_shuffled_block_ids_give_same_results(tiny_dir):
    prompts = [_prompt(n, seed=n) for n in (5, 23, 41)]
    plain = greedy_generate(_runner(tiny_dir), prompts, 12)
    shuffled = greedy_generate(_runner(tiny_dir), prompts, 12, shuffle_seed=7)
    for a, b in zip(plain, shuffled, strict=True):
        assert a.tokens == b.tokens
        for ta, tb in zip(a.top, b.top, strict=True):
            assert ta.keys() == tb.keys()
            assert max(abs(ta[k] - tb[k]) for k in ta) < 1e-4


def test_chunked_prefill_equals_whole_prefill(tiny_dir):
    ids = _prompt(45, seed=9)
    runner = _runner(tiny_dir)
    table = block_tables(runner, [45])[0]
    _, whole = runner.execute_with_logprobs([_entry("a", ids, 0, table)])
    chunked = _runner(tiny_dir)
    for start, end in ((0, 16), (16, 17), (17, 40)):
        chunked.execute([_entry("a", ids[start:end], start, table, sample=False)])
    _, last = chunked.execute_with_logprobs([_entry("a", ids[40:], 40, table)])
    torch.testing.assert_close(whole, last, atol=1e-4, rtol=0)


def test_bfloat16_runs_close_to_float32(tiny_dir):
    ids = _prompt(30, seed=4)
    fp32 = _runner(tiny_dir)
    bf16 = ModelRunner(tiny_dir, "bfloat16", "cpu", num_device_blocks=64, block_size=4)
    assert bf16.device_pool.storage.dtype == torch.bfloat16
    table = block_tables(fp32, [31])[0]
    _, a = fp32.execute_with_logprobs([_entry("a", ids, 0, table)])
    _, b = bf16.execute_with_logprobs([_entry("a", ids, 0, table)])
    _, a2 = fp32.execute_with_logprobs([_entry("a", [5], 30, table)])
    _, b2 = bf16.execute_with_logprobs([_entry("a", [5], 30, table)])
    assert (a.exp() - b.exp()).abs().max() < 0.05
    assert (a2.exp() - b2.exp()).abs().max() < 0.05


def test_results_follow_caller_order_and_skip_unsampled(tiny_dir):
    runner = _runner(tiny_dir)
    t1, t2, t3 = block_tables(runner, [10, 10, 10])
    batch = [
        _entry("x", _prompt(6, 1), 0, t1),
        _entry("y", _prompt(7, 2), 0, t2, sample=False),
        _entry("z", _prompt(1, 3), 0, t3),
    ]
    out = runner.execute(batch)
    assert [s.request_id for s in out] == ["x", "z"]
    assert all(s.logprob <= 0 for s in out)


def test_block_table_too_short_is_an_error(tiny_dir):
    runner = _runner(tiny_dir)
    with pytest.raises(ValueError, match="cannot hold"):
        runner.execute([_entry("a", _prompt(9, 1), 0, [0, 1])])
