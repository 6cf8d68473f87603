"""What a search space is: a define-by-run function plus its defaults. No TensorFlow here."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from trainables.config import PERTURBABLE_KNOBS
from trainables.registry import Knob

DefineByRun = Callable[[optuna.Trial], "dict[str, Any] | None"]
# A grid is either a cartesian product {knob: values} or an explicit list of cells {knob: value},
# for studies whose cells are not a product (BaseNet; ConvNet x BN; ConvNet x augmentation).
Grid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]

STOP_ON = ("last", "best", "ema")  # what ASHA compares at a rung; see SchedulerSettings


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """ASHA's settings for a space (run_search.py flags override them; tuning.schedulers builds
    the Ray scheduler). Rungs fall at grace_period * reduction_factor**k epochs below the full budget.

    grace_period: epochs every trial trains before its first judgement (ASHA's first rung).
    reduction_factor: a rung keeps the best 1/reduction_factor of the trials that reached it.
    brackets: Ray's ASHA brackets; bracket s starts judging at grace_period * reduction_factor**s, so
        several brackets hedge against a misleading first rung (as Hyperband does). 1 = plain ASHA.
    stop_on: the value compared at a rung: 'last' (the epoch's val_accuracy), 'best' (best so far) or
        'ema' (exponential mean over epochs, weight 1/2 on the newest: damps a one-epoch spike or dip).

    Defaults from recorded learning curves (benchmarks/README.md, "Early stopping"): on 17 CIFAR
    reference runs the ranking after epoch 1 predicts the ranking at epoch 30 poorly (Spearman 0.40)
    while epoch 2 predicts it well (0.78), and at the later rungs of grace 2 (epochs 6, 18) the best
    so far ranks better than the epoch's own value (0.82 and 0.70 against 0.76 and 0.28: the runs
    overfit and their validation accuracy wobbles). Replayed searches on digits curves (24 configs,
    20 seeds, 10 full trainings' worth of epochs) end 0.63 accuracy points closer to the best config
    with grace 2 than with FIFO (95 % CI 0.13 to 1.12; better in 6 seeds, worse in none), while
    grace 1 and 3 and three brackets are not distinguishable from FIFO.
    """

    grace_period: int = 2
    reduction_factor: int = 3
    brackets: int = 1
    stop_on: str = "best"

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise ValueError(f"grace_period must be >= 1 epoch, got {self.grace_period}")
        if self.reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2, got {self.reduction_factor}")
        if self.brackets < 1:
            raise ValueError(f"brackets must be >= 1, got {self.brackets}")
        if self.stop_on not in STOP_ON:
            raise ValueError(f"stop_on must be one of {', '.join(STOP_ON)}, got {self.stop_on!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# CIFAR-100 and the digits (upsampled) are 32x32: the side the ConvNet spaces keep valid for.
IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A named space. `define` samples knobs on an Optuna trial (names = TrialConfig fields, or the
    space's own `knobs`) and returns the knobs it fixes; `grid` lists the cells `--search grid` visits.
    `knobs` declares knobs beyond TrialConfig's (a plugin's network's): registered with the space,
    validated by their declaration, typed columns of trials.parquet. `perturbable` names the knobs
    population-based training (--scheduler pbt) may change mid-run, within the ranges `define` gives them
    (a subset of trainables.config.PERTURBABLE_KNOBS)."""

    name: str
    description: str
    define: DefineByRun
    dataset: str
    num_samples: int
    max_epochs: int
    grid: Grid | None = None
    gpus_per_trial: float = 0.0  # default on a GPU cluster; 0 runs on CPUs
    scheduler: SchedulerSettings = SchedulerSettings()  # ASHA's defaults for this space (--scheduler asha)
    knobs: tuple[Knob, ...] = ()
    origin: str = "built-in"  # the plugin file that registered it
    perturbable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.perturbable) - set(PERTURBABLE_KNOBS))
        if unknown:
            raise ValueError(
                f"space {self.name!r}: perturbable knobs {unknown} are not among {', '.join(PERTURBABLE_KNOBS)}"
            )

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Every knob this space sets for one trial: sampled ones and fixed ones."""
        fixed = self.define(trial) or {}
        return {**trial.params, **fixed}

    def examples(self, n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
        """n configs from a seeded random sampler, plus the grid's cells: what the driver checks
        flags that fix a knob (--input-size, --weights, --patience) and the dataset against before any
        trial starts."""
        return [knobs for knobs, _ in self._asked(n, seed)] + self.cells()

    def largest(self, knob: str, n: int = 64, seed: int = 0) -> Any:
        """The largest value the space can give `knob`: the top of each Optuna distribution it was drawn
        from in n seeded random trials (a categorical's largest choice, a range's `high`, which a random
        draw may miss), the values `define` fixed, and the grid's cells; None if the space never sets it."""
        values: list[Any] = [c[knob] for c in self.cells() if knob in c]
        for knobs, distributions in self._asked(n, seed):
            dist = distributions.get(knob)
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                values += [v for v in dist.choices if v is not None]
            elif dist is not None:
                values.append(dist.high)
            elif knob in knobs:
                values.append(knobs[knob])
        return max(values, default=None)

    def _asked(self, n: int, seed: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(knobs, their Optuna distributions) of n trials of a seeded random sampler."""
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a throwaway study: no "study created" line
        try:
            study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
            # Trials are left open: the study is thrown away.
            return [(self.sample(trial), dict(trial.distributions)) for trial in (study.ask() for _ in range(n))]
        finally:
            optuna.logging.set_verbosity(verbosity)

    def distributions(self, n: int = 64, seed: int = 0) -> dict[str, optuna.distributions.BaseDistribution]:
        """Each knob `define` samples in n seeded random draws, with its Optuna distribution (the first met:
        a space gives one knob one range), e.g. the bounds population-based training keeps a knob in."""
        found: dict[str, optuna.distributions.BaseDistribution] = {}
        for _, distributions in self._asked(n, seed):
            for name, distribution in distributions.items():
                found.setdefault(name, distribution)
        return found

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
