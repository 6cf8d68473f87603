"""Racing repeats (`--repeats auto`): a Ray Tune Searcher that spends seeds where an answer is still open.

`RaceSearcher` proposes the next (configuration, seed) from the results so far, round by round:

- grid (`--search grid`): every cell starts with `--min-repeats` seeds; after each round, a cell gets
  the next seed only while a paired comparison it is part of (two levels of a knob, the cells differing
  in that knob alone: the report's questions and paired rows) is still open; the race ends when every
  comparison is settled or the open ones' cells have `--max-repeats` seeds. It races on test accuracy,
  the metric the report's questions answer (every cell is fixed, so nothing is selected on it).
- confirm (`--confirm-top K`): the K configurations race seed by seed; one is dropped as soon as the
  leader beats it significantly; the race ends when one is left, none is open against the leader, or at
  `--max-repeats`. It races on best validation accuracy (the one number per trial, see
  tuning.optuna_search), since it chooses a configuration and must not choose it on test data.

The decisions are analysis.sequential's (Holm across the comparisons at each look, Bonferroni over the
looks, TOST at the resolution), one race at a time. The state (what was proposed, what came back) is
pickled with Tune's experiment snapshot, so `--resume` continues the race where it stood: a seed whose
trial finished is never proposed again, one still running is continued by Tune from its checkpoint.
Trials are ordinary trials in `<experiment>/<phase>`, so the tables are written as for any search.
Imports Ray, never TensorFlow.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from analysis import questions, sequential
from analysis.knobs import level_text
from tuning.optuna_search import full_configs

GRID, CONFIRM = "grid", "confirm"
METRICS = {GRID: questions.METRIC, CONFIRM: "best_val_accuracy"}  # what each race compares
VAL = "val_accuracy"


class RaceSearcher(Searcher):
    """Proposes (arm, seed) trials round by round (module docstring). `arms`: full trial configs without
    the seed; seeds are first_seed, first_seed + 1, ...; `kind`: GRID or CONFIRM."""

    def __init__(
        self,
        arms: Sequence[Mapping[str, Any]] = (),
        kind: str = GRID,
        design: sequential.Design | None = None,
        first_seed: int = 0,
        metric: str | None = None,
        mode: str | None = None,
    ) -> None:
        super().__init__(metric=metric, mode=mode)
        self.arms = [{k: v for k, v in a.items() if k != "seed"} for a in arms]
        self.kind = kind
        self.design = design or sequential.race_design(None, None, None)
        self.first_seed = first_seed
        self.comparisons = sequential.grid_comparisons(self.arms) if kind == GRID else []
        self._n = [0] * len(self.arms)  # seeds proposed per arm
        self._alive = [True] * len(self.arms)
        self._values: dict[tuple[int, int], float] = {}  # (arm, seed index) -> the race's metric (NaN: none)
        self._trials: dict[str, tuple[int, int]] = {}  # Tune trial id -> (arm, seed index)
        self._pending: set[str] = set()
        self._queue: list[tuple[int, int]] = []
        self._best_val: dict[str, float] = {}  # trial id -> best validation accuracy so far
        self._finished = False
        self.looks: list[str] = []  # one line per look, printed as the race goes

    # ---- Tune's Searcher API -----------------------------------------------------------------------

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        self._metric = self._metric or metric
        self._mode = self._mode or mode
        return True

    def suggest(self, trial_id: str) -> dict | None:
        if not self._queue and not self._pending and not self._finished:
            self._advance()  # the first round (or a restored race between rounds)
        if self._queue:
            arm, seed = self._queue.pop(0)
            self._trials[trial_id] = (arm, seed)
            self._pending.add(trial_id)
            return {**self.arms[arm], "seed": self.first_seed + seed}
        if self._finished:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's sentinel string
        return None  # the round is still running: the next is decided when it is in

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        value = _as_float(result.get(VAL))
        if trial_id in self._trials and math.isfinite(value):
            self._best_val[trial_id] = max(self._best_val.get(trial_id, -math.inf), value)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._trials:
            return
        self._pending.discard(trial_id)
        result = result or {}
        self.on_trial_result(trial_id, result)
        value = math.nan
        if not error and not result.get("error"):
            value = (
                _as_float(result.get(METRICS[GRID])) if self.kind == GRID else self._best_val.get(trial_id, math.nan)
            )
        # A trial errored and retried on --resume completes again, with its value this time.
        arm_seed = self._trials[trial_id]
        if math.isfinite(value) or arm_seed not in self._values:
            self._values[arm_seed] = value
        if not self._pending and not self._queue and not self._finished:
            self._advance()  # the round is in: the look, as soon as it can be taken

    def _advance(self) -> None:
        self._queue = self._next_round()
        if not self._queue:
            self._finished = True
            print(self.closing_line())

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    # ---- the race ------------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    def seeds(self) -> list[int]:
        """Seeds proposed per arm so far."""
        return list(self._n)

    def _arrays(self, values: Mapping[tuple[int, int], float], n: Sequence[int]) -> np.ndarray:
        width = max([*n, 1])
        out = np.full((1, len(self.arms), width), np.nan)
        for (arm, seed), v in values.items():
            if seed < width:
                out[0, arm, seed] = v
        return out

    def decide(
        self, values: Mapping[tuple[int, int], float], n: Sequence[int], alive: Sequence[bool]
    ) -> tuple[list[int], list[bool], str]:
        """(arms that get the next seed, alive after this look, a line saying why) for these results."""
        d = self.design
        if not any(n):
            return list(range(len(self.arms))), list(alive), ""
        v, counts = self._arrays(values, n), np.asarray([n])
        if self.kind == GRID:
            a, more = sequential.grid_round(v, counts, self.comparisons, d)
            open_ = [c for g, c in enumerate(self.comparisons) if a.outcome[0, g] == sequential.OPEN]
            names = "; ".join(f"{c.knob} {level_text(c.level_a)} vs {level_text(c.level_b)}" for c in open_)
            line = f"race look at seeds {sorted(set(n))}: {len(open_)} of {len(self.comparisons)} comparisons open" + (
                f" ({names})" if names else ""
            )
            return [int(i) for i in np.flatnonzero(more[0])], list(alive), line
        against, leader, still, goes_on = sequential.confirm_round(v, counts, np.asarray([alive]), d)
        dropped = [i for i in range(len(self.arms)) if alive[i] and not still[0, i]]
        line = (
            f"race look at {max(n)} seeds: leader config {int(leader[0]) + 1}"
            + (f", dropped config(s) {', '.join(str(i + 1) for i in dropped)}" if dropped else "")
            + f", {int(still[0].sum())} racing"
        )
        extend = [int(i) for i in np.flatnonzero(still[0])] if goes_on[0] else []
        return extend, [bool(x) for x in still[0]], line

    def _next_round(self) -> list[tuple[int, int]]:
        if not any(self._n):
            # Seed-major: every arm once before any twice, so a race cut short still covers every arm.
            first = self.design.min_repeats or 1
            queue = [(arm, s) for s in range(first) for arm in range(len(self.arms))]
            self._n = [first] * len(self.arms)
            return queue
        extend, self._alive, line = self.decide(self._values, self._n, self._alive)
        if line:
            self.looks.append(line)
            print(line)
        queue = [(arm, self._n[arm]) for arm in extend]
        for arm in extend:
            self._n[arm] += 1
        return queue

    def closing_line(self) -> str:
        per_arm = ", ".join(f"{_label(a, self.arms)}: {n}" for a, n in zip(self.arms, self._n, strict=True))
        return f"race done ({self.kind}): seeds per {'cell' if self.kind == GRID else 'config'}: {per_arm}"

    def arm_of(self, config: Mapping[str, Any]) -> int | None:
        plain = {k: v for k, v in config.items() if k != "seed"}
        for i, arm in enumerate(self.arms):
            if all(plain.get(k) == v for k, v in arm.items()):
                return i
        return None

    def incomplete(self, grid: Any) -> bool:
        """Whether a Tune run of this race (its ResultGrid) stopped before the race ended: a trial not
        finished, or results on which the race would still propose a seed (Tune returns early on
        Ctrl-C, possibly between two rounds)."""
        if grid.num_terminated + grid.num_errors < len(grid):
            return True
        values: dict[tuple[int, int], float] = {}
        n = [0] * len(self.arms)
        for result in grid:
            config = result.config or {}
            arm = self.arm_of(config)
            if arm is None or "seed" not in config:
                continue
            seed = int(config["seed"]) - self.first_seed
            n[arm] = max(n[arm], seed + 1)
            values[(arm, seed)] = _result_value(result, self.kind)
        if not any(n):
            return bool(self.arms)
        top = max(n)
        alive = [c == top for c in n] if self.kind == CONFIRM else [True] * len(n)
        extend, _, _ = self.decide(values, n, alive)
        return bool(extend)


def _finite(x: Any) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def _as_float(x: Any) -> float:
    return float(x) if _finite(x) else math.nan


def _result_value(result: Any, kind: str) -> float:
    if result.error is not None:
        return math.nan
    metrics = result.metrics or {}
    if metrics.get("error"):
        return math.nan
    if kind == GRID:
        return _as_float(metrics.get(METRICS[GRID]))
    frame = result.metrics_dataframe
    if frame is None or VAL not in frame:
        return _as_float(metrics.get(VAL))
    best = frame[VAL].max()
    return float(best) if _finite(float(best)) else math.nan


def _label(arm: Mapping[str, Any], arms: Sequence[Mapping[str, Any]]) -> str:
    """The knobs that vary among the arms, as 'knob=value, ...'."""
    varying = [k for k in arm if len({repr(a.get(k)) for a in arms}) > 1]
    return ", ".join(f"{k}={level_text(arm[k])}" for k in varying) or "(the only one)"


def grid_race(cells: Sequence[Mapping[str, Any]], fixed: Mapping[str, Any], design: sequential.Design) -> RaceSearcher:
    """The race over a grid's cells (search_spaces.base.SearchSpace.cells) with the run's fixed knobs;
    seeds from fixed['seed']."""
    seed = int(fixed.get("seed", 0))
    arms = full_configs([{**cell, **fixed, "seed": seed} for cell in cells])
    return RaceSearcher(arms, GRID, design, seed)


def confirm_race(configs: Sequence[Mapping[str, Any]], design: sequential.Design) -> RaceSearcher:
    """The race among the confirmation stage's configurations (analysis.selection.confirm_configs with
    one repeat: each config once, with the first new seed)."""
    first = int(configs[0]["seed"]) if configs else 0
    return RaceSearcher(full_configs(configs), CONFIRM, design, first)


def max_trials(searcher: RaceSearcher) -> int:
    """The most trials the race can run: Tune's num_samples for it (the race ends itself earlier)."""
    return len(searcher.arms) * (searcher.design.max_repeats or 1)


def search_incomplete(search_alg: Any, grid: Any) -> bool | None:
    """For the driver's check after a phase: None when `search_alg` is not a race, else whether it is
    incomplete (RaceSearcher.incomplete)."""
    return search_alg.incomplete(grid) if isinstance(search_alg, RaceSearcher) else None
