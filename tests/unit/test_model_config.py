"""ModelConfig parsing across Llama-family config.json variants, and rope scaling."""

from __future__ import annotations

import pytest
import torch

from fastserve.runtime.model.config import ModelConfig, RopeScaling
from fastserve.runtime.model.layers import rope_inv_freq

SMOLLM = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
}


def test_smollm_config():
    cfg = ModelConfig.from_dict(SMOLLM)
    assert (cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (30, 9, 3, 64)
    assert cfg.q_size == 576 and cfg.kv_size == 192
    assert cfg.rope_theta == 100000.0 and cfg.rope_scaling.kind == "default"
    assert cfg.tie_word_embeddings and not cfg.qkv_bias and not cfg.o_bias
    assert cfg.eos_token_ids == [2] and cfg.bos_token_id == 1


def test_eos_ids_merge_config_and_generation_config():
    cfg = ModelConfig.from_dict(dict(SMOLLM, eos_token_id=[2, 5]), {"eos_token_id": [5, 9]})
    assert cfg.eos_token_ids == [2, 5, 9]


def test_qwen2_has_qkv_bias_only():
    cfg = ModelConfig.from_dict(dict(SMOLLM, model_type="qwen2"))
    assert cfg.qkv_bias and not cfg.o_bias


def test_llama_attention_bias_covers_o_proj():
    cfg = ModelConfig.from_dict(dict(SMOLLM, attention_bias=True, mlp_bias=True))
    assert cfg.qkv_bias and cfg.o_bias and cfg.mlp_bias


def test_mistral_and_defaults():
    raw = {k: v for k, v in SMOLLM.items() if k not in ("num_key_value_heads", "rope_theta")}
    cfg = ModelConfig.from_dict(dict(raw, model_type="mistral", sliding_window=4096))
    assert cfg.num_kv_heads == cfg.num_heads and cfg.rope_theta == 10000.0


def test_unsupported_model_type_is_rejected():
    with pytest.raises(ValueError, match="not supported"):
        ModelConfig.from_dict(dict(SMOLLM, model_type="gpt2"))


LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@pytest.mark.parametrize("style", ["rope_scaling", "rope_parameters"])
def test_llama3_rope_both_config_styles(style):
    if style == "rope_scaling":
        raw = dict(SMOLLM, rope_theta=500000.0, rope_scaling=LLAMA3)
    else:
        raw = dict(SMOLLM, rope_parameters=dict(LLAMA3, rope_theta=500000.0))
        del raw["rope_theta"]
    cfg = ModelConfig.from_dict(raw)
    assert cfg.rope_theta == 500000.0
    assert cfg.rope_scaling == RopeScaling("llama3", 8.0, 1.0, 4.0, 8192)


def test_llama3_inv_freq_matches_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_cfg = transformers.LlamaConfig(
        hidden_size=2048,
        num_attention_heads=32,
        max_position_embeddings=131072,
        rope_parameters=dict(LLAMA3, rope_theta=500000.0),
    )
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, torch.device("cpu"))
    got = rope_inv_freq(64, 500000.0, RopeScaling("llama3", 8.0, 1.0, 4.0, 8192))
    torch.testing.assert_close(got, want.float())
    linear = rope_inv_freq(64, 10000.0, RopeScaling("linear", 4.0))
    torch.testing.assert_close(linear * 4.0, rope_inv_freq(64, 10000.0, RopeScaling()))
