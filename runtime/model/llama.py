"""Llama-family decoder (Llama, Mistral, Qwen2, SmolLM) for serving.

One forward runs a flattened batch: every token of every job in one [T, hidden] tensor,
positions per token, and paged attention per job (see attention.py). Weights are plain
tensors (fused qkv and gate/up) and the layer loop is a plain function: on a small model
on a CPU, Python overhead per op is a visible share of a decode step. Where the C kernels
run (float32 on an x86-64 CPU, one rank) the layers go through cpu_layers.py instead,
which does the same arithmetic in far fewer calls.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastserve.runtime.model.attention import AttentionMetadata, paged_attention, write_kv
from fastserve.runtime.model.config import ModelConfig
from fastserve.runtime.model.cpu_kernels import CpuKernels
from fastserve.runtime.model.cpu_layers import run_layers
from fastserve.runtime.model.layers import RotaryEmbedding, rms_norm, silu_and_mul
from fastserve.runtime.model.linear import Linear
from fastserve.runtime.model.parallel import PPStage, TPGroup
from fastserve.runtime.model.weights import LayerWeights, ModelWeights, load_weights


class _Layer:
    """One decoder layer's weights, projections prepared for fast matmuls."""

    def __init__(self, w: LayerWeights, kernels: CpuKernels | None):
        self.input_norm = w.input_norm
        self.post_norm = w.post_norm
        self.qkv = Linear(w.qkv, w.qkv_bias, quant=w.qkv_quant, kernels=kernels)
        self.o_proj = Linear(w.o_proj, w.o_bias, quant=w.o_quant, kernels=kernels)
        self.gate_up = Linear(w.gate_up, w.gate_up_bias, quant=w.gate_up_quant, kernels=kernels)
        self.down = Linear(w.down, w.down_bias, quant=w.down_quant, kernels=kernels)


class LlamaModel:
    """Weights of one (tensor-parallel rank, pipeline stage) and the forward pass over a
    paged KV cache. A stage holds only its own layers; the first also the embedding, the
    last also the final norm and lm_head."""

    def __init__(
        self,
        config: ModelConfig,
        weights: ModelWeights,
        dtype: torch.dtype,
        device: torch.device,
        tp: TPGroup | None = None,
        pp: PPStage | None = None,
    ):
        self.config = config
        self.pp = pp or PPStage()
        self.tp = tp or TPGroup()
        # The C kernels cover float32 on the CPU without tensor parallelism.
        fused = torch.device(device).type == "cpu" and dtype == torch.float32
        self.kernels = CpuKernels.load() if fused and self.tp.size == 1 else None
        self.embed = weights.embed
        self.vocab_start = weights.vocab_start
        self.final_norm = weights.final_norm
        self.lm_head = (
            Linear(weights.lm_head, quant=weights.lm_head_quant, kernels=self.kernels)
            if weights.lm_head is not None
            else None
        )
        # Packed copies replace the plain weights (the embedding table stays for lookups).
        self.layers = [_Layer(w, self.kernels) for w in weights.layers]
        self.dtype = dtype
        self.device = device
        self.num_heads = config.num_heads // self.tp.size  # heads on this rank
        self.num_kv_heads = config.num_kv_heads // self.tp.size
        self.head_dim = config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.rope = RotaryEmbedding(
            self.head_dim,
            config.max_position_embeddings,
            config.rope_theta,
            config.rope_scaling,
            dtype,
            device,
        )

    @classmethod
    def load(
        cls,
        model_dir: str | Path,
        dtype: torch.dtype,
        device: torch.device,
        tp: TPGroup | None = None,
        config: ModelConfig | None = None,
        pp: PPStage | None = None,
    ) -> LlamaModel:
        tp = tp or TPGroup()
        config = config or ModelConfig.from_model_dir(model_dir)
        weights = load_weights(Path(model_dir), config, dtype, device, tp, pp)
        return cls(config, weights, dtype, device, tp, pp)

    def forward(
        self,
        input_ids: torch.Tensor,
        meta: AttentionMetadata,
        kv_layers: list[tuple[torch.Tensor, torch.Tensor]],
        logit_rows: torch.Tensor | None,
    ) -> torch.Tensor | None:
        """Run the batch; returns float32 logits [R, vocab] for `logit_rows` (None: all rows),
        or None on a pipeline stage other than the last (it sends its activations on).

        kv_layers[i] is this stage's layer i's (key_blocks, value_blocks) pool views (see
        kv/pools.py); this step's K/V are written into them.
        """
        if self.pp.is_first:
            assert self.embed is not None
            x = self.tp.embed(input_ids, self.embed, self.vocab_start)
        else:
            # Every stage gets the same tick, so the row count is known without a header.
            shape = (meta.num_tokens, self.config.hidden_size)
            x = self.pp.recv(shape, self.dtype, self.device)
        if self.kernels is not None:
            x = run_layers(self, self.kernels, x, meta, kv_layers)
        else:
            cos, sin = self.rope.tables(meta.positions)
            for layer, cache in zip(self.layers, kv_layers, strict=True):
                x = self._layer(x, layer, cache, meta, cos, sin)
        if not self.pp.is_last:
            self.pp.send(x)
            return None
        assert self.lm_head is not None and self.final_norm is not None
        if logit_rows is not None:
            if logit_rows.numel() == 0:  # nothing to sample (e.g. a non-final prefill chunk)
                return torch.empty((0, self.config.vocab_size), device=x.device)
            x = x.index_select(0, logit_rows)
        x = rms_norm(x, self.final_norm, self.config.rms_norm_eps)
        logits = self.tp.gather_vocab(self.lm_head(x))[:, : self.config.vocab_size]
        return logits.float()

    def _layer(
        self,
        x: torch.Tensor,
        w: _Layer,
        cache: tuple[torch.Tensor, torch.Tensor],
        meta: AttentionMetadata,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        eps = self.config.rms_norm_eps
        tokens = x.shape[0]
        qkv = w.qkv(rms_norm(x, w.input_norm, eps))
        # q and k are adjacent in the fused output: one rotary pass covers both.
        qk = qkv[:, : self.q_size + self.kv_size].view(tokens, -1, self.head_dim)
        self.rope.apply_(qk, cos, sin)
        q = qkv[:, : self.q_size].view(tokens, self.num_heads, self.head_dim)
        kv = qkv[:, self.q_size :].view(tokens, 2, self.num_kv_heads, self.head_dim)
        write_kv(cache[0], cache[1], meta, kv)
        attn = paged_attention(q, kv, cache[0], cache[1], meta, self.scale)
        # Row-parallel o_proj: partial sums on each rank, summed by the all-reduce.
        x = x + self.tp.all_reduce(w.o_proj(attn))
        h = silu_and_mul(w.gate_up(rms_norm(x, w.post_norm, eps)))
        return x + self.tp.all_reduce(w.down(h))
