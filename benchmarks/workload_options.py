"""Workload options shared by `fastserve bench` and `fastserve simulate`.

A workload is arrivals x prompt lengths x output lengths (`runtime.sim.workload.Request`):
- arrivals: the Azure conversation trace (rate-scaled) or a Poisson process;
- prompt and output lengths: from the same trace rows (scaled and capped) or sampled from a
  distribution with a given mean and coefficient of variation (CV).

Presets fill every option the command line leaves unset, so that `--preset azure` is the
trace as it is and `--preset heavy-tailed` the issue's heavy-tailed workload; defaults are
sized for SmolLM2-135M on a 2-core CPU (see `PRESETS`). Lengths and arrivals use separate
random streams, so a workload at another rate has the same lengths.

This module holds the settings (base values, presets, flags); `benchmarks/workload_build.py`
turns resolved settings into requests.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

# Shipped with the package (runtime/sim/traces/README.md: source and licence).
DEFAULT_TRACE = str(
    Path(__file__).resolve().parents[1] / "runtime" / "sim" / "traces" / "azure_conv_2023.csv"
)
DISTRIBUTIONS = ("trace", "lognormal", "pareto", "bimodal", "uniform", "fixed")
MAX_REQUESTS = 100_000  # a hard bound on any workload's size

# Every workload option with its base default (used where neither the command line nor a
# preset sets it). Scales shrink the trace (mean prompt 1155, output 211 tokens) to what a
# 135M model on two CPU cores serves in a couple of minutes.
BASE: dict[str, Any] = {
    "num_requests": 150,
    "start": 0,
    "arrivals": "trace",
    "rate": None,  # req/s: Poisson rate, or the trace rescaled to this mean rate
    "rate_scale": 0.3,  # trace arrivals: inter-arrival times divided by this
    "burstiness": 1.0,  # Poisson arrivals: gamma shape of the gaps (1 = Poisson, < 1 bursty)
    "prompt_lengths": "trace",
    "prompt_scale": 0.05,
    "mean_prompt": 64.0,
    "prompt_cv": 1.0,
    "max_prompt": 256,
    "lengths": "trace",  # output lengths
    "output_scale": 0.15,
    "mean_output": 32.0,
    "cv": 3.0,
    "max_output": 256,
    "p_long": 0.1,  # bimodal: share of the long mode
    "bimodal_ratio": 20.0,  # bimodal: long mode / short mode
    "mixture": None,  # [(share, prompt mean, prompt CV, output mean, output CV)]: lognormals
    "conversation": None,  # multi-turn chat: runtime/sim/conversations.ConversationShape fields
    "seed": 0,
}
PRESETS: dict[str, dict[str, Any]] = {
    # Issue target 1: Azure arrivals, lognormal outputs with CV 3, capped at 1024 so that
    # the lengths drawn keep a CV of at least 2 (a cap of 256 left ~1.8).
    "heavy-tailed": {"lengths": "lognormal", "max_output": 1024},
    # Issue target 2: the trace as it is, lengths scaled (low variance: CV ~0.8).
    "azure": {},
    # Skip-join against plain MLFQ: 10% of prompts ~20x longer, heavy-tailed outputs.
    "long-prompts": {
        "prompt_lengths": "bimodal",
        "mean_prompt": 100.0,
        "max_prompt": 1024,
        "lengths": "lognormal",
    },
    # Gittins' case: 80% short outputs, 20% twenty times longer.
    "bimodal": {"lengths": "bimodal", "p_long": 0.2, "bimodal_ratio": 20.0},
    # A production code-completion shape (issue 10): prompts dominate (mean ~210 tokens,
    # CV 1), short outputs (mean 24, median ~11, CV 2, max 400), Poisson bursts at 25 req/s
    # for 12 s, about 3x what the 2-core engine serves, then the queue drains.
    "code": {
        "num_requests": 300,
        "arrivals": "poisson",
        "rate": 25.0,
        "prompt_lengths": "lognormal",
        "mean_prompt": 210.0,
        "prompt_cv": 1.0,
        "max_prompt": 750,
        "lengths": "lognormal",
        "mean_output": 24.0,
        "cv": 2.0,
        "max_output": 400,
    },
    # Chat, code completion and a few long generations on one server, Poisson arrivals;
    # every request draws its component, then lognormal prompt and output lengths.
    "mixed": {
        "num_requests": 300,
        "arrivals": "poisson",
        "rate": 6.0,
        "mixture": [
            (0.60, 60.0, 1.0, 60.0, 1.0),  # chat turns
            (0.35, 210.0, 1.0, 24.0, 2.0),  # code completion
            (0.05, 30.0, 0.5, 400.0, 0.5),  # long generations (stories, reports)
        ],
        "max_prompt": 750,
        "max_output": 1024,
    },
    # Prefix caching (issue 14): chat sessions over 4 shared system prompts of 160 tokens,
    # 2-6 turns each, every turn resending the conversation so far and sent once the
    # previous answer is in (at least 1 s after the previous turn). `rate` and the
    # arrivals are conversation starts; questions ~32 tokens (max_prompt caps one), answers
    # lognormal ~32. The simulator replays the lengths only (no content, no caching).
    "multi-turn": {
        "num_requests": 120,
        "arrivals": "poisson",
        "rate": 0.5,
        "max_prompt": 128,
        "lengths": "lognormal",
        "mean_output": 32.0,
        "cv": 1.0,
        "max_output": 128,
        "conversation": {"system_prompts": 4, "system_len": 160, "min_turns": 2,
                         "max_turns": 6, "mean_user": 32.0, "think_s": 1.0},
    },
}


def add_workload_args(p: argparse.ArgumentParser, num_requests: int | None = None) -> None:
    """Workload flags; every default is None so presets can fill what is left unset."""
    g = p.add_argument_group("workload")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None, help="base settings")
    g.add_argument("--trace", default=DEFAULT_TRACE, help="Azure LLM trace CSV")
    g.add_argument(
        "--num-requests", type=int, help=f"default {num_requests or BASE['num_requests']}"
    )
    g.add_argument("--start", type=int, help="first trace row used")
    g.add_argument("--arrivals", choices=["trace", "poisson"])
    g.add_argument(
        "--rate", "--request-rate", dest="rate", type=float,
        help="req/s: Poisson rate, or trace rescaled to it",
    )  # fmt: skip
    g.add_argument(
        "--burstiness", type=float,
        help="Poisson arrivals: gamma shape of the gaps, as vLLM's (1 = Poisson, < 1 burstier)",
    )  # fmt: skip
    g.add_argument("--rate-scale", type=float, help="trace arrivals: rate multiplier")
    g.add_argument("--prompt-lengths", choices=DISTRIBUTIONS)
    g.add_argument("--prompt-scale", type=float, help="trace prompt lengths x this")
    g.add_argument("--mean-prompt", type=float)
    g.add_argument("--prompt-cv", type=float)
    g.add_argument("--max-prompt", type=int)
    g.add_argument("--lengths", choices=DISTRIBUTIONS, help="output lengths")
    g.add_argument("--output-scale", type=float, help="trace output lengths x this")
    g.add_argument("--mean-output", type=float)
    g.add_argument("--cv", type=float, help="output length CV (before the cap)")
    g.add_argument("--max-output", type=int)
    g.add_argument("--p-long", type=float, help="bimodal: share of the long mode")
    g.add_argument("--bimodal-ratio", type=float, help="bimodal: long / short mode")
    g.add_argument("--seed", type=int)
    p.set_defaults(_default_num_requests=num_requests)


def resolve_workload_args(args: argparse.Namespace) -> dict[str, Any]:
    """The effective settings: command line, else the preset, else BASE."""
    preset = PRESETS.get(args.preset or "", {})
    out: dict[str, Any] = {"preset": args.preset, "trace": args.trace}
    for key, base in BASE.items():
        value = getattr(args, key, None)
        if value is None:
            value = preset.get(key, base)
            if key == "num_requests" and key not in preset and args._default_num_requests:
                value = args._default_num_requests
        out[key] = value
    if not 1 <= out["num_requests"] <= MAX_REQUESTS:
        raise SystemExit(f"--num-requests must be in 1..{MAX_REQUESTS}")
    if not out["burstiness"] > 0:
        raise SystemExit("--burstiness must be positive")
    if out["burstiness"] != 1.0 and out["arrivals"] != "poisson":
        raise SystemExit("--burstiness shapes Poisson arrivals: add --arrivals poisson")
    return out
