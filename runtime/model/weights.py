"""Load HF safetensors checkpoints into fused, tensor-parallel-sharded serving weights.

At load time q/k/v become one [q+k+v, hidden] matrix and gate/up one [2*ffn, hidden]
matrix, so each layer runs two projections instead of five.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from fastserve.runtime.model.config import ModelConfig
from fastserve.runtime.model.parallel import TPGroup


@dataclass
class LayerWeights:
    input_norm: torch.Tensor
    qkv: torch.Tensor  # [local (q + k + v), hidden]
    qkv_bias: torch.Tensor | None
    o_proj: torch.Tensor  # [hidden, local q]
    o_bias: torch.Tensor | None  # added on rank 0 only, so the all-reduce counts it once
    post_norm: torch.Tensor
    gate_up: torch.Tensor  # [2 * local ffn, hidden]
    gate_up_bias: torch.Tensor | None
    down: torch.Tensor  # [hidden, local ffn]
    down_bias: torch.Tensor | None


@dataclass
class ModelWeights:
    embed: torch.Tensor  # [local vocab, hidden]
    layers: list[LayerWeights]
    final_norm: torch.Tensor
    lm_head: torch.Tensor  # [local vocab, hidden]; the embedding itself when tied
    vocab_start: int  # first vocab id held by this rank


class CheckpointReader:
    """Tensors by name across all safetensors files of a model directory."""

    def __init__(self, model_dir: Path):
        index = model_dir / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in model_dir.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors weights in {model_dir}")
        self._where: dict[str, Path] = {}
        for name in files:
            with safe_open(model_dir / name, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open handles are not mappings
                    self._where[key] = model_dir / name
        self._handles: dict[Path, object] = {}

    def has(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise KeyError(f"checkpoint lacks tensor {name!r}")
        path = self._where[name]
        if path not in self._handles:
            self._handles[path] = safe_open(path, framework="pt")
        return self._handles[path].get_tensor(name)  # type: ignore[attr-defined]

    def maybe(self, name: str) -> torch.Tensor | None:
        return self.get(name) if self.has(name) else None


def load_weights(
    model_dir: Path, config: ModelConfig, dtype: torch.dtype, device: torch.device, tp: TPGroup
) -> ModelWeights:
    """Read, fuse, shard and place every weight of the model."""
    ckpt = CheckpointReader(Path(model_dir))

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=dtype).to(device).contiguous()

    def rows(t: torch.Tensor, start: int, end: int) -> torch.Tensor:
        return t[start:end]

    hd = config.head_dim
    q0, q1 = tp.shard(config.num_heads, "num_heads")
    k0, k1 = tp.shard(config.num_kv_heads, "num_kv_heads")
    f0, f1 = tp.shard(config.intermediate_size, "intermediate_size")
    v0, v1 = tp.shard(config.vocab_size, "vocab_size")
    layers: list[LayerWeights] = []
    for i in range(config.num_layers):
        p = f"model.layers.{i}."

        def fused_qkv(kind: str, p: str = p) -> torch.Tensor | None:
            parts = [ckpt.maybe(f"{p}self_attn.{n}_proj.{kind}") for n in "qkv"]
            if any(t is None for t in parts):
                return None
            q, k, v = parts
            return torch.cat(
                [rows(q, q0 * hd, q1 * hd), rows(k, k0 * hd, k1 * hd), rows(v, k0 * hd, k1 * hd)]
            )

        def fused_gate_up(kind: str, p: str = p) -> torch.Tensor | None:
            gate = ckpt.maybe(f"{p}mlp.gate_proj.{kind}")
            up = ckpt.maybe(f"{p}mlp.up_proj.{kind}")
            if gate is None or up is None:
                return None
            return torch.cat([rows(gate, f0, f1), rows(up, f0, f1)])

        def rank0_bias(name: str) -> torch.Tensor | None:
            bias = ckpt.maybe(name)
            return put(bias) if bias is not None and tp.rank == 0 else None

        qkv_bias = fused_qkv("bias") if config.qkv_bias else None
        gate_up_bias = fused_gate_up("bias") if config.mlp_bias else None
        layers.append(
            LayerWeights(
                input_norm=put(ckpt.get(f"{p}input_layernorm.weight")),
                qkv=put(fused_qkv("weight")),
                qkv_bias=put(qkv_bias) if qkv_bias is not None else None,
                o_proj=put(ckpt.get(f"{p}self_attn.o_proj.weight")[:, q0 * hd : q1 * hd]),
                o_bias=rank0_bias(f"{p}self_attn.o_proj.bias") if config.o_bias else None,
                post_norm=put(ckpt.get(f"{p}post_attention_layernorm.weight")),
                gate_up=put(fused_gate_up("weight")),
                gate_up_bias=put(gate_up_bias) if gate_up_bias is not None else None,
                down=put(ckpt.get(f"{p}mlp.down_proj.weight")[:, f0:f1]),
                down_bias=rank0_bias(f"{p}mlp.down_proj.bias") if config.mlp_bias else None,
            )
        )
    embed = put(rows(ckpt.get("model.embed_tokens.weight"), v0, v1))
    if config.tie_word_embeddings or not ckpt.has("lm_head.weight"):
        lm_head = embed
    else:
        lm_head = put(rows(ckpt.get("lm_head.weight"), v0, v1))
    return ModelWeights(
        embed=embed,
        layers=layers,
        final_norm=put(ckpt.get("model.norm.weight")),
        lm_head=lm_head,
        vocab_start=v0,
    )
