"""Exceptions that carry a one-line, user-facing message."""

from __future__ import annotations

import re


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


class OutputError(HybridSegError, ValueError):
    """Writing where asked would replace something the user made."""


class DivergedError(HybridSegError, ArithmeticError):
    """Training produced a non-finite loss or weight."""


def reason(exc: BaseException) -> str:
    """The first line of an error from a library, for a one-line message: without any
    bytes of the file it may quote (a file's content never reaches the screen)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # a bytes literal (b'...') stands after a space, '=', '(' or at the start
    return re.sub(r"[:,]?\s*(\w+=)?(?:(?<=[\s=(])|^)b(['\"]).*?(\2|$)", "", text).strip()[:200] or type(exc).__name__
