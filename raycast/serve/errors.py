"""The one error type request handling raises for bad input: it carries the HTTP status and a readable message."""

from __future__ import annotations


class RequestError(Exception):
    """A client error (4xx) whose message names the problem; the API turns it into ``{"detail": message}``."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
