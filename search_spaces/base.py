"""What a search space is: a define-by-run function plus its defaults. No TensorFlow here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

DefineByRun = Callable[[optuna.Trial], "dict[str, Any] | None"]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named space. `define` samples knobs on an Optuna trial (names = TrialConfig fields)
    and returns the knobs it fixes; `grid` lists the cells `--search grid` visits."""

    name: str
    description: str
    define: DefineByRun
    dataset: str
    num_samples: int
    max_epochs: int
    grid: Mapping[str, Sequence[Any]] | None = None
    gpus_per_trial: float = 0.0  # default on a GPU cluster; 0 runs on CPUs

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Every knob this space sets for one trial: sampled ones and fixed ones."""
        fixed = self.define(trial) or {}
        return {**trial.params, **fixed}
