"""Where a training loop runs: a thread beside the GUI, or a child process."""

from .base import Runner
from .process import ProcessRunner
from .thread import ThreadRunner

__all__ = ["ProcessRunner", "Runner", "ThreadRunner"]
