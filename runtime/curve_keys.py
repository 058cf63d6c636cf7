"""CurveZMQ keys for the ZeroMQ client endpoint: files, generation, the ZAP allow-list.

Key files are pyzmq's certificate format (`zmq.auth.create_certificates`): NAME.key holds
the public key, NAME.key_secret both keys. The server loads its .key_secret; a client
needs the server's public key and its own key pair; the server admits only the client
public keys it was given (.key files, directories of them, or "z85:KEY" strings).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

Z85_KEY_LEN = 40  # a 32-byte Curve25519 key in Z85 text
Z85_PREFIX = "z85:"  # marks a key given as text rather than as a file


class CurveKeyError(ValueError):
    """A key file or key string that cannot be used."""


def generate_keypair(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret (owner-only) into `directory`; return their paths."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(root), name)
    os.chmod(secret, 0o600)  # the secret key file is a credential
    return Path(public), Path(secret)


def load_keypair(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a .key_secret file."""
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read the key pair in {path}: {exc}") from exc
    if not secret:
        raise CurveKeyError(f"{path} holds no secret key: pass the .key_secret file")
    return public, secret


def load_public_key(spec: str | bytes | Path) -> bytes:
    """A public key: Z85 bytes, "z85:KEY" text, or a .key / .key_secret file.

    Z85 text needs its prefix: 40 characters of Z85 can also be a file name (its alphabet
    has "/" and "."), and a mistyped path must not turn into a key silently.
    """
    text = spec.decode("ascii", "replace") if isinstance(spec, bytes) else str(spec)
    if isinstance(spec, bytes) or text.startswith(Z85_PREFIX):
        key = text.removeprefix(Z85_PREFIX)
        try:
            if len(key) != Z85_KEY_LEN:
                raise ValueError(f"{len(key)} characters, not {Z85_KEY_LEN}")
            z85.decode(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError, KeyError, struct.error) as exc:
            raise CurveKeyError(f"`{key}` is not a Z85 public key: {exc}") from exc
        return key.encode("ascii")
    try:
        public, _ = zmq.auth.load_certificate(text)
    except (OSError, ValueError) as exc:
        raise CurveKeyError(f"cannot read a public key from {text}: {exc}") from exc
    return public


def load_allowed_keys(specs: list[str]) -> frozenset[bytes]:
    """Client public keys: each a directory (every *.key in it), a key file or z85:KEY."""
    keys: set[bytes] = set()
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = list(path.glob("*.key"))
            if not found:
                raise CurveKeyError(f"{spec} holds no .key files")
            keys.update(load_public_key(p) for p in found)
        else:
            keys.add(load_public_key(spec))
    return frozenset(keys)


@dataclass(frozen=True)
class CurveServerKeys:
    """What the endpoint needs: its own key pair and the clients it admits."""

    public: bytes
    secret: bytes
    allowed_clients: frozenset[bytes]

    @classmethod
    def load(cls, secret_file: str, allowed: list[str]) -> CurveServerKeys:
        if not allowed:
            raise CurveKeyError(
                "a CurveZMQ server key needs the client keys it admits "
                "(--zmq-allowed-clients DIR|FILE|z85:KEY)"
            )
        public, secret = load_keypair(secret_file)
        return cls(public, secret, load_allowed_keys(allowed))


class _AllowList:
    """pyzmq's ZAP credentials provider: a fixed set of Z85 client keys."""

    def __init__(self, keys: frozenset[bytes]) -> None:
        self._keys = keys

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self._keys


def start_authenticator(ctx: zmq.asyncio.Context, keys: CurveServerKeys) -> AsyncioAuthenticator:
    """The ZAP handler of `ctx`: start it before binding the CURVE server socket."""
    auth = AsyncioAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback("*", credentials_provider=_AllowList(keys.allowed_clients))
    return auth


def make_curve_server(sock: zmq.Socket, keys: CurveServerKeys) -> None:
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def client_curve_keys(
    server_public_key: str | bytes | Path | None,
    client_keys: str | Path | tuple[bytes, bytes] | None,
) -> tuple[bytes, tuple[bytes, bytes]] | None:
    """FastServeClient's arguments as (server public key, client pair); None: no CURVE."""
    if (server_public_key is None) != (client_keys is None):
        raise ValueError("CurveZMQ needs both server_public_key and client_keys")
    if server_public_key is None or client_keys is None:
        return None
    pair = client_keys if isinstance(client_keys, tuple) else load_keypair(client_keys)
    return load_public_key(server_public_key), pair


def make_curve_client(sock: zmq.Socket, server_public: bytes, pair: tuple[bytes, bytes]) -> None:
    sock.curve_serverkey = server_public
    sock.curve_publickey, sock.curve_secretkey = pair


def handshake_monitor(sock: zmq.asyncio.Socket) -> zmq.asyncio.Socket:
    """A monitor of `sock`'s CURVE handshakes; make it before connecting, to miss none."""
    return sock.get_monitor_socket(
        zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )


async def watch_handshakes(
    monitor: zmq.asyncio.Socket, on_outcome: Callable[[bool], None]
) -> None:
    """Call on_outcome(refused) after each handshake `monitor` reports, until cancelled."""
    try:
        while True:
            event = parse_monitor_message(await monitor.recv_multipart())["event"]
            on_outcome(event == zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    finally:
        monitor.close(linger=0)
