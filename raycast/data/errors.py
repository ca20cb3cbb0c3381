"""Errors raised by the ingestion layer."""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be ingested; the message names the file or source and what is wrong."""
