"""ModelConfig: the hyper-parameters of a Llama-family model, read from an HF config.json."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "smollm", "smollm2")


@dataclass
class RopeScaling:
    """Rotary position embedding frequency scaling ("default", "linear" or "llama3")."""

    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3 only
    high_freq_factor: float = 4.0  # llama3 only
    original_max_position_embeddings: int = 8192  # llama3 only


@dataclass
class ModelConfig:
    """Everything the engine needs to build and load a Llama-family model."""

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2, or Llama with attention_bias
    o_bias: bool = False  # Llama with attention_bias
    mlp_bias: bool = False
    eos_token_ids: list[int] = field(default_factory=list)
    bos_token_id: int | None = None

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], generation: dict[str, Any] | None = None
    ) -> ModelConfig:
        """Build from config.json contents (and generation_config.json, for more EOS ids)."""
        model_type = str(raw.get("model_type", "llama"))
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
            )
        act = raw.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"hidden_act {act!r} is not supported (only silu)")
        heads = int(raw["num_attention_heads"])
        hidden = int(raw["hidden_size"])
        attention_bias = bool(raw.get("attention_bias", False))
        theta, scaling = _rope(raw)
        return cls(
            model_type=model_type,
            vocab_size=int(raw["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(raw["intermediate_size"]),
            num_layers=int(raw["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(raw.get("num_key_value_heads") or heads),
            head_dim=int(raw.get("head_dim") or hidden // heads),
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            qkv_bias=attention_bias or model_type == "qwen2",
            o_bias=attention_bias and model_type != "qwen2",
            mlp_bias=bool(raw.get("mlp_bias", False)),
            eos_token_ids=_eos_ids(raw, generation or {}),
            bos_token_id=raw.get("bos_token_id"),
        )

    @classmethod
    def from_model_dir(cls, model_dir: str | Path) -> ModelConfig:
        model_dir = Path(model_dir)
        raw = json.loads((model_dir / "config.json").read_text())
        gen_path = model_dir / "generation_config.json"
        generation = json.loads(gen_path.read_text()) if gen_path.exists() else None
        return cls.from_dict(raw, generation)

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


def _as_id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [int(v) for v in value]
    return [int(value)]


def _eos_ids(raw: dict[str, Any], generation: dict[str, Any]) -> list[int]:
    ids = _as_id_list(raw.get("eos_token_id"))
    for extra in _as_id_list(generation.get("eos_token_id")):
        if extra not in ids:
            ids.append(extra)
    return ids


def _rope(raw: dict[str, Any]) -> tuple[float, RopeScaling]:
    """Rope theta and scaling from either the classic keys or transformers 5's rope_parameters."""
    params = raw.get("rope_parameters") or {}
    scaling_raw = raw.get("rope_scaling") or params
    theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
    kind = scaling_raw.get("rope_type", scaling_raw.get("type", "default")) or "default"
    if kind not in ("default", "linear", "llama3"):
        raise ValueError(f"rope scaling {kind!r} is not supported (default, linear, llama3)")
    scaling = RopeScaling(kind=kind)
    if kind != "default":
        scaling.factor = float(scaling_raw.get("factor", 1.0))
    if kind == "llama3":
        scaling.low_freq_factor = float(scaling_raw.get("low_freq_factor", 1.0))
        scaling.high_freq_factor = float(scaling_raw.get("high_freq_factor", 4.0))
        scaling.original_max_position_embeddings = int(
            scaling_raw.get("original_max_position_embeddings", 8192)
        )
    return theta, scaling
