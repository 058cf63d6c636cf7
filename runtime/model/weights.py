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
from fastserve.runtime.model.gguf_convert import QUANT_FILE, QUANT_METADATA_KEY
from fastserve.runtime.model.parallel import PPStage, TPGroup
from fastserve.runtime.model.quant import QuantFormat, QuantWeight


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
    # The same projections in the checkpoint's quantized blocks, where it has them (CPU
    # float32 decoding reads these: see quant.py); None keeps the dense path only.
    qkv_quant: QuantWeight | None = None
    o_quant: QuantWeight | None = None
    gate_up_quant: QuantWeight | None = None
    down_quant: QuantWeight | None = None


@dataclass
class ModelWeights:
    embed: torch.Tensor | None  # [local vocab, hidden]; None off the first pipeline stage
    layers: list[LayerWeights]  # this pipeline stage's layers only
    final_norm: torch.Tensor | None  # None off the last pipeline stage
    lm_head: torch.Tensor | None  # [local vocab, hidden]; the embedding itself when tied
    vocab_start: int  # first vocab id held by this rank
    lm_head_quant: QuantWeight | None = None  # lm_head in quantized blocks, where kept


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


class QuantReader:
    """The quantized copies of a model directory's matrices (gguf_convert.QUANT_FILE)."""

    def __init__(self, model_dir: Path):
        path = model_dir / QUANT_FILE
        self._file = safe_open(path, framework="pt") if path.exists() else None
        meta = self._file.metadata() if self._file is not None else None
        raw = (meta or {}).get(QUANT_METADATA_KEY, "{}")
        self._formats = {name: QuantFormat(v) for name, v in json.loads(raw).items()}

    def get(self, name: str) -> QuantWeight | None:
        fmt = self._formats.get(name)
        if fmt is None or self._file is None:
            return None
        return QuantWeight.from_tensors(self._file.get_tensor, name, fmt)

    def fused(self, names: list[str]) -> QuantWeight | None:
        parts = [self.get(n) for n in names]
        if any(p is None for p in parts):
            return None
        return QuantWeight.cat_rows(parts)  # type: ignore[arg-type]


def _required(tensor: torch.Tensor | None, what: str) -> torch.Tensor:
    if tensor is None:
        raise KeyError(f"checkpoint lacks {what}")
    return tensor


def load_weights(
    model_dir: Path,
    config: ModelConfig,
    dtype: torch.dtype,
    device: torch.device,
    tp: TPGroup,
    pp: PPStage | None = None,
) -> ModelWeights:
    """Read, fuse, shard and place the weights this (tp rank, pp stage) holds."""
    pp = pp or PPStage()
    ckpt = CheckpointReader(Path(model_dir))

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=dtype).to(device).contiguous()

    def put_opt(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else put(t)

    hd = config.head_dim
    q0, q1 = (h * hd for h in tp.shard(config.num_heads, "num_heads"))
    k0, k1 = (h * hd for h in tp.shard(config.num_kv_heads, "num_kv_heads"))
    f0, f1 = tp.shard(config.intermediate_size, "intermediate_size")
    # Vocab-parallel shards must be equal: pad the vocabulary with zero rows up to a
    # multiple of the tp size (the padded logits are cut off after the gather).
    padded_vocab = -(-config.vocab_size // tp.size) * tp.size
    v0, v1 = tp.shard(padded_vocab, "vocab_size")

    def vocab_rows(t: torch.Tensor) -> torch.Tensor:
        if padded_vocab > t.shape[0]:
            t = torch.cat([t, t.new_zeros(padded_vocab - t.shape[0], t.shape[1])])
        return t[v0:v1]

    def fused_qkv(prefix: str, kind: str) -> torch.Tensor | None:
        """This rank's q, k and v rows stacked: one matmul instead of three."""
        q, k, v = (ckpt.maybe(f"{prefix}self_attn.{n}_proj.{kind}") for n in "qkv")
        if q is None or k is None or v is None:
            return None
        return torch.cat([q[q0:q1], k[k0:k1], v[k0:k1]])

    def fused_gate_up(prefix: str, kind: str) -> torch.Tensor | None:
        gate = ckpt.maybe(f"{prefix}mlp.gate_proj.{kind}")
        up = ckpt.maybe(f"{prefix}mlp.up_proj.{kind}")
        if gate is None or up is None:
            return None
        return torch.cat([gate[f0:f1], up[f0:f1]])

    def rank0_bias(name: str) -> torch.Tensor | None:
        # Row-parallel biases are added once, before the all-reduce sums the ranks.
        return put_opt(ckpt.maybe(name)) if tp.rank == 0 else None

    # Quantized copies serve unsharded float32 CPU models (the kernels' only case).
    keep_quant = tp.size == 1 and dtype == torch.float32 and torch.device(device).type == "cpu"
    quant = QuantReader(Path(model_dir)) if keep_quant else None

    def quant_of(prefix: str, *names: str) -> QuantWeight | None:
        return None if quant is None else quant.fused([f"{prefix}{n}.weight" for n in names])

    layers: list[LayerWeights] = []
    for i in pp.layers(config.num_layers):
        p = f"model.layers.{i}."
        layers.append(
            LayerWeights(
                input_norm=put(ckpt.get(f"{p}input_layernorm.weight")),
                qkv=put(_required(fused_qkv(p, "weight"), f"{p}self_attn.q/k/v_proj.weight")),
                qkv_bias=put_opt(fused_qkv(p, "bias")) if config.qkv_bias else None,
                o_proj=put(ckpt.get(f"{p}self_attn.o_proj.weight")[:, q0:q1]),
                o_bias=rank0_bias(f"{p}self_attn.o_proj.bias") if config.o_bias else None,
                post_norm=put(ckpt.get(f"{p}post_attention_layernorm.weight")),
                gate_up=put(_required(fused_gate_up(p, "weight"), f"{p}mlp.gate/up_proj.weight")),
                gate_up_bias=put_opt(fused_gate_up(p, "bias")) if config.mlp_bias else None,
                down=put(ckpt.get(f"{p}mlp.down_proj.weight")[:, f0:f1]),
                down_bias=rank0_bias(f"{p}mlp.down_proj.bias") if config.mlp_bias else None,
                qkv_quant=quant_of(p, "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
                o_quant=quant_of(p, "self_attn.o_proj"),
                gate_up_quant=quant_of(p, "mlp.gate_proj", "mlp.up_proj"),
                down_quant=quant_of(p, "mlp.down_proj"),
            )
        )
    tied = config.tie_word_embeddings or not ckpt.has("lm_head.weight")
    embed = lm_head = final_norm = None
    if pp.is_first or (pp.is_last and tied):
        embed = put(vocab_rows(ckpt.get("model.embed_tokens.weight")))
    if pp.is_last:
        lm_head = embed if tied else put(vocab_rows(ckpt.get("lm_head.weight")))
        final_norm = put(ckpt.get("model.norm.weight"))
    head_name = "model.embed_tokens" if tied else "lm_head"
    return ModelWeights(
        embed=embed if pp.is_first else None,
        layers=layers,
        final_norm=final_norm,
        lm_head=lm_head,
        vocab_start=v0,
        lm_head_quant=quant_of("", head_name) if pp.is_last else None,
    )
