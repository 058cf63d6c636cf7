"""The one codec: typed dataclass messages <-> msgpack bytes with a small envelope.

Wire format of one message (a single ZeroMQ frame):
    byte 0      message type (see MESSAGE_TYPES)
    byte 1      protocol version
    bytes 2-9   message id (unsigned 64-bit, big endian), unique per sender; decoding skips it
    rest        msgpack array of the dataclass fields, in declaration order

Decoding validates every field against the dataclass annotations and rejects unknown
types and versions, so a peer built from other code fails loudly instead of silently.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import operator
import struct
import types
import typing
from collections.abc import Callable
from typing import Any, Union

import msgpack

from fastserve.protocol import (
    client,
    control,
    to_cache_manager,
    to_frontend,
    to_scheduler,
    to_worker,
)
from fastserve.protocol.common import BlockCopy, SamplingParams, TokenLogprobs

PROTOCOL_VERSION = 8  # 2: SubmitRequest.priority; 3: SchedulerStats observability fields;
# 4: top/prompt logprobs and grammars (SamplingParams, SampledToken, RequestOutput);
# 5: prefix caching (NewJob.num_cached, BlockCopy.keep_blocks, SchedulerStats prefix_cache_*)
# 6: the launches' heartbeat as messages (NodeAlive, NodeDown) instead of text frames
# 7: the cache manager is fed diffs (CacheUpdate) instead of a snapshot a tick (CacheSnapshot)
# 8: async scheduling: workers feed their own samples (ScheduledJob.append_token_ids),
#    SchedulerStats.steps_ahead and steps_wasted
_HEADER = struct.Struct("!BBQ")

# Type byte -> message class. Append only: a number, once used, keeps its meaning.
MESSAGE_TYPES: dict[int, type] = {
    1: to_scheduler.SubmitRequest,
    2: to_scheduler.AbortRequest,
    3: to_scheduler.StepResult,
    4: to_scheduler.SwapDone,
    5: to_scheduler.StepFailed,
    6: to_scheduler.SwapPlan,
    10: to_worker.TickPlan,
    # 11: retired (to_worker.Shutdown, never sent); not to be reused.
    20: to_frontend.OutputBatch,
    21: to_frontend.SchedulerStats,
    # 30: retired (to_cache_manager.CacheSnapshot, a full view every tick); not to be reused.
    31: to_cache_manager.CacheUpdate,
    40: control.ActorReady,
    41: control.ActorFailed,
    42: control.EngineDown,
    43: control.EngineUp,
    44: control.NodeAlive,
    45: control.NodeDown,
    50: client.ClientSubmit,
    51: client.ClientAbort,
    52: client.ClientDelta,
    53: client.ClientDone,
    54: client.ClientError,
}
_TYPE_BYTES: dict[type, int] = {cls: code for code, cls in MESSAGE_TYPES.items()}
# Value dataclasses that may appear nested inside messages.
_NESTED: tuple[type, ...] = (
    SamplingParams,
    TokenLogprobs,
    BlockCopy,
    to_worker.NewJob,
    to_worker.ScheduledJob,
    to_scheduler.SampledToken,
    to_frontend.RequestOutput,
    to_frontend.HistogramCounts,
    to_frontend.PreemptionRecord,
    to_cache_manager.KVPools,
    to_cache_manager.JobKV,
)


class ProtocolError(ValueError):
    """A frame that is not a valid message of this protocol version."""


@dataclasses.dataclass(frozen=True)
class Envelope:
    """A decoded frame: its message (the header's message id is not kept; no receiver reads it)."""

    message: Any  # the dataclass instance


# Values msgpack packs as they are. Checked by exact type first: a message holds mostly
# these, and the isinstance chain below costs ~1.5 us a value (a tick's messages hold
# thousands). Enum members (a StrEnum is a str) are never of these exact types.
_PLAIN = frozenset({int, float, str, bool, bytes, type(None)})
# Dataclass -> a function returning its field values in order, as a tuple.
_FIELDS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def _to_wire(value: Any) -> Any:
    tp = type(value)
    if tp in _PLAIN:
        return value
    fields = _FIELDS.get(tp)
    if fields is not None:
        return [v if type(v) in _PLAIN else _to_wire(v) for v in fields(value)]
    if isinstance(value, enum.Enum):  # its value: msgpack knows no enums
        return value.value
    if isinstance(value, list | tuple):
        if all(type(v) in _PLAIN for v in value):
            return value  # token ids, block ids, request ids: packed as they are
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = [f.name for f in dataclasses.fields(value)]
        get = operator.attrgetter(*names) if names else (lambda _: ())
        _FIELDS[tp] = get if len(names) != 1 else (lambda v: (get(v),))
        return _to_wire(value)
    return value


class Codec:
    """Encodes and decodes protocol messages; one per sender (it numbers its messages)."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._decoders: dict[type, Callable[[Any, str], Any]] = {}

    def encode(self, message: Any) -> bytes:
        code = _TYPE_BYTES.get(type(message))
        if code is None:
            raise ProtocolError(f"not a protocol message: {type(message).__name__}")
        header = _HEADER.pack(code, PROTOCOL_VERSION, next(self._ids))
        try:
            body = msgpack.packb(_to_wire(message), use_bin_type=True)
        except (OverflowError, TypeError, ValueError) as exc:  # e.g. an int past 64 bits
            raise ProtocolError(f"cannot encode {type(message).__name__}: {exc}") from exc
        return header + body

    def decode(self, frame: bytes) -> Envelope:
        if len(frame) < _HEADER.size:
            raise ProtocolError(f"frame of {len(frame)} bytes is shorter than the header")
        code, version, _msg_id = _HEADER.unpack_from(frame)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"protocol version {version}, expected {PROTOCOL_VERSION}")
        cls = MESSAGE_TYPES.get(code)
        if cls is None:
            raise ProtocolError(f"unknown message type {code}")
        try:
            raw = msgpack.unpackb(frame[_HEADER.size :], raw=False, strict_map_key=False)
        except Exception as exc:  # msgpack raises several unrelated types
            raise ProtocolError(f"undecodable body of {cls.__name__}: {exc}") from exc
        return Envelope(self._converter(cls)(raw, cls.__name__))

    def _converter(self, tp: Any) -> Callable[[Any, str], Any]:
        cached = self._decoders.get(tp)
        if cached is None:
            cached = _build_converter(tp)
            self._decoders[tp] = cached
        return cached


def _build_converter(tp: Any) -> Callable[[Any, str], Any]:
    """A function that checks a wire value against `tp` and builds the Python value."""
    if dataclasses.is_dataclass(tp):
        return _dataclass_converter(tp)
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        inner = [_build_converter(o) for o in options if o is not type(None)]
        allow_none = type(None) in options

        def convert_union(v: Any, where: str) -> Any:
            if v is None and allow_none:
                return None
            errors = []
            for conv in inner:
                try:
                    return conv(v, where)
                except ProtocolError as exc:
                    errors.append(str(exc))
            raise ProtocolError("; ".join(errors))

        return convert_union
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        item = _build_converter(item_tp)

        def convert_list(v: Any, where: str) -> Any:
            if not isinstance(v, list):
                raise ProtocolError(f"{where}: expected a list, got {type(v).__name__}")
            return [item(x, where) for x in v]

        return convert_list
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        key, val = _build_converter(key_tp), _build_converter(val_tp)

        def convert_dict(v: Any, where: str) -> Any:
            if not isinstance(v, dict):
                raise ProtocolError(f"{where}: expected a map, got {type(v).__name__}")
            return {key(k, where): val(x, where) for k, x in v.items()}

        return convert_dict
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = {m.value: m for m in tp}

        def convert_enum(v: Any, where: str) -> Any:
            member = values.get(v) if type(v) in (str, int) else None  # not a bool, a float
            if member is None:
                raise ProtocolError(f"{where}: expected one of {sorted(values)}, got {v!r}")
            return member

        return convert_enum
    if tp is float:

        def convert_float(v: Any, where: str) -> Any:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ProtocolError(f"{where}: expected a number, got {type(v).__name__}")
            return float(v)

        return convert_float
    if tp in (int, str, bool, bytes):

        def convert_exact(v: Any, where: str) -> Any:
            if type(v) is not tp:
                raise ProtocolError(f"{where}: expected {tp.__name__}, got {type(v).__name__}")
            return v

        return convert_exact
    raise TypeError(f"unsupported field type in protocol: {tp!r}")


def _dataclass_converter(cls: type) -> Callable[[Any, str], Any]:
    hints = typing.get_type_hints(cls)
    fields = [(f.name, _build_converter(hints[f.name])) for f in dataclasses.fields(cls)]
    name = cls.__name__

    def convert(v: Any, where: str) -> Any:
        if not isinstance(v, list) or len(v) != len(fields):
            raise ProtocolError(f"{where}: {name} needs {len(fields)} fields")
        return cls(
            **{
                fname: conv(x, f"{name}.{fname}")
                for (fname, conv), x in zip(fields, v, strict=True)
            }
        )

    return convert


for _cls in (*MESSAGE_TYPES.values(), *_NESTED):
    _build_converter(_cls)  # fail at import if a message uses a type the codec cannot check
