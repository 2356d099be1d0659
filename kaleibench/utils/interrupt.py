"""Two-stage Ctrl-C: the first sets a flag the caller checks at a safe point, the second stops
at once. Used by a training run (checkpoint, then stop) and by the process pool (start no new
cell, let running ones checkpoint)."""

from __future__ import annotations

import signal
import threading
from typing import Any


class GracefulStop:
    """First SIGINT: set :attr:`requested` and call :meth:`on_first`; second: raise
    ``KeyboardInterrupt``. Installed only in the main thread; :meth:`restore` undoes it."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.on_first()

    def on_first(self) -> None:
        """Hook run on the first Ctrl-C (nothing by default)."""

    def restore(self) -> None:
        """Put the previous SIGINT handler back."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
