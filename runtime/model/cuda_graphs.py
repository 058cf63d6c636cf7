"""CUDA graphs of decode steps: one captured forward per (batch, blocks) bucket, replayed.

A decode step of a small model on a GPU is mostly kernel launches (a few hundred per
step, each a few microseconds of Python and driver time against microseconds of work);
a graph launches them all at once. Shapes are fixed at capture, so a batch is padded up
to its bucket: B (jobs) to the next power of two, MB (blocks of its longest job) likewise,
attention running over padded block tables with the keys past each job masked
(padded_decode.py). Padded rows copy the batch's first job (same token, position and
slot), so they write into the cache only the K/V that job writes anyway.

Where: a CUDA device, one rank (no collectives inside a graph), torch layers (not the
CPU kernels), a batch of single-token steps that all sample, no prompt log-probabilities;
any other batch runs eagerly. A bucket is captured the first time a batch needs it, with
that batch's own data in the static inputs (so warm-up and capture write only what the
step writes). `FASTSERVE_CUDA_GRAPHS=0` turns them off for comparing. With
`capture=False` the padded forward runs eagerly from the same static inputs: the CPU
tests check that path's logits against the plain forward.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastserve.runtime.model.attention import AttentionMetadata
from fastserve.runtime.model.llama import LlamaModel
from fastserve.runtime.model.padded_decode import PaddedDecode
from fastserve.runtime.worker_state import BatchEntry

MAX_GRAPH_BATCH = 256  # the GPU's default batch limit (runtime/config.py BATCH_LIMITS)
_ENV_SWITCH = "FASTSERVE_CUDA_GRAPHS"


def bucket(n: int, cap: int) -> int:
    """The smallest power of two >= n, at most cap (n <= cap)."""
    return min(cap, 1 << max(0, n - 1).bit_length())


@dataclass
class _Bucket:
    """One bucket's static inputs and output (and its graph, when captured)."""

    input_ids: torch.Tensor  # [B]
    meta: AttentionMetadata  # static positions, write slots and padded tables
    logits: torch.Tensor | None = None  # [B, vocab] float32, the forward's output
    graph: torch.cuda.CUDAGraph | None = None


class DecodeGraphs:
    """Decode steps of one model replayed from captured graphs (see the module doc)."""

    def __init__(
        self,
        model: LlamaModel,
        kv_layers: list[tuple[torch.Tensor, torch.Tensor]],
        block_size: int,
        max_model_len: int,
        capture: bool = True,
    ) -> None:
        self.model = model
        self.kv_layers = kv_layers
        self.block_size = block_size
        self.max_blocks = -(-max_model_len // block_size)
        self.capture = capture
        self.device = model.device
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._pool = torch.cuda.graph_pool_handle() if capture else None

    @staticmethod
    def usable(model: LlamaModel) -> bool:
        """Whether graphs apply to this model's rank: see the module doc."""
        if os.environ.get(_ENV_SWITCH, "1") == "0":
            return False
        one_rank = model.tp.size == 1 and model.pp.is_first and model.pp.is_last
        return model.device.type == "cuda" and one_rank and model.kernels is None

    def fits(self, entries: Sequence[BatchEntry]) -> bool:
        """Whether this batch can replay a graph (else it runs eagerly)."""
        if not entries or len(entries) > MAX_GRAPH_BATCH:
            return False
        return all(len(e.token_ids) == 1 and e.sample for e in entries)

    def run(self, entries: Sequence[BatchEntry]) -> torch.Tensor:
        """Logits [len(entries), vocab] float32 of the batch, in entry order. The tensor is
        the bucket's output buffer: valid until the next call."""
        batch = bucket(len(entries), MAX_GRAPH_BATCH)
        need = max(e.start_pos // self.block_size + 1 for e in entries)
        blocks = bucket(need, self.max_blocks)
        key = (batch, blocks)
        state = self._buckets.get(key)
        new = state is None
        if state is None:
            state = self._buckets[key] = self._new_bucket(batch, blocks)
        self._fill(state, entries)
        if new and self.capture:
            self._capture(state)
        if state.graph is not None:
            state.graph.replay()
        else:
            state.logits = self._forward(state)
        assert state.logits is not None
        return state.logits[: len(entries)]

    @property
    def num_graphs(self) -> int:
        return sum(b.graph is not None for b in self._buckets.values())

    def _forward(self, state: _Bucket) -> torch.Tensor:
        logits = self.model.forward(state.input_ids, state.meta, self.kv_layers, None)
        assert logits is not None  # one rank: the last stage
        return logits

    def _new_bucket(self, batch: int, blocks: int) -> _Bucket:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.long, device=self.device)

        meta = AttentionMetadata(
            num_tokens=batch,
            positions=zeros(batch),
            write_blocks=zeros(batch),
            write_offsets=zeros(batch),
            slots=zeros(batch),
            decode=None,
            prefills=[],
            padded=PaddedDecode(zeros(batch, blocks), zeros(batch)),
        )
        return _Bucket(zeros(batch), meta)

    def _fill(self, state: _Bucket, entries: Sequence[BatchEntry]) -> None:
        """Copy the batch into the static inputs, padding with copies of its first job."""
        meta, padded = state.meta, state.meta.padded
        assert padded is not None
        batch, blocks = padded.table.shape
        rows = list(entries) + [entries[0]] * (batch - len(entries))
        bs = self.block_size
        pos = [e.start_pos for e in rows]
        table = torch.zeros((batch, blocks), dtype=torch.long)
        for i, e in enumerate(rows):
            used = e.start_pos // bs + 1
            table[i, :used] = torch.tensor(e.block_table[:used], dtype=torch.long)
        wblocks = table[torch.arange(batch), torch.tensor(pos) // bs]
        offsets = torch.tensor(pos) % bs
        copies = [
            (state.input_ids, torch.tensor([e.token_ids[0] for e in rows], dtype=torch.long)),
            (meta.positions, torch.tensor(pos, dtype=torch.long)),
            (meta.write_blocks, wblocks),
            (meta.write_offsets, offsets),
            (meta.slots, wblocks * bs + offsets),
            (padded.table, table),
            (padded.lens, torch.tensor(pos, dtype=torch.long) + 1),
        ]
        for dst, src in copies:
            dst.copy_(src, non_blocking=True)

    def _capture(self, state: _Bucket) -> None:
        """Warm up on a side stream (allocator and library handles settle), then capture.
        Both run the real batch: they write the K/V that batch's step writes."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._forward(state)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            state.logits = self._forward(state)
        state.graph = graph
