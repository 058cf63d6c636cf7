"""ModelRunner: swapping a job's KV out and back in mid-generation changes nothing."""

from __future__ import annotations

import torch

from fastserve.protocol.common import BlockCopy, SamplingParams
from fastserve.runtime.model.runner import BatchEntry, ModelRunner
from tests.engine_driver import greedy_generate
from tests.model_fixtures import make_tiny_llama_dir

GREEDY = SamplingParams(temperature=0.0)


def test_swap_out_and_back_in_to_other_blocks(tmp_path):
    path = make_tiny_llama_dir(tmp_path / "m", seed=5)
    prompt = list(range(20, 47))
    reference = greedy_generate(
        ModelRunner(path, "float32", "cpu", num_device_blocks=32, block_size=4), [prompt], 10
    )[0].tokens

    runner = ModelRunner(
        path, "float32", "cpu", num_device_blocks=32, block_size=4, num_host_blocks=16
    )
    table = list(range(10))  # 40 token slots
    tokens = [runner.execute([BatchEntry("a", prompt, 0, table, True, GREEDY)])[0].token_id]
    pos = len(prompt)
    for _ in range(4):
        out = runner.execute([BatchEntry("a", [tokens[-1]], pos, table, True, GREEDY)])
        tokens.append(out[0].token_id)
        pos += 1
    used = table[: -(-pos // 4)]
    host_ids = list(range(3, 3 + len(used)))
    runner.swap_out(BlockCopy("a", used, host_ids)).wait()
    runner.device_pool.storage.normal_()  # another job overwrites the freed blocks
    new_table = list(range(31, 31 - len(table), -1))
    handle = runner.swap_in(BlockCopy("a", host_ids, new_table[: len(used)]))
    # No explicit wait: execute() fences uploads into the blocks it is about to read.
    while len(tokens) < 10:
        out = runner.execute([BatchEntry("a", [tokens[-1]], pos, new_table, True, GREEDY)])
        tokens.append(out[0].token_id)
        pos += 1
    assert handle.done()
    assert tokens == reference
    runner.close()


def test_runner_properties(tmp_path):
    path = make_tiny_llama_dir(tmp_path / "m")
    runner = ModelRunner(path, "bfloat16", "auto", num_device_blocks=8, block_size=16)
    assert runner.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert runner.eos_token_ids == [2]
    assert runner.max_model_len == 1024
    assert runner.vocab_size == 265
    assert runner.kv_spec.bytes_per_block == 2 * 2 * 2 * 16 * 16 * 2
    assert runner.execute([]) == []
