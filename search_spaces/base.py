"""What a search space is: a define-by-run function plus its defaults. No TensorFlow here."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from trainables.registry import Knob

DefineByRun = Callable[[optuna.Trial], "dict[str, Any] | None"]
# A grid is either a cartesian product {knob: values} or an explicit list of cells {knob: value},
# for studies whose cells are not a product (BaseNet; ConvNet x BN; ConvNet x augmentation).
Grid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]

# CIFAR-100 and the digits (upsampled) are 32x32: the side the ConvNet spaces keep valid for.
IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named space. `define` samples knobs on an Optuna trial (names = TrialConfig fields, or the
    space's own `knobs`) and returns the knobs it fixes; `grid` lists the cells `--search grid` visits.
    `knobs` declares knobs beyond TrialConfig's (a plugin's network's): registered with the space,
    validated by their declaration, typed columns of trials.parquet."""

    name: str
    description: str
    define: DefineByRun
    dataset: str
    num_samples: int
    max_epochs: int
    grid: Grid | None = None
    gpus_per_trial: float = 0.0  # default on a GPU cluster; 0 runs on CPUs
    knobs: tuple[Knob, ...] = ()
    origin: str = "built-in"  # the plugin file that registered it

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Every knob this space sets for one trial: sampled ones and fixed ones."""
        fixed = self.define(trial) or {}
        return {**trial.params, **fixed}

    def examples(self, n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
        """n configs from a seeded random sampler, plus the grid's cells: what the driver checks
        flags that fix a knob (--input-size, --weights, --patience) against before any trial starts."""
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a throwaway study: no "study created" line
        try:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            # Trials are left open: the study is thrown away.
            return [self.sample(study.ask()) for _ in range(n)] + self.cells()
        finally:
            optuna.logging.set_verbosity(verbosity)

    def cells(self, where: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """The grid's cells, each a dict of knobs, in a stable order; [] without a grid.

        `where` keeps the cells whose knobs match every {knob: value} given (values compared as text,
        as typed on the command line: `--cells model=basenet`)."""
        if self.grid is None:
            return []
        if isinstance(self.grid, Mapping):
            names = list(self.grid)
            cells = [dict(zip(names, values, strict=True)) for values in itertools.product(*self.grid.values())]
        else:
            cells = [dict(cell) for cell in self.grid]
        return [c for c in cells if all(k in c and str(c[k]) == v for k, v in (where or {}).items())]
