"""The service's refusal: an `error` event code and a message for the client."""

from __future__ import annotations


class ServiceError(Exception):
    """A request the service refuses, with the `error` event code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
