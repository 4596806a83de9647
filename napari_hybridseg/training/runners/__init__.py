"""Where a training loop runs: here, in a thread beside the GUI."""

from .thread import ThreadRunner

__all__ = ["ThreadRunner"]
