"""Errors of the sequence readers (their own module: the readers and the ground-truth helpers
both raise them)."""
from __future__ import annotations

__all__ = ["ImageFolderError"]


class ImageFolderError(ValueError):
    """Unreadable, inconsistent or missing image-sequence data, or bad writer input."""
