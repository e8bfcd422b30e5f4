"""Errors of the local stack (`supaworker dev`), under their own root.

    LocalStackError           the local stack cannot start, is down or is misconfigured
    └── ToolMissingError      a program it needs is not installed (names the install command)

They are not part of the product's tree (`supaworker.exceptions`): a worker on a VPS never
meets them.
"""

from __future__ import annotations


class LocalStackError(Exception):
    """The local stack is not usable."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ToolMissingError(LocalStackError):
    """A program the local stack needs is not installed."""
