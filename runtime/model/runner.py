"""ModelRunner: the engine a worker drives, one batch per call.

It owns the model shard, the device and host KV pools, the block swapper and the sampler.
It keeps no per-request token state: each call says, per job, which tokens to compute,
where the job's KV lives (block table) and whether to sample (a `BatchEntry`, the type the
worker's job table builds). It returns the protocol's `SampledToken`s, which the worker
reports as they are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fastserve.protocol.common import BlockCopy
from fastserve.protocol.to_scheduler import SampledToken
from fastserve.runtime.kv.pools import DeviceKVPool, HostKVPool
from fastserve.runtime.kv.spec import KVCacheSpec
from fastserve.runtime.kv.swapper import BlockSwapper, SwapHandle
from fastserve.runtime.model.attention import SeqInput, build_metadata
from fastserve.runtime.model.config import ModelConfig
from fastserve.runtime.model.cuda_graphs import DecodeGraphs
from fastserve.runtime.model.device_caps import resolve_dtype
from fastserve.runtime.model.grammar import GrammarBook
from fastserve.runtime.model.llama import LlamaModel
from fastserve.runtime.model.parallel import PPStage, TPGroup
from fastserve.runtime.model.prompt_logprobs import PromptLogprobs
from fastserve.runtime.model.sampling import Sampler, SampleRequest
from fastserve.runtime.worker_state import BatchEntry


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' picks CUDA when present, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# A forward's extra logit rows for prompt log-probabilities: (entry, chunk offsets, logits).
PromptRows = list[tuple[BatchEntry, list[int], torch.Tensor]]


class ModelRunner:
    """Loads a model directory and executes batches over a paged KV cache."""

    def __init__(
        self,
        model_dir: str | Path,
        dtype: str | torch.dtype = "float32",
        device: str | torch.device = "auto",
        num_device_blocks: int = 256,
        block_size: int = 16,
        num_host_blocks: int = 0,
        *,
        seed: int = 0,
        tp: TPGroup | None = None,
        pp: PPStage | None = None,
    ):
        self.model_dir = Path(model_dir)
        self.dtype = resolve_dtype(dtype)
        self.device = resolve_device(device)
        self.tp = tp or TPGroup()
        self.pp = pp or PPStage()
        self.config = ModelConfig.from_model_dir(self.model_dir)
        self.model = LlamaModel.load(
            self.model_dir, self.dtype, self.device, self.tp, self.config, self.pp
        )
        self.block_size = block_size
        # Pools hold this rank's kv heads of its stage's layers; block ids are global.
        num_layers = len(self.pp.layers(self.config.num_layers))
        self.kv_spec = KVCacheSpec.for_model(
            self.config, block_size, self.dtype, self.tp.size, num_layers
        )
        self.device_pool = DeviceKVPool(self.kv_spec, num_device_blocks, self.device)
        self.host_pool = HostKVPool(self.kv_spec, num_host_blocks)
        self.swapper = BlockSwapper(self.device_pool, self.host_pool)
        self.swap_wait_s = 0.0  # total seconds forwards waited for uploads into their blocks
        grammar = GrammarBook(
            self.model_dir / "tokenizer.json", self.vocab_size, self.config.eos_token_ids
        )
        self.sampler = Sampler(self.config.eos_token_ids, self.device, seed, grammar)
        self.prompt_logprobs = PromptLogprobs()
        self._kv_layers = [
            (self.device_pool.key_blocks(i), self.device_pool.value_blocks(i))
            for i in range(num_layers)
        ]
        # Decode steps replayed from CUDA graphs where they apply (cuda_graphs.py).
        self.graphs = (
            DecodeGraphs(self.model, self._kv_layers, block_size, self.max_model_len)
            if DecodeGraphs.usable(self.model)
            else None
        )

    @property
    def eos_token_ids(self) -> list[int]:
        return list(self.config.eos_token_ids)

    @property
    def max_model_len(self) -> int:
        return self.config.max_position_embeddings

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def samples(self) -> bool:
        """Whether this rank computes logits and samples (the last pipeline stage)."""
        return self.pp.is_last

    def execute(self, entries: Sequence[BatchEntry]) -> list[SampledToken]:
        """Run one batch; return a token for each entry with sample=True, in entry order
        (nothing on a pipeline stage before the last: it only passes activations on)."""
        logits, sampled, prompt_rows = self._run(entries)
        return self._sample(logits, sampled, prompt_rows)

    def execute_with_logprobs(
        self, entries: Sequence[BatchEntry]
    ) -> tuple[list[SampledToken], torch.Tensor]:
        """Like execute, plus the full log-softmax of the raw last-position logits
        ([n_sampled, vocab] float32 on the CPU), e.g. for near-tie checks in tests."""
        logits, sampled, prompt_rows = self._run(entries)
        full = torch.log_softmax(logits, dim=-1).cpu()
        return self._sample(logits, sampled, prompt_rows), full

    def release(self, request_id: str) -> None:
        """Drop what the runner keeps for a finished or aborted request."""
        self.sampler.release(request_id)
        self.prompt_logprobs.release(request_id)

    def swap_out(self, copy: BlockCopy) -> SwapHandle:
        """Start offloading a job's device blocks to host blocks."""
        return self.swapper.offload(copy.src_block_ids, copy.dst_block_ids)

    def swap_in(self, copy: BlockCopy) -> SwapHandle:
        """Start uploading a job's host blocks to device blocks."""
        return self.swapper.upload(copy.src_block_ids, copy.dst_block_ids)

    def close(self) -> None:
        self.pp.wait_sends()
        self.swapper.close()

    def _forward(self, entries: Sequence[BatchEntry]) -> tuple[torch.Tensor, list[BatchEntry]]:
        """The batch's forward: logits of the sampled entries, in caller order."""
        logits, sampled, _ = self._run(entries)
        return logits, sampled

    @torch.inference_mode()
    def _run(
        self, entries: Sequence[BatchEntry]
    ) -> tuple[torch.Tensor, list[BatchEntry], PromptRows]:
        """_forward, plus the logits of the prompt positions of the jobs that asked for
        prompt log-probabilities (only theirs: other jobs' rows never reach the head)."""
        if not entries:
            return torch.empty((0, self.vocab_size)), [], []
        # Single-token jobs first: attention runs them together (see attention.py).
        order = sorted(range(len(entries)), key=lambda i: len(entries[i].token_ids) != 1)
        ordered = [entries[i] for i in order]
        ids: list[int] = []
        rows: list[int] = []
        extra_rows: list[int] = []
        asked: list[tuple[BatchEntry, list[int]]] = []
        for e in ordered:
            if not e.token_ids:
                raise ValueError(f"{e.request_id}: batch entry with no tokens")
            if e.start_pos + len(e.token_ids) > self.max_model_len:
                raise ValueError(f"{e.request_id}: exceeds max_model_len {self.max_model_len}")
            if PromptLogprobs.asked(e):
                offsets = self.prompt_logprobs.rows(e)
                asked.append((e, offsets))
                extra_rows += [len(ids) + o for o in offsets]
            ids.extend(e.token_ids)
            if e.sample:
                rows.append(len(ids) - 1)
        if self.swapper.has_pending_uploads():
            fence_start = time.perf_counter()
            self.swapper.fence_uploads({b for e in ordered for b in e.block_table})
            self.swap_wait_s += time.perf_counter() - fence_start
        if self.graphs is not None and not asked and self.graphs.fits(ordered):
            logits = self.graphs.run(ordered)  # every entry samples: one row each
        else:
            logits = self._eager(ordered, ids, rows + extra_rows)
        if logits is None:  # an earlier pipeline stage: the activations went on
            return torch.empty((0, self.vocab_size)), [], []
        prompt_rows: PromptRows = []
        at = len(rows)
        for e, offsets in asked:
            prompt_rows.append((e, offsets, logits[at : at + len(offsets)]))
            at += len(offsets)
        logits = logits[: len(rows)]
        # Report in the caller's order, not the attention order.
        sampled_order = [i for i in order if entries[i].sample]  # caller index per logit row
        sampled = [e for e in entries if e.sample]
        if sampled_order != sorted(sampled_order):
            row_of = {caller: row for row, caller in enumerate(sampled_order)}
            perm = [row_of[i] for i in sorted(sampled_order)]
            logits = logits.index_select(0, torch.tensor(perm, device=logits.device))
        return logits, sampled, prompt_rows

    def _eager(
        self, ordered: list[BatchEntry], ids: list[int], rows: list[int]
    ) -> torch.Tensor | None:
        """The plain forward of the ordered batch: logits of `rows` (None off the last stage)."""
        meta = build_metadata(
            [SeqInput(len(e.token_ids), e.start_pos, e.block_table) for e in ordered],
            self.block_size,
            self.device,
            self.dtype,
        )
        input_ids = torch.tensor(ids, dtype=torch.long).to(self.device, non_blocking=True)
        row_t = torch.tensor(rows, dtype=torch.long).to(self.device, non_blocking=True)
        return self.model.forward(input_ids, meta, self._kv_layers, row_t)

    @torch.inference_mode()
    def _sample(
        self, logits: torch.Tensor, sampled: list[BatchEntry], prompt_rows: PromptRows | None = None
    ) -> list[SampledToken]:
        for e, offsets, rows in prompt_rows or []:
            self.prompt_logprobs.add(e, offsets, rows)
        if not sampled:
            return []
        requests = [SampleRequest(e.request_id, e.sampling, e.num_generated) for e in sampled]
        out = self.sampler.run(logits, requests, inplace=True)
        tokens = [
            SampledToken(e.request_id, t, lp, top, top_lp)
            for e, t, lp, top, top_lp in zip(
                sampled, out.tokens.tolist(), out.logprobs.tolist(), out.top_ids,
                out.top_logprobs, strict=True,
            )
        ]  # fmt: skip
        for e, token in zip(sampled, tokens, strict=True):
            if PromptLogprobs.asked(e):
                token.prompt = self.prompt_logprobs.take(e.request_id)
        return tokens
