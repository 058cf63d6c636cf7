"""Top-k and prompt log-probabilities, and grammar masks, in the sampler and the runner."""

from __future__ import annotations

import json
import math

import torch

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.frontend.guided import json_schema_grammar
from fastserve.runtime.model.grammar import GrammarBook
from fastserve.runtime.model.runner import BatchEntry, ModelRunner
from fastserve.runtime.model.sampling import Sampler, SampleRequest
from tests.model_fixtures import make_tiny_llama_dir

VOCAB = 50
BOOL_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def _logits(rows: int, seed: int = 0, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3


def test_top_logprobs_are_the_log_softmax_top_k_of_the_sampled_distribution():
    logits = _logits(4)
    reqs = [
        SampleRequest("a", SamplingParams(temperature=0.0, logprobs=True, top_logprobs=5)),
        SampleRequest("b", SamplingParams(temperature=0.0)),  # asked for none
        SampleRequest("c", SamplingParams(temperature=0.7, seed=1, logprobs=True, top_logprobs=3)),
        SampleRequest("d", SamplingParams(temperature=0.0, logprobs=True)),  # sampled only
    ]
    out = Sampler([2], torch.device("cpu")).run(logits, reqs)
    for i, temp, k in ((0, 1.0, 5), (2, 0.7, 3)):
        ref = torch.log_softmax(logits[i] / temp, -1)
        vals, ids = ref.topk(k)
        assert out.top_ids[i] == ids.tolist()
        assert torch.allclose(torch.tensor(out.top_logprobs[i]), vals, atol=1e-5)
        token = int(out.tokens[i])
        assert math.isclose(float(out.logprobs[i]), float(ref[token]), abs_tol=1e-5)
    assert out.top_ids[1] == [] and out.top_ids[3] == [] and out.top_logprobs[1] == []
    # Greedy: the sampled token is the likeliest alternative.
    assert out.top_ids[0][0] == int(out.tokens[0])


def _book(tmp_path) -> tuple[GrammarBook, object]:
    path = make_tiny_llama_dir(tmp_path / "m")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    return GrammarBook(path / "tokenizer.json", tok.get_vocab_size(), [2]), tok


def test_grammar_masks_only_constrained_rows_and_forces_valid_json(tmp_path):
    book, tok = _book(tmp_path)
    vocab = book.vocab_size
    grammar = json_schema_grammar(BOOL_SCHEMA)
    sampler = Sampler([2], torch.device("cpu"), grammar=book)
    free = SamplingParams(temperature=0.0)
    guided = SamplingParams(temperature=0.0, grammar=grammar, min_tokens=50)
    out_ids: list[int] = []
    for step in range(40):
        logits = _logits(2, seed=step, vocab=vocab)
        raw = logits.clone()
        tokens, _ = sampler.sample(logits, [SampleRequest("f", free), SampleRequest("g", guided)])
        assert int(tokens[0]) == int(raw[0].argmax())  # the unconstrained row is untouched
        if int(tokens[1]) == 2:
            break
        out_ids.append(int(tokens[1]))
    else:
        raise AssertionError("the grammar never allowed EOS")
    # min_tokens does not keep a finished grammar from ending.
    assert json.loads(tok.decode(out_ids)) in ({"ok": True}, {"ok": False})
    sampler.release("g")
    assert not book._matchers


def test_grammar_sampling_with_temperature_stays_valid(tmp_path):
    book, tok = _book(tmp_path)
    grammar = json_schema_grammar(
        {"type": "array", "items": {"enum": ["in", "the"]}, "minItems": 1, "maxItems": 3}
    )
    sampler = Sampler([2], torch.device("cpu"), grammar=book)
    params = SamplingParams(temperature=1.0, seed=3, grammar=grammar)
    ids: list[int] = []
    for step in range(60):
        token = int(
            sampler.sample(_logits(1, step, book.vocab_size), [SampleRequest("r", params)])[0][0]
        )
        if token == 2:
            break
        ids.append(token)
    value = json.loads(tok.decode(ids))
    assert 1 <= len(value) <= 3 and set(value) <= {"in", "the"}


def _runner(path) -> ModelRunner:
    return ModelRunner(path, "float32", "cpu", num_device_blocks=64, block_size=4)


def test_prompt_logprobs_match_a_full_forward_whether_chunked_or_not(tmp_path):
    path = make_tiny_llama_dir(tmp_path / "m", seed=3)
    prompt = [(7 * i + 3) % 250 + 3 for i in range(30)]
    table = list(range(10))
    ref_runner = _runner(path)
    reference = []  # log-softmax at each position, from a fresh prefill of each prefix
    for n in range(1, len(prompt)):
        _, full = ref_runner.execute_with_logprobs([BatchEntry("r", prompt[:n], 0, table)])
        reference.append(full[0])
    params = SamplingParams(temperature=0.0, logprobs=True, prompt_logprobs=2)
    results = []
    for cuts in ([30], [11, 8, 11], [1, 28, 1]):
        runner = _runner(path)
        start, out = 0, None
        for n in cuts:
            chunk = prompt[start : start + n]
            last = start + n == len(prompt)
            # A job that did not ask shares the batch and gets no prompt log-probabilities.
            other = BatchEntry("x", [5, 6, 7], 0, list(range(20, 30)), True, SamplingParams())
            got = runner.execute([BatchEntry("r", chunk, start, table, last, params), other])
            assert got[-1].request_id == "x" and got[-1].prompt is None
            if last:
                out = got[0].prompt
            else:
                assert len(got) == 1  # only the other job samples
            start += n
        assert out is not None and len(out.logprobs) == len(prompt) - 1
        results.append(out)
    for out in results:
        for i, row in enumerate(reference):
            assert math.isclose(out.logprobs[i], float(row[prompt[i + 1]]), abs_tol=1e-4)
            assert out.top_ids[i] == row.topk(2).indices.tolist()
    runner.release("r")
    assert not runner.prompt_logprobs._jobs and not runner.prompt_logprobs._delivered
