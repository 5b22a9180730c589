"""The puller's failure reasons: part of its API (termination message, status, Events)."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    SOURCE_NOT_FOUND = "SourceNotFound"
    UNAUTHORIZED = "Unauthorized"
    CHECKSUM_MISMATCH = "ChecksumMismatch"
    INSUFFICIENT_STORAGE = "InsufficientStorage"
    NETWORK_ERROR = "NetworkError"
    INVALID_MODEL = "InvalidModel"


class PullError(Exception):
    """An expected failure: reported with its reason and message, never as a traceback."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"
