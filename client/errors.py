"""The client's error: a failure the user can act on."""

from __future__ import annotations


class ClientError(Exception):
    """A failure the user can act on, with the server's error code when there is one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
