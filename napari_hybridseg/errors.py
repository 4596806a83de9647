"""Exceptions that carry a one-line, user-facing message."""

from __future__ import annotations


class HybridSegError(Exception):
    """Base class: the message names the file or layer and the problem, on one line."""


class AnnotationError(HybridSegError, ValueError):
    """An annotation or image in a project is invalid."""


class ImageReadError(HybridSegError, OSError):
    """An image file cannot be read."""


class ModelFileError(HybridSegError, ValueError):
    """A model or checkpoint file is not one of ours, or is damaged."""


class ConfigError(HybridSegError, ValueError):
    """A training or prediction option is invalid."""
