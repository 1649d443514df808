"""Errors raised by the client: one exception type per common gRPC status code."""

from __future__ import annotations

import re
from typing import ClassVar

import grpc

__all__ = [
    "AlreadyExists",
    "BanditdError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Unavailable",
    "Unimplemented",
    "from_rpc_error",
]

# The server starts every message with the offending field's name ("contexts[3].values: NaN"),
# so the field can be recovered for programs that want to point at it.
_FIELD = re.compile(r"^([A-Za-z_][\w.\[\]]*):\s")


class BanditdError(Exception):
    """A failed call: the gRPC status code and the server's message.

    ``str(err)`` is one line, ``"NOT_FOUND: experiment: default/ads does not exist"``.
    Errors detected in the client before any request is sent use the code the server would
    have used (INVALID_ARGUMENT), so callers handle both the same way.
    """

    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, code: grpc.StatusCode | None, message: str) -> None:
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message = message
        super().__init__(self.code, message)

    @property
    def code_name(self) -> str:
        return str(self.code.name)

    @property
    def field(self) -> str | None:
        """The offending field named at the start of the message, if any."""
        m = _FIELD.match(self.message)
        return m.group(1) if m else None

    def __str__(self) -> str:
        # One line whatever the server sent, so logs and the CLI stay grep-able.
        text = " ".join(self.message.split())
        return f"{self.code_name}: {text}" if text else self.code_name

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code_name}, {self.message!r})"


class NotFound(BanditdError):
    default_code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(BanditdError, ValueError):
    default_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(code, message)


class AlreadyExists(BanditdError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(BanditdError):
    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(BanditdError):
    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(BanditdError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(BanditdError):
    default_code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE: dict[grpc.StatusCode, type[BanditdError]] = {
    cls.default_code: cls
    for cls in (
        NotFound,
        InvalidArgument,
        AlreadyExists,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
    )
}


def error_for(code: grpc.StatusCode, message: str) -> BanditdError:
    """The most specific error class for ``code``."""
    cls = _BY_CODE.get(code, BanditdError)
    if cls is InvalidArgument:
        return InvalidArgument(message, code)
    return cls(code, message)


def from_rpc_error(err: grpc.RpcError) -> BanditdError:
    """Convert a ``grpc.RpcError`` raised by a call into a :class:`BanditdError`."""
    # Errors raised by calls are also grpc.Call (code/details); others (e.g. a failed
    # serialization) only have their str.
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return error_for(code, details or str(err))
