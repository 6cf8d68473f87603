"""Exit codes, and how a run is interrupted: SIGINT and SIGTERM both stop it resumably (exit 130)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_OK, EXIT_ALL_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Interrupted(Exception):
    """SIGINT or SIGTERM: what is done is kept; the experiment can be resumed (exit 130)."""

    def __init__(self, resume_hint: str | None = None) -> None:
        super().__init__(resume_hint)
        self.resume_hint = resume_hint


class StopSignal:
    """SIGTERM (a scheduler, `kill`) takes Ctrl-C's path: Tune's own SIGINT handler stops the run
    gracefully and checkpoints the experiment state; outside Tune it raises KeyboardInterrupt.
    `terminated` tells a run Tune returned from early because of it."""

    def __init__(self) -> None:
        self.terminated = False

    def _handle(self, signum: int, frame: Any) -> None:
        self.terminated = True
        signal.raise_signal(signal.SIGINT)

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handle)


@contextmanager
def sigterm_as_sigint() -> Iterator[StopSignal]:
    previous = signal.getsignal(signal.SIGTERM)
    stop = StopSignal()
    stop.install()
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
