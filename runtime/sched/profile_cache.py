"""Where the scheduler's cost model comes from: a cached profile of this engine, or defaults."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastserve.runtime.config import ServerConfig
from fastserve.runtime.model.kernels.build import kernels_supported
from fastserve.runtime.model.registry import cache_root
from fastserve.runtime.sched.cost_model import CostModel

# A small model on a few CPU cores, measured once on this project's 2-core machines; used
# until `fastserve profile` writes a profile for the actual model and device.
DEFAULT_COST_MODEL = CostModel.affine(
    prefill_base=0.004, prefill_per_token=0.0004, decode_base=0.02, decode_per_job=0.001
)


# Bumped when the engine's speed changes enough that old profiles would misprice work.
ENGINE_GENERATION = 2  # 2: the C decode kernels


def profile_path(cfg: ServerConfig) -> Path:
    """The cache file of a profile: one per model, dtype, device, parallel layout and
    engine (C kernels or torch ops only, and the engine generation)."""
    engine = f"gen{ENGINE_GENERATION}-{'c' if kernels_supported() is None else 'torch'}"
    key = (
        f"{Path(cfg.model).resolve()}|{cfg.dtype}|{cfg.device}|{cfg.parallel.tp}|{cfg.parallel.pp}"
        f"|{engine}"
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_root().parent / "profiles" / f"{Path(cfg.model).name}-{digest}.json"


def find_cost_model(cfg: ServerConfig | None, path: str | None = None) -> tuple[CostModel, str]:
    """The one cost-model lookup: the model and where it came from. `path` (a CostModel
    JSON) if given, else `cfg`'s cached profile if `fastserve profile` wrote one, else the
    built-in default (also when `cfg` is None: no model to look up)."""
    if path:
        return CostModel.load(path), path
    if cfg is not None:
        cached = profile_path(cfg)
        if cached.exists():
            return CostModel.load(str(cached)), str(cached)
    return DEFAULT_COST_MODEL, "built-in default"


def load_cost_model(cfg: ServerConfig) -> CostModel:
    """The cost model a server for `cfg` prices work with."""
    return find_cost_model(cfg)[0]
