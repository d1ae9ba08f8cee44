"""Serving errors carry a TF-Serving status code; REST maps it to HTTP, gRPC to a grpc.StatusCode."""

from __future__ import annotations

# TF Serving's mapping of canonical status codes to HTTP (http_rest_api_handler / ToHTTPStatusCode).
HTTP_STATUS = {
    "OK": 200,
    "CANCELLED": 503,
    "ABORTED": 503,
    "RESOURCE_EXHAUSTED": 503,
    "UNKNOWN": 400,
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


class ServingError(Exception):
    """A request that cannot be served; `code` is a canonical status name such as INVALID_ARGUMENT."""

    def __init__(self, code: str, message: str):
        if code not in HTTP_STATUS:
            raise ValueError(f"unknown status code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def not_found(message: str) -> ServingError:
    return ServingError("NOT_FOUND", message)
