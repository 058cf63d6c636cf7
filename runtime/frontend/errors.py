"""Request errors in the OpenAI error shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

from typing import Any


def error_body(
    message: str,
    err_type: str = "invalid_request_error",
    param: str | None = None,
    code: str | int | None = None,
) -> dict[str, Any]:
    """The JSON body OpenAI clients parse into an APIError."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": code}}


class RequestError(Exception):
    """A client mistake found before the request reaches the scheduler.

    Carries the HTTP status so every transport (HTTP, websocket) reports it the same way.
    """

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        code: str | None = None,
        err_type: str = "invalid_request_error",
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.err_type = err_type
        self.retry_after = retry_after  # seconds, for 429/503: HTTP sends a Retry-After header

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.err_type, self.param, self.code)


def model_not_found(name: str) -> RequestError:
    return RequestError(
        f"The model `{name}` does not exist.", param="model", status=404, code="model_not_found"
    )


def service_unavailable(
    message: str, code: str = "unavailable", retry_after: int | None = None
) -> RequestError:
    """Not ready yet, draining before shutdown, or restarting: another replica (or this one,
    after `retry_after` seconds) should take it."""
    return RequestError(
        message, status=503, err_type="service_unavailable", code=code, retry_after=retry_after
    )


def server_error_body(message: str) -> dict[str, Any]:
    """A failure on our side (scheduler or worker error), reported with HTTP 500."""
    return error_body(message, "server_error", None, "internal_error")
