"""The hardening flags of `serve`/`launch`: into ServerConfig, through JSON to the frontend
process, and the combinations refused because they would leave a door open."""

from __future__ import annotations

import argparse

import pytest

from fastserve.actors.frontend import FrontendActor
from fastserve.deploy.cli import add_server_args, config_from_args
from fastserve.deploy.security_cli import API_KEY_ENV
from fastserve.runtime.config import ServerConfig
from fastserve.runtime.curve_keys import generate_keypair
from fastserve.runtime.transport import MemoryInbox, MemoryOutbox
from tests.model_fixtures import write_tiny_model


def config(*argv: str) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_server_args(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_defaults_bound_the_queue_and_leave_auth_off(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    cfg = config()
    assert (cfg.max_queued_requests, cfg.max_queued_tokens, cfg.drain_timeout_s) == (
        1024,
        1_048_576,
        30.0,
    )
    assert cfg.api_keys == [] and not cfg.metrics_public and not cfg.zmq_curve_secret_file


def test_flags_and_environment(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, "env-key, other-env-key")
    cfg = config(
        "--api-key", "k1", "--api-key", "k2", "--metrics-public",
        "--max-queued-requests", "10", "--max-queued-tokens", "0", "--drain-timeout", "2.5",
    )  # fmt: skip
    assert cfg.api_keys == ["k1", "k2", "env-key", "other-env-key"]
    assert cfg.metrics_public and cfg.max_queued_requests == 10 and cfg.max_queued_tokens == 0
    assert cfg.drain_timeout_s == 2.5
    assert ServerConfig.from_json(cfg.to_json()) == cfg  # reaches the child processes
    with pytest.raises(SystemExit, match="at least 0"):
        config("--max-queued-requests", "-1")


def test_api_keys_with_an_open_zmq_endpoint_are_refused(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(SystemExit, match="protects HTTP only"):
        config("--api-key", "k", "--zmq-port", "5555")
    assert config("--zmq-port", "5555").zmq_client_address  # no keys: open, as before


def test_curve_flags(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    _, server_secret = generate_keypair(tmp_path, "server")
    client_public, _ = generate_keypair(tmp_path / "clients", "alice")
    with pytest.raises(SystemExit, match="need --zmq-port"):
        config("--zmq-curve-secret", str(server_secret))
    with pytest.raises(SystemExit, match="client keys it admits"):
        config("--zmq-port", "5555", "--zmq-curve-secret", str(server_secret))
    with pytest.raises(SystemExit, match="cannot read"):
        config("--zmq-port", "5555", "--zmq-curve-secret", str(tmp_path / "nope"),
               "--zmq-allowed-clients", str(client_public))  # fmt: skip
    cfg = config(
        "--api-key", "k", "--zmq-port", "5555", "--zmq-curve-secret", str(server_secret),
        "--zmq-allowed-clients", str(tmp_path / "clients"),
    )  # fmt: skip
    assert cfg.zmq_allowed_clients == [str(tmp_path / "clients")]


def test_the_frontend_actor_takes_its_options_from_the_config(tmp_path, monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    _, secret = generate_keypair(tmp_path, "server")
    public, _ = generate_keypair(tmp_path, "client")
    cfg = config(
        "--api-key", "k", "--max-queued-requests", "7", "--drain-timeout", "3",
        "--zmq-port", "5555", "--zmq-curve-secret", str(secret),
        "--zmq-allowed-clients", str(public),
    )  # fmt: skip
    cfg.model = str(write_tiny_model(tmp_path / "tiny"))
    cfg.max_model_len = 256
    actor = FrontendActor.from_config(cfg, MemoryInbox(), MemoryOutbox(MemoryInbox()))
    opts = actor.service.options
    assert opts.api_keys == ("k",) and opts.max_queued_requests == 7
    assert opts.drain_timeout_s == 3 and opts.cost_model is not None
    assert actor.service.admission.max_requests == 7
    assert actor._zmq is not None and actor._zmq._curve is not None
