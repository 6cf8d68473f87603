"""Optuna's journal storage (the study's default home, tuning.study) with reads that cost the trials still
open, not the study's size.

Optuna's JournalStorage answers every `get_all_trials` with a Python loop over every trial of the study,
and each ask makes four such reads (Study.ask's look for WAITING trials, the intersection search space,
TPE's history, the searcher's count of finished trials). Over 10,000 trivial trials (benchmarks/bookkeeping.py,
benchmarks/README.md, issue 22) the driver's time per trial grew 1.73x and 1.76x from the first 1,000 trials
to the last (37 to 64-65 ms) with Optuna's storage, and 1.28x and 1.50x (34-36 to 46-51 ms) with this one.

A finished trial (COMPLETE, PRUNED or FAIL) never changes again: Optuna refuses to update one, and the
journal's replay skips such a write. So this storage keeps, per study, the list of its trials as of the last
read and the positions of those not finished then; a read brings back only those and the trials added since
(whoever wrote them: the journal is re-read from the file first, as Optuna does). Reads with a deep copy are
Optuna's own.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState


class _Trials:
    """One study's trials as of the last read: `trials[p]` is its trial at position p (creation order,
    which is number order), `open` the positions that had not finished then."""

    def __init__(self) -> None:
        self.trials: list[FrozenTrial] = []
        self.open: list[int] = []

    def refresh(self, ids: list[int], by_id: dict[int, FrozenTrial]) -> None:
        for p in self.open:  # the journal's replay replaces a trial's object when it changes
            self.trials[p] = by_id[ids[p]]
        scanned = len(self.trials)
        self.trials.extend(map(by_id.__getitem__, ids[scanned:]))
        looked = self.open + list(range(scanned, len(ids)))
        self.open = [p for p in looked if not self.trials[p].state.is_finished()]


class JournalStorage(optuna.storages.JournalStorage):
    """optuna.storages.JournalStorage whose shallow reads of a study's trials are incremental (module doc)."""

    def __init__(self, backend: Any) -> None:
        super().__init__(backend)
        self._read: dict[int, _Trials] = {}  # study id -> its trials as of the last read

    def __getstate__(self) -> dict[Any, Any]:
        return {k: v for k, v in super().__getstate__().items() if k != "_read"}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)  # a fresh replay of the journal, so a fresh index of it
        self._read = {}

    def get_all_trials(
        self, study_id: int, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        if deepcopy:
            return super().get_all_trials(study_id, deepcopy=True, states=states)
        with self._thread_lock:
            self._sync_with_backend()
            replay = self._replay_result
            replay.get_study(study_id)  # Optuna's KeyError for a study it does not hold
            read = self._read.setdefault(study_id, _Trials())
            read.refresh(replay._study_id_to_trial_ids[study_id], replay._trials)
            if states is None:
                return list(read.trials)
            if not any(s in states for s in TrialState if s.is_finished()):  # only unfinished ones asked
                return [t for t in map(read.trials.__getitem__, read.open) if t.state in states]
            return [t for t in read.trials if t.state in states]


def open_journal(path: str) -> JournalStorage:
    """The journal file at `path` (created if missing), in the format `optuna-dashboard PATH` opens."""
    return JournalStorage(JournalFileBackend(path))
