"""Request errors: a gRPC status code and a message that starts with the offending field."""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    def __init__(self, code: grpc.StatusCode, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = f"{field}: {message}"


def invalid(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, field, message)


def not_found(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, field, message)


def already_exists(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, field, message)


def precondition(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, field, message)


def unimplemented(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNIMPLEMENTED, field, message)


def unavailable(field: str, message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, field, message)
