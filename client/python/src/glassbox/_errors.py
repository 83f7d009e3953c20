"""Exceptions: one class per gRPC status code, all under GlassboxError."""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc


class GlassboxError(Exception):
    """An error from a Glassbox server, or a stream that broke the contract.

    Attributes:
        code: the gRPC status code (``grpc.StatusCode``).
        message: the server's message (or the client's, for a malformed stream).
    """

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else type(self).default_code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class Cancelled(GlassboxError):
    default_code = grpc.StatusCode.CANCELLED


class Unknown(GlassboxError):
    default_code = grpc.StatusCode.UNKNOWN


class InvalidArgument(GlassboxError):
    """Bad request: unknown hook, token id out of range, bad selection, ..."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(GlassboxError):
    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(GlassboxError):
    """Unknown model (or other named resource)."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(GlassboxError):
    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(GlassboxError):
    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(GlassboxError):
    """Over a configured limit (batch, tokens, response bytes, quota)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(GlassboxError):
    """E.g. text sent to a model that has no tokenizer."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(GlassboxError):
    default_code = grpc.StatusCode.ABORTED


class OutOfRange(GlassboxError):
    default_code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(GlassboxError):
    default_code = grpc.StatusCode.UNIMPLEMENTED


class Internal(GlassboxError):
    default_code = grpc.StatusCode.INTERNAL


class Unavailable(GlassboxError):
    """The server is unreachable or draining."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DataLoss(GlassboxError):
    default_code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(GlassboxError):
    default_code = grpc.StatusCode.UNAUTHENTICATED


class MalformedStream(Internal):
    """The server's Run stream broke the contract (chunk before header, gap, missing summary...)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"malformed Run stream from the server: {message}")


_BY_CODE: Dict[grpc.StatusCode, Type[GlassboxError]] = {
    cls.default_code: cls
    for cls in (
        Cancelled,
        Unknown,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def error_for_status(code: grpc.StatusCode, message: str) -> GlassboxError:
    """The GlassboxError subclass for a status code."""
    return _BY_CODE.get(code, GlassboxError)(message, code)


def from_rpc_error(error: grpc.RpcError) -> GlassboxError:
    """Converts a grpc.RpcError (a grpc.Call) to the matching GlassboxError."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    return error_for_status(code or grpc.StatusCode.UNKNOWN, details or str(error))
