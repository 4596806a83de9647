"""Where a training loop runs: a thread beside the GUI, a child process, or elsewhere
(followed through its run folder)."""

from .base import Runner
from .follow import FollowRunner
from .process import ProcessRunner, close_spare, start_spare
from .thread import ThreadRunner

__all__ = ["FollowRunner", "ProcessRunner", "Runner", "ThreadRunner", "close_spare", "start_spare"]
