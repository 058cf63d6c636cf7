"""Where the scheduler's cost model comes from: a cached profile of this engine, or defaults."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fastserve.runtime.config import ServerConfig
from fastserve.runtime.model.registry import cache_root
from fastserve.runtime.sched.cost_model import CostModel

# A small model on a few CPU cores, measured once on this project's 2-core machines; used
# until `fastserve profile` writes a profile for the actual model and device.
DEFAULT_COST_MODEL = CostModel.affine(
    prefill_base=0.004, prefill_per_token=0.0004, decode_base=0.02, decode_per_job=0.001
)


def profile_path(cfg: ServerConfig) -> Path:
    """The cache file of a profile: one per model, dtype, device and parallel layout."""
    key = (
        f"{Path(cfg.model).resolve()}|{cfg.dtype}|{cfg.device}|{cfg.parallel.tp}|{cfg.parallel.pp}"
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return cache_root().parent / "profiles" / f"{Path(cfg.model).name}-{digest}.json"


def load_cost_model(cfg: ServerConfig) -> CostModel:
    path = profile_path(cfg)
    if path.exists():
        return CostModel.load(str(path))
    return DEFAULT_COST_MODEL
