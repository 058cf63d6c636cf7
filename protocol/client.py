"""Messages between FastServe's ZeroMQ client library and the frontend's client endpoint.

The client (a DEALER) sends ClientSubmit / ClientAbort; the endpoint (a ROUTER) answers each
request with zero or more ClientDelta, then exactly one ClientDone or ClientError. Request
ids are the client's own: they only need to be unique among that client's live requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClientSubmit:
    """Start a request; `body` is the HTTP API's JSON body, validated exactly as over HTTP."""

    request_id: str  # the client's id for this request, unique among its unfinished ones
    kind: str  # "completion" (/v1/completions body) or "chat" (/v1/chat/completions body)
    body: str  # the request body as JSON text, so the frontend's one validator sees it


@dataclass
class ClientAbort:
    """Stop a request of this client; its stream then ends with finish_reason "abort"."""

    request_id: str  # the client's id of the request to stop


@dataclass
class ClientDelta:
    """New output of one request."""

    request_id: str  # the client's id of the request
    text: str  # new stable text (may be empty while a character or stop string is pending)
    token_ids: list[int]  # newly generated token ids, in order
    logprobs: list[float] = field(default_factory=list)  # one per token when asked, else empty


@dataclass
class ClientDone:
    """A request ended normally; nothing more comes for its id."""

    request_id: str  # the client's id of the request
    finish_reason: str  # "stop", "length" or "abort"
    prompt_tokens: int  # prompt length in tokens
    completion_tokens: int  # tokens generated


@dataclass
class ClientError:
    """A request was rejected (4xx) or failed (5xx); nothing more comes for its id."""

    request_id: str  # the client's id of the request; "" when a frame could not be read at all
    status: int  # HTTP-style status: 400/404 invalid request, 503 not ready, 500 server error
    message: str  # what went wrong, for people
    type: str  # OpenAI error type: "invalid_request_error", "server_error", ...
