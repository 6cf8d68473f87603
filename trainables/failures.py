"""Which failures of a trial retrying cannot heal, and how the trial ends on one.

Ray Tune retries a trial whose function raises, from its last checkpoint, up to --max-failures times
(FailureConfig is per experiment: Tune has no per-error setting). That is right for a worker that died
(SIGKILL, the OOM killer, a lost node) and for I/O that may work the next time; it is wrong where the
same config and data fail the same way again, which only multiplies one traceback. Such a failure is
raised as `CannotHeal` at the stage it belongs to (`cannot_heal`), and the trainable ends the trial
cleanly with an `error` field in its last report: recorded once (trials.parquet's status `error`, the
Optuna study's FAIL), never retried. docs/faults.md lists which failure is which.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CannotHeal(Exception):
    """A trial failure that a retry repeats: the message is what trials.parquet's `error` says."""


def first_line(error: BaseException) -> str:
    """The error's own first line (TensorFlow's errors keep theirs in `.message`), else its type's name."""
    text = (getattr(error, "message", None) or str(error) or type(error).__name__).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def cannot_heal(
    what: str, kinds: tuple[type[BaseException], ...], unless: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Errors of `kinds` (but not of `unless`) raised inside the block become CannotHeal("`what`
    (ErrorType): first line"): they follow from the config and the data alone."""
    try:
        yield
    except unless:
        raise
    except kinds as e:
        raise CannotHeal(f"{what} ({type(e).__name__}): {first_line(e)}") from e
