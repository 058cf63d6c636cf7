"""GGUF -> HF conversion, on a tiny GGUF written from the tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from fastserve.runtime.model import registry
from fastserve.runtime.model.gguf_convert import (
    convert_gguf,
    permute_rope_rows,
    unpermute_rope_rows,
)
from fastserve.runtime.model.runner import BatchEntry, ModelRunner
from tests.engine_driver import block_tables
from tests.model_fixtures import CHAT_TEMPLATE, MERGES, make_tiny_llama_dir

_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _gguf_name(hf: str) -> str:
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf.split(".", 3)
    return f"blk.{layer}.{_LAYER[rest]}"


def write_tiny_gguf(
    hf_dir: Path, out: Path, quantize: tuple[str, ...] = (), quantize_q4_1: tuple[str, ...] = ()
) -> None:
    """What llama.cpp's converter would write for `hf_dir` (q/k rows permuted); tensors
    named in `quantize` are stored as Q8_0, those in `quantize_q4_1` as Q4_1."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    tensors = load_file(str(hf_dir / "model.safetensors"))
    vocab = json.loads((hf_dir / "tokenizer.json").read_text())["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.get)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    w.add_token_merges([f"{a} {b}" for a, b in MERGES])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, t in tensors.items():
        arr = t.numpy()
        if name.endswith("q_proj.weight"):
            arr = permute_rope_rows(arr, cfg["num_attention_heads"])
        elif name.endswith("k_proj.weight"):
            arr = permute_rope_rows(arr, cfg["num_key_value_heads"])
        gname = _gguf_name(name)
        if gname in quantize or gname in quantize_q4_1:
            qtype = (
                gguf.GGMLQuantizationType.Q8_0
                if gname in quantize
                else gguf.GGMLQuantizationType.Q4_1
            )
            w.add_tensor(gname, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(gname, np.ascontiguousarray(arr, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_permutation_round_trip():
    w = np.arange(6 * 8 * 3, dtype=np.float32).reshape(6 * 8, 3)
    assert np.array_equal(unpermute_rope_rows(permute_rope_rows(w, 6), 6), w)
    assert not np.array_equal(permute_rope_rows(w, 6), w)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    base = tmp_path_factory.mktemp("gguf")
    hf = make_tiny_llama_dir(base / "hf", seed=3)
    write_tiny_gguf(hf, base / "tiny.gguf", quantize=("blk.1.ffn_up.weight",))
    return hf, convert_gguf(base / "tiny.gguf", base / "out")


def test_converted_tensors_match_the_original(converted):
    hf, out = converted
    want = load_file(str(hf / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        tol = 0.02 if name == "model.layers.1.mlp.up_proj.weight" else 0.0  # Q8_0
        torch.testing.assert_close(got[name], tensor, atol=tol, rtol=0)
    assert not list(out.parent.glob(".out.tmp-*")), "temporary directory left behind"


def test_converted_config_and_tokenizer(converted):
    hf, out = converted
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (4, 2)
    assert cfg["tie_word_embeddings"] is False  # the tiny model has an lm_head
    assert (cfg["bos_token_id"], cfg["eos_token_id"]) == (1, 2)
    assert cfg["rms_norm_eps"] == 1e-5
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and tok_cfg["chat_template"] == CHAT_TEMPLATE
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    ours = Tokenizer.from_file(str(out / "tokenizer.json"))
    ref = Tokenizer.from_file(str(hf / "tokenizer.json"))
    text = "<|im_start|>user\nthe weather is fine<|im_end|>\n"
    assert ours.encode(text).ids == ref.encode(text).ids
    assert ours.encode("<|im_end|>").ids == [2]
    assert len(ours.encode("2025").ids) == 4  # smollm splits digits one by one


def test_converted_model_computes_the_same_logits(converted):
    hf, out = converted
    ids = list(range(10, 50))
    results = []
    for path in (hf, out):
        runner = ModelRunner(path, "float32", "cpu", num_device_blocks=16, block_size=4)
        table = block_tables(runner, [len(ids)])[0]
        results.append(runner.execute_with_logprobs([BatchEntry("a", ids, 0, table)])[1])
    # One Q8_0 tensor: close, not equal.
    torch.testing.assert_close(results[0], results[1], atol=0.1, rtol=0)
    assert torch.equal(results[0].argmax(-1), results[1].argmax(-1))


def test_resolve_model_dir(tmp_path, monkeypatch, converted):
    hf, _ = converted
    assert registry.resolve_model_dir(str(hf)) == hf.resolve()
    with pytest.raises(registry.ModelNotFoundError, match="does not exist"):
        registry.resolve_model_dir(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(registry.ModelNotFoundError, match="config.json"):
        registry.resolve_model_dir(str(tmp_path / "empty"))
    assert registry.served_model_name(hf) == "hf"
    # The default name converts into FASTSERVE_CACHE_DIR (here: a pre-made fake, no work).
    monkeypatch.setenv("FASTSERVE_CACHE_DIR", str(tmp_path / "cache"))
    fake = make_tiny_llama_dir(tmp_path / "cache" / "models" / registry.DEFAULT_MODEL_NAME)
    assert registry.resolve_model_dir(None) == fake
    assert registry.resolve_model_dir(registry.DEFAULT_MODEL_NAME) == fake
    assert registry.resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct") == fake


def test_second_conversion_into_an_existing_dir_keeps_it(converted, tmp_path):
    _, out = converted
    before = (out / "model.safetensors").stat().st_mtime_ns
    gguf_path = out.parent / "tiny.gguf"
    assert convert_gguf(gguf_path, out) == out  # lost the race: the finished one stays
    assert (out / "model.safetensors").stat().st_mtime_ns == before
    assert not list(out.parent.glob(".out.tmp-*"))
