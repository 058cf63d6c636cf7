"""The frontend's production settings: API keys, admission bounds, drain time.

The defaults here leave everything open and unbounded (what unit tests and notebooks
want); `fastserve serve` passes ServerConfig's bounded defaults instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastserve.runtime.frontend.admission import CostEstimate


@dataclass(frozen=True)
class FrontendOptions:
    api_keys: tuple[str, ...] = ()  # empty: no authentication
    metrics_public: bool = False  # /metrics open even when api_keys are set
    max_queued_requests: int = 0  # unfinished requests admitted at once; 0 = unbounded
    max_queued_tokens: int = 0  # their prompt + max_tokens, summed; 0 = unbounded
    drain_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may take
    cost_model: CostEstimate | None = field(default=None, compare=False)  # for Retry-After
    max_batch_jobs: int = 32  # the scheduler's batch bound, for the cost-model estimate
