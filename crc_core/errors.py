"""Errors raised by crc_core. All derive from ValueError so callers can catch one type."""

from __future__ import annotations


class CRCError(ValueError):
    """Base class: bad input or a request crc_core cannot answer soundly."""


class UnsupportedActivationError(CRCError):
    """The activation has no bounded second derivative (e.g. ReLU), so no curvature bound exists."""


class CheckpointError(CRCError):
    """A checkpoint file is missing, corrupt, tampered with, not ours, or of another architecture."""


class DataError(CRCError):
    """A dataset is missing, empty or corrupt."""
