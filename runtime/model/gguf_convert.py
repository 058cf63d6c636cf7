"""Convert a llama-architecture GGUF file into a Hugging Face Llama model directory.

The output (config.json, model.safetensors in float32, tokenizer files, generation config)
loads with both our engine and transformers' LlamaForCausalLM. Tensors stored quantized
in the GGUF (Q4_1, Q8_0) are also kept as they are in `fastserve/quantized.safetensors`, for
the CPU decode kernels (see quant.py); in a subdirectory, so loaders that read every
`*.safetensors` of a model directory (vLLM, transformers) never see it. The conversion is written
into a temporary sibling directory and renamed into place, so a reader never sees half a
model and two processes converting at once cannot corrupt the result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from safetensors.torch import save_file

from fastserve.runtime.model.gguf_tokenizer import field_value, write_tokenizer_files
from fastserve.runtime.model.quant import QuantFormat, from_gguf_blocks

QUANT_FILE = "fastserve/quantized.safetensors"
QUANT_METADATA_KEY = "fastserve.quant"  # JSON {hf tensor name: format value}
_KEPT_QUANT = {GGMLQuantizationType.Q4_1: QuantFormat.Q4_1, GGMLQuantizationType.Q8_0: QuantFormat.Q8_0}

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_RE = re.compile(r"^blk\.(\d+)\.(.+)$")


def hf_tensor_name(gguf_name: str) -> str:
    """The Hugging Face Llama name of a GGUF tensor."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    match = _LAYER_RE.match(gguf_name)
    if match and match.group(2) in _LAYER_NAMES:
        return f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}"
    raise KeyError(f"GGUF tensor {gguf_name!r} has no Llama equivalent")


def unpermute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation.

    HF Llama rotates the two halves of each head (rotate_half); llama.cpp rotates adjacent
    pairs, so its converter reorders every head's rows from [half0 | half1] to interleaved
    (x0, y0, x1, y1, ...). Reading the rows back as (pairs, 2) and swapping restores halves.
    """
    rows = weight.shape[0]
    head_dim = rows // n_heads
    rest = weight.shape[1:]
    return (
        weight.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(rows, *rest).copy()
    )


def permute_rope_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's permutation (the inverse of `unpermute_rope_rows`); used by tests."""
    rows = weight.shape[0]
    head_dim = rows // n_heads
    rest = weight.shape[1:]
    return (
        weight.reshape(n_heads, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(rows, *rest).copy()
    )


def _dequantized(tensor) -> np.ndarray:
    # GGUF lists dims fastest-first; numpy (and HF) want them slowest-first.
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    qtype = GGMLQuantizationType(tensor.tensor_type)
    data = np.asarray(tensor.data)
    values = dequantize(data, qtype) if qtype != GGMLQuantizationType.F32 else data
    # A copy: F32 tensors are read-only views of the memory map.
    return np.array(values, dtype=np.float32).reshape(shape)


def _f32_value(value: float) -> float:
    # GGUF stores float32: 1e-5 reads back as 9.99999974e-06; keep the decimal it came from.
    return float(f"{float(value):.7g}")


def read_llama_config(reader: GGUFReader) -> dict:
    """Hyper-parameters of a llama-architecture GGUF as an HF LlamaConfig dict (no tokens yet)."""
    arch = field_value(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"only llama-architecture GGUF files are supported, got {arch!r}")

    def get(key: str, default=None):
        return field_value(reader, f"llama.{key}", default)

    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    names = {t.name for t in reader.tensors}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "head_dim": hidden // heads,
        "vocab_size": len(field_value(reader, "tokenizer.ggml.tokens")),
        "max_position_embeddings": int(get("context_length", 2048)),
        "rms_norm_eps": _f32_value(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _f32_value(get("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in names,
        "torch_dtype": "float32",
    }


def _rope_rows(name: str, config: dict) -> int | None:
    """The head count whose rotary row permutation applies to `name`, if any."""
    if name.endswith("q_proj.weight") or name.endswith("q_proj.bias"):
        return config["num_attention_heads"]
    if name.endswith("k_proj.weight") or name.endswith("k_proj.bias"):
        return config["num_key_value_heads"]
    return None


def convert_tensors(reader: GGUFReader, config: dict) -> dict[str, torch.Tensor]:
    """All GGUF tensors, dequantized to float32, under HF names, q/k rows un-permuted."""
    out: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        name = hf_tensor_name(tensor.name)
        values = _dequantized(tensor)
        heads = _rope_rows(name, config)
        if heads is not None:
            values = unpermute_rope_rows(values, heads)
        out[name] = torch.from_numpy(np.ascontiguousarray(values))
    return out


def quantized_tensors(reader: GGUFReader, config: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The GGUF's Q4_1/Q8_0 matrices as stored (quant.py's layout), under HF names with q/k
    rows un-permuted, and the format of each."""
    out: dict[str, torch.Tensor] = {}
    formats: dict[str, str] = {}
    for tensor in reader.tensors:
        fmt = _KEPT_QUANT.get(GGMLQuantizationType(tensor.tensor_type))
        if fmt is None or len(tensor.shape) != 2:
            continue
        name = hf_tensor_name(tensor.name)
        cols, rows = (int(d) for d in tensor.shape.tolist())
        weight = from_gguf_blocks(np.asarray(tensor.data), fmt, rows, cols)
        heads = _rope_rows(name, config)
        if heads is not None:
            weight = weight.rows(unpermute_rope_rows(np.arange(rows), heads))
        out.update(weight.tensors(name))
        formats[name] = fmt.value
    return out, formats


def write_quantized(reader: GGUFReader, config: dict, out_dir: Path) -> None:
    """Write QUANT_FILE into out_dir (atomically; nothing if no tensor is quantized)."""
    tensors, formats = quantized_tensors(reader, config)
    if not tensors:
        return
    target = out_dir / QUANT_FILE
    target.parent.mkdir(mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        meta = {"format": "pt", QUANT_METADATA_KEY: json.dumps(formats)}
        save_file(tensors, tmp, meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def add_quantized(gguf_path: Path, model_dir: Path) -> None:
    """Give a directory converted before quantized weights were kept its QUANT_FILE."""
    reader = GGUFReader(str(gguf_path))
    write_quantized(reader, json.loads((model_dir / "config.json").read_text()), model_dir)


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Convert `gguf_path` into the HF model directory `out_dir` (atomically). Returns it."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        reader = GGUFReader(str(gguf_path))
        config = read_llama_config(reader)
        ids = write_tokenizer_files(reader, tmp, config["max_position_embeddings"])
        config["bos_token_id"] = ids.get("bos")
        config["eos_token_id"] = ids.get("eos")
        if "padding" in ids:
            config["pad_token_id"] = ids["padding"]
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        generation = {"bos_token_id": ids.get("bos"), "eos_token_id": ids.get("eos")}
        if "padding" in ids:
            generation["pad_token_id"] = ids["padding"]
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        save_file(convert_tensors(reader, config), str(tmp / "model.safetensors"), {"format": "pt"})
        write_quantized(reader, config, tmp)
        del reader  # drop the memory map of the GGUF file before publishing
        # mkdtemp makes a private directory; the cache is meant to be readable like any other.
        os.chmod(tmp, 0o755)
        for child in tmp.iterdir():
            os.chmod(child, 0o755 if child.is_dir() else 0o644)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished first (the target exists and is complete): keep theirs.
            if not (out_dir / "model.safetensors").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
