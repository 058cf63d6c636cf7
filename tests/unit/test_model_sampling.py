"""Sampler: greedy, temperature, top-k, top-p, seeds, min_tokens, logprobs."""

from __future__ import annotations

import torch

from fastserve.protocol.common import SamplingParams
from fastserve.runtime.model.sampling import Sampler, SampleRequest

EOS = [2]
VOCAB = 50


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def _req(rid: str = "r", n: int = 0, **kw) -> SampleRequest:
    return SampleRequest(rid, SamplingParams(**kw), n)


def _sampler(seed: int = 0) -> Sampler:
    return Sampler(EOS, torch.device("cpu"), seed)


def test_greedy_is_argmax_with_its_logprob():
    logits = _logits(4)
    tokens, lps = _sampler().sample(logits, [_req(temperature=0.0)] * 4)
    assert tokens.tolist() == logits.argmax(-1).tolist()
    expected = torch.log_softmax(logits, -1).max(-1).values
    torch.testing.assert_close(lps, expected)


def test_top_k_one_equals_greedy():
    logits = _logits(8, seed=1)
    tokens, _ = _sampler().sample(logits, [_req(temperature=0.9, top_k=1)] * 8)
    assert tokens.tolist() == logits.argmax(-1).tolist()


def test_logprob_is_of_temperature_scaled_distribution():
    logits = _logits(3, seed=2)
    tokens, lps = _sampler().sample(logits, [_req(temperature=0.5)] * 3)
    expected = torch.log_softmax(logits / 0.5, -1).gather(1, tokens.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(lps, expected)


def _draws(sampler: Sampler, logits: torch.Tensor, req: SampleRequest, n: int) -> list[int]:
    return [int(sampler.sample(logits, [req])[0][0]) for _ in range(n)]


def test_same_seed_same_tokens_and_different_seeds_differ():
    flat = torch.zeros(1, VOCAB)
    a = _draws(_sampler(1), flat, _req("a", seed=42, temperature=1.0), 30)
    b = _draws(_sampler(2), flat, _req("b", seed=42, temperature=1.0), 30)
    c = _draws(_sampler(1), flat, _req("c", seed=43, temperature=1.0), 30)
    assert a == b
    assert a != c


def test_seeded_tokens_do_not_depend_on_batch_neighbours():
    logits = torch.zeros(3, VOCAB)
    alone, mixed = _sampler(0), _sampler(5)
    seeded = _req("s", seed=7, temperature=1.0, top_k=20)
    for step in range(10):
        t_alone, _ = alone.sample(logits[:1], [seeded])
        others = [_req("u", temperature=1.0, top_k=3), _req("g", temperature=0.0)]
        t_mixed, _ = mixed.sample(logits, [others[0], seeded, others[1]])
        assert int(t_alone[0]) == int(t_mixed[1]), step


def test_release_restarts_a_seeded_stream():
    sampler, flat = _sampler(), torch.zeros(1, VOCAB)
    req = _req("r", seed=3, temperature=1.0)
    first = _draws(sampler, flat, req, 5)
    sampler.release("r")
    assert _draws(sampler, flat, req, 5) == first


def test_top_k_only_samples_the_k_best():
    logits = _logits(1, seed=3)
    best = set(logits[0].topk(5).indices.tolist())
    got = set(_draws(_sampler(), logits, _req(temperature=2.0, top_k=5), 200))
    assert got <= best
    assert len(got) > 1


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = torch.full((1, VOCAB), -1e9)
    logits[0, :4] = probs.log()
    got = _draws(_sampler(), logits, _req(temperature=1.0, top_p=0.7), 300)
    assert set(got) == {0, 1}


def _wide_logits(vocab: int = 2000, seed: int = 9) -> torch.Tensor:
    """A flat-topped row over a large vocabulary: its top-p nucleus spans hundreds of
    tokens, far past the sampler's first candidate width."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, vocab, generator=g).log() * 0.3


def _nucleus(logits: torch.Tensor, top_k: int, top_p: float) -> set[int]:
    """The reference truncation: sort everything, keep top_k, then the smallest prefix whose
    renormalized mass reaches top_p."""
    vals, idx = logits[0].softmax(-1).sort(descending=True)
    vals, idx = vals[:top_k], idx[:top_k]
    mass_before = (vals / vals.sum()).cumsum(0) - vals / vals.sum()
    return set(idx[(mass_before < top_p) | (torch.arange(len(vals)) == 0)].tolist())


def _batch_draws(logits: torch.Tensor, req: SampleRequest, n: int) -> list[int]:
    """n draws in one call (n rows of the same logits, one uniform each)."""
    reqs = [SampleRequest(f"{req.request_id}{i}", req.params) for i in range(n)]
    tokens, _ = _sampler().sample(logits.expand(n, -1).clone(), reqs)
    return tokens.tolist()


def test_top_p_nucleus_wider_than_the_first_candidates():
    logits = _wide_logits()
    want = _nucleus(logits, top_k=2000, top_p=0.5)
    assert len(want) > 500  # the sampler must widen its candidates to hold it
    got = _batch_draws(logits, _req("p", temperature=1.0, top_p=0.5), 20000)
    assert set(got) <= want
    assert len(set(got)) > 0.9 * len(want)


def test_top_k_wider_than_the_first_candidates_with_top_p():
    logits = _wide_logits(seed=10)
    want = _nucleus(logits, top_k=300, top_p=0.8)
    got = _batch_draws(logits, _req("k", temperature=1.0, top_k=300, top_p=0.8), 20000)
    assert set(got) <= want
    assert len(set(got)) > 0.9 * len(want)


def test_truncated_sampling_follows_the_renormalized_distribution():
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = torch.full((1, 300), -1e9)
    logits[0, 100:104] = probs.log()  # the candidates sit away from index 0
    got = _batch_draws(logits, _req("t", temperature=1.0, top_k=3), 20000)
    freq = [got.count(100 + i) / len(got) for i in range(4)]
    for f, want in zip(freq, [4 / 9, 3 / 9, 2 / 9, 0.0], strict=True):
        assert abs(f - want) < 0.02, freq


def test_full_vocabulary_sampling_never_draws_a_masked_token():
    logits = torch.full((1, 5000), float("-inf"))
    logits[0, [0, 4999]] = 0.0  # mass only at both ends
    got = _batch_draws(logits, _req("m", temperature=1.0), 4000)
    assert set(got) == {0, 4999}
    assert abs(got.count(0) / len(got) - 0.5) < 0.05


def test_top_k_and_top_p_rows_mixed_with_plain_rows():
    logits = _logits(3, seed=4)
    reqs = [
        _req(temperature=1.0, top_k=2),
        _req(temperature=1.0),
        _req(temperature=1.0, top_p=0.01),
    ]
    sampler = _sampler()
    for _ in range(50):
        tokens, _ = sampler.sample(logits, reqs)
        assert int(tokens[0]) in logits[0].topk(2).indices.tolist()
        assert int(tokens[2]) == int(logits[2].argmax())


def test_temperature_sampling_follows_the_distribution():
    logits = torch.full((1, VOCAB), -1e9)
    logits[0, :3] = torch.tensor([0.6, 0.3, 0.1]).log()
    got = _draws(_sampler(), logits, _req(temperature=1.0), 2000)
    freq = [got.count(i) / len(got) for i in range(3)]
    assert abs(freq[0] - 0.6) < 0.05 and abs(freq[1] - 0.3) < 0.05 and abs(freq[2] - 0.1) < 0.04


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    logits = torch.zeros(1, VOCAB)
    logits[0, 2] = 50.0  # EOS overwhelmingly likely
    logits[0, 7] = 40.0  # then a stop token
    sampler = _sampler()
    for n in range(5):
        for temp in (0.0, 1.0):
            req = _req(n=n, min_tokens=5, stop_token_ids=[7], temperature=temp)
            token = int(sampler.sample(logits, [req])[0][0])
            assert token not in (2, 7)
    done = _req(n=5, min_tokens=5, stop_token_ids=[7], temperature=0.0)
    assert int(sampler.sample(logits, [done])[0][0]) == 2
