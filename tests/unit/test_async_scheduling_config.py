"""When ticks are built ahead: `--async-scheduling auto|on|off`, the device, the pipeline."""

import pytest

from fastserve.deploy.cli import build_parser, config_from_args
from fastserve.runtime.config import ServerConfig


def config(*flags: str, device: str = "cpu") -> ServerConfig:
    cfg = config_from_args(build_parser().parse_args(["serve", *flags]))
    cfg.device = device  # as serve resolves "auto" before building the processes
    return cfg


def test_auto_builds_ahead_on_a_gpu_only():
    assert config().scheduler.async_scheduling == "auto"
    assert not config().async_scheduling() and config().max_ticks_in_flight() == 1
    gpu = config(device="cuda")
    assert gpu.async_scheduling() and gpu.max_ticks_in_flight() == 2


def test_on_and_off_override_the_device_but_a_pipeline_never_builds_ahead():
    assert config("--async-scheduling", "on").async_scheduling()
    assert not config("--async-scheduling", "off", device="cuda").async_scheduling()
    piped = config("--async-scheduling", "on", "--pp", "2")
    assert not piped.async_scheduling() and piped.max_ticks_in_flight() == 2  # one per stage


def test_a_bad_mode_is_refused():
    with pytest.raises(SystemExit):
        config("--async-scheduling", "sometimes")
    cfg = config()
    cfg.scheduler.async_scheduling = "sometimes"  # e.g. from a config file
    with pytest.raises(ValueError, match="auto, on or off"):
        cfg.async_scheduling()
