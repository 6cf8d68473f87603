"""The request: what the user asked for, as one frozen, typed object, and every check of it.

`Request` holds one field per flag of run_search.py, with the defaults (written here only: the parser
leaves an untyped flag out, so `Request(**given)` fills it); driver.resume merges a stored one with
the flags a --resume gives. `plan(request)` runs every usage check that needs no Ray and no data, cheapest
first, and resolves what the request means for its space: a `Plan`. Nothing here starts Ray or writes
under --storage-path: a request refused here leaves no trace.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from driver.storage_checks import check_s3_endpoint, check_storage_writable
from experiment.errors import UsageError
from search_spaces import SPACES, SearchSpace
from trainables import plugins, registry
from trainables.config import TrialConfig, knob_types
from tuning import METRIC, MODE

# Metrics --objective may name, with their direction when the flag gives none. The first objective is
# validation accuracy (ASHA, the confirmation stage and the report rank trials by it); the others are the
# cost columns every report carries (trainables.cost), in their units: weights, MACs, seconds per image.
OBJECTIVE_METRICS = {
    "val_accuracy": "max",
    "param_count": "min",
    "macs_per_image": "min",
    "inference_s_per_image_b1": "min",
    "inference_s_per_image_large": "min",
}
# Flags that fix a knob only some models read: refused for a space none of whose models reads it.
MODEL_KNOB_FLAGS = {"weights": "--weights", "input_size": "--input-size"}
SCHEDULER_FLAGS = ("grace_period", "reduction_factor", "brackets", "stop_on")


@dataclasses.dataclass(frozen=True)
class Request:
    """One field per flag (run_search.py --help says what each means)."""

    space: str | None = None
    plugin: tuple[str, ...] = ()
    dataset: str | None = None
    data_dir: str | None = None
    num_samples: int | None = None  # None: the space's own
    max_epochs: int | None = None  # None: the space's own
    scheduler: str = "asha"
    grace_period: int | None = None  # ASHA's settings; None: the space's own
    reduction_factor: int | None = None
    brackets: int | None = None
    stop_on: str | None = None
    perturbation_interval: int | None = None  # epochs; PBT's; None: a quarter of the budget
    search: str = "optuna"
    objective: str = f"{METRIC}:{MODE}"
    optuna_storage: str | None = None
    seed: int = 0
    repeats: int | str = 0  # seeds per cell or config; "auto": a race (analysis.sequential)
    min_repeats: int | None = None  # a race's bounds; None: analysis.sequential's defaults
    max_repeats: int | None = None
    resolution: float | None = None  # accuracy points within which a difference counts as none
    cells: tuple[str, ...] = ()
    warm_start: tuple[str, ...] = ()  # experiments whose best configs the searcher evaluates first
    warm_start_top: int = 3  # how many of each one's best configs
    confirm_top: int = 0
    patience: int = 0  # epochs
    weights: str | None = None
    input_size: int | None = None  # pixels
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | None = None  # None: the space's own on a GPU cluster, else 0
    max_concurrent: int | None = None
    address: str | None = None
    storage_path: str = "./results"
    s3_endpoint: str | None = None
    name: str | None = None
    resume: bool = False
    max_failures: int = 2
    checkpoint_every: int = 1  # epochs
    keep_checkpoints: int | None = None  # 0 keeps all; None: 2, or all under --scheduler pbt (checkpoints_kept)
    fresh_workers: bool = False
    worker_memory_growth: float = 10.0  # % (tuning.tune_settings.WORKER_MEMORY_GROWTH); 0: never
    mlflow_uri: str | None = None  # None: nothing is logged to MLflow
    verbose: int = 0
    quiet: int = 0

    def __post_init__(self) -> None:
        # Lists from the parser or a stored experiment.json become tuples: the request is hashable and frozen.
        object.__setattr__(self, "plugin", tuple(self.plugin or ()))
        object.__setattr__(self, "cells", tuple(self.cells or ()))
        object.__setattr__(self, "warm_start", tuple(self.warm_start or ()))

    @classmethod
    def from_flags(cls, given: Mapping[str, Any]) -> Request:
        """The request of the flags typed (`given`: flag destination -> value); unknown keys fail."""
        unknown = sorted(set(given) - set(FIELDS))
        if unknown:
            raise UsageError(f"unknown settings {unknown}; known: {', '.join(FIELDS)}")
        return cls(**given)

    def stored(self) -> dict[str, Any]:
        """What experiment.json keeps for --resume: every setting but --resume itself."""
        return {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items() if k != "resume"
        }

    @property
    def checkpoints_kept(self) -> int:
        """Checkpoints Tune keeps per trial (0: all): --keep-checkpoints, else 2, or all under population-based
        training, whose weak trials restart from a strong trial's checkpoint of a few epochs back, which
        keeping 2 may have deleted by then (Ray's PBT warns of it)."""
        from tuning.tune_settings import CHECKPOINTS_KEPT

        if self.keep_checkpoints is not None:
            return self.keep_checkpoints
        return 0 if self.scheduler == "pbt" else CHECKPOINTS_KEPT

    @property
    def verbosity(self) -> int:
        """Ray Tune's verbose level, 0..3: 1 (a live trial table) by default."""
        return max(0, min(3, 1 + self.verbose - self.quiet))

    def resume_command(self, name: str) -> str:
        import shlex

        cmd = ["python", "run_search.py", "--resume", "--name", name, "--storage-path", self.storage_path]
        if self.address:
            cmd += ["--address", self.address]
        if self.s3_endpoint:  # the bucket is unreachable without it
            cmd += ["--s3-endpoint", self.s3_endpoint]
        return shlex.join(cmd)


FIELDS = tuple(f.name for f in dataclasses.fields(Request))
DEFAULTS = Request()


@dataclasses.dataclass(frozen=True)
class Plan:
    """What a checked request means for its space: the resolved dataset, budget, trial count, ASHA
    settings, objectives and the knobs the flags fix for every trial."""

    space: SearchSpace
    dataset: str
    max_epochs: int
    num_samples: int  # trials of the search phase
    asha: Any  # search_spaces.base.SchedulerSettings
    objectives: tuple[tuple[str, str], ...]  # (metric, min|max), validation accuracy first
    fixed: dict[str, Any]  # knobs every trial gets: dataset, seed, budget, and the flags' own
    cell_filter: dict[str, str]
    race: Any = None  # --repeats auto: the race's design (analysis.sequential.Design), else None


# ---- the checks, cheapest first ---------------------------------------------------------------------


def with_absolute_plugins(request: Request) -> Request:
    """--plugin files as absolute paths: what experiment.json keeps and trials find from any folder."""
    refs = tuple(str(Path(r).expanduser().absolute()) if plugins.is_file_ref(r) else r for r in request.plugin)
    return dataclasses.replace(request, plugin=refs)


def load_plugins(refs: tuple[str, ...]) -> None:
    try:
        plugins.load_plugins(list(refs))
    except plugins.PluginError as e:
        raise UsageError(str(e)) from None


def plan(request: Request) -> Plan:
    """Every check of the request against its space that needs no Ray and no data; its Plan."""
    if not request.space:
        raise UsageError("--space is required (or --resume --name NAME to continue an experiment)")
    load_plugins(request.plugin)
    space = resolve_space(request)
    dataset = resolve_dataset(request, space)
    max_epochs = request.max_epochs or space.max_epochs
    race = race_design(request)
    num_samples = check_search_flags(request, space, dataset, max_epochs, race)
    asha = scheduler_settings(request, space, max_epochs)
    goals = tuple(objectives(request.objective))
    if request.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1 epoch, got {request.checkpoint_every}")
    check_study_flags(request)
    check_pbt(request, space, race)
    check_mlflow(request)
    check_storage_writable(request.storage_path)
    check_s3_endpoint(request.storage_path, request.s3_endpoint)
    fixed = {"dataset": dataset, "seed": request.seed, "max_epochs": max_epochs, **fixed_knobs(request)}
    return Plan(space, dataset, max_epochs, num_samples, asha, goals, fixed, cell_filter(request), race)


def resolve_space(request: Request) -> SearchSpace:
    if request.space not in SPACES:
        raise UsageError(
            f"--space {request.space!r} is unknown; known spaces: {', '.join(sorted(SPACES))}"
            + ("" if request.plugin else " (or one a --plugin FILE registers)")
        )
    for flag in ("num_samples", "max_epochs", "max_concurrent"):
        value = getattr(request, flag)
        if value is not None and value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be a positive integer, got {value}")
    if request.cpus_per_trial <= 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {request.cpus_per_trial}")
    for flag in ("gpus_per_trial", "max_failures", "keep_checkpoints", "worker_memory_growth"):
        value = getattr(request, flag)  # keep_checkpoints 0: every one; worker_memory_growth 0: never
        if value is not None and value < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {value}")
    return SPACES[request.space]


def resolve_dataset(request: Request, space: SearchSpace) -> str:
    name = request.dataset or space.dataset
    if name not in registry.dataset_names():
        raise UsageError(f"--dataset {name!r}: invalid choice; known datasets: {', '.join(registry.dataset_names())}")
    return name


def cell_filter(request: Request) -> dict[str, str]:
    """--cells KNOB=VALUE ... as {knob: value}; a knob that is not a config knob is refused."""
    where: dict[str, str] = {}
    for item in request.cells:
        knob, sep, value = item.partition("=")
        if not sep or knob not in knob_types():
            raise UsageError(f"--cells {item!r}: expected KNOB=VALUE with KNOB one of {', '.join(knob_types())}")
        where[knob] = value
    return where


def fixed_knobs(request: Request) -> dict[str, Any]:
    """Knobs the flags fix for every trial (besides dataset, seed, budget)."""
    knobs: dict[str, Any] = {"patience": request.patience} if request.patience else {}
    for knob in MODEL_KNOB_FLAGS:
        if getattr(request, knob) is not None:
            knobs[knob] = getattr(request, knob)
    return knobs


def check_search_flags(request: Request, space: SearchSpace, dataset: str, max_epochs: int, race: Any = None) -> int:
    """Checks of --search, --repeats, --confirm-top, --cells, --patience, --weights, --input-size against
    the space; returns how many trials the search phase runs. `race`: race_design(request)."""
    if race is not None and request.search == "grid" and request.scheduler != "fifo":
        raise UsageError("--repeats auto races full-budget runs of every cell; add --scheduler fifo (ASHA stops some)")
    for flag in ("repeats", "confirm_top", "patience"):
        if getattr(request, flag) != "auto" and getattr(request, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(request, flag)}")
    if request.confirm_top and not request.repeats:
        raise UsageError(
            "--confirm-top K needs --repeats R (R >= 1): how often each of the K best configs is retrained"
        )
    if request.cells and request.search != "grid":
        raise UsageError("--cells selects cells of a grid; add --search grid or drop --cells")
    if request.repeats and not request.confirm_top and request.search != "grid":
        raise UsageError(
            "--repeats R needs --confirm-top K (retrain the K best configs R times) "
            "or --search grid (run every cell R times)"
        )
    if request.search == "grid":
        check_grid(request, space)
    examples = space.examples()
    knobs = fixed_knobs(request)
    read = {k for e in examples for k in registry.model(e.get("model", TrialConfig.model)).knobs}
    for knob, flag in MODEL_KNOB_FLAGS.items():
        if knob in knobs and knob not in read:
            raise UsageError(
                f"{flag} applies to transfer-learning spaces only (e.g. --space transfer), whose "
                f"models read {knob}; space {space.name!r} trains no backbone; drop {flag}"
            )
    if request.weights is not None:
        from trainables.transfer import WeightsUnavailable, check_weights

        try:
            check_weights(request.weights)
        except WeightsUnavailable as e:
            raise UsageError(str(e)) from None
    for example in examples:  # e.g. --input-size 32 with InceptionResNetV2, which needs 75
        try:
            TrialConfig.from_params({**example, "dataset": dataset, "max_epochs": max_epochs, **knobs})
        except ValueError as e:
            flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in knobs.items()) or "its defaults"
            raise UsageError(f"space {space.name!r} with {flags}: {e}") from None
    if request.search == "grid":
        per_cell = race.max_repeats if race else max(1, int(request.repeats))
        return len(space.cells(cell_filter(request))) * per_cell
    return int(request.num_samples or space.num_samples)


def race_design(request: Request) -> Any:
    """--repeats auto: the race's design (analysis.sequential.Design); None for a fixed --repeats R.
    --min-repeats/--max-repeats apply to a race only; --resolution to any report."""
    from analysis import sequential

    given = [f"--{f.replace('_', '-')}" for f in ("min_repeats", "max_repeats") if getattr(request, f) is not None]
    try:
        sequential.resolution(request.resolution)
        if request.repeats != "auto":
            if given:
                raise ValueError(f"{given[0]} applies to --repeats auto (a race); drop it or add --repeats auto")
            return None
        return sequential.race_design(request.min_repeats, request.max_repeats, request.resolution)
    except ValueError as e:
        raise UsageError(str(e)) from None


def check_grid(request: Request, space: SearchSpace) -> None:
    if not space.cells():
        with_grid = sorted(name for name, s in SPACES.items() if s.cells())
        raise UsageError(
            f"--search grid: space {space.name!r} has no grid; spaces with one: "
            f"{', '.join(with_grid)}; or use --search optuna or random"
        )
    if not space.cells(cell_filter(request)):
        raise UsageError(
            f"--cells {' '.join(request.cells)}: no cell of space {space.name!r} matches; its cells: "
            + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in space.cells())
        )
    if request.num_samples is not None:
        raise UsageError(
            "--num-samples does not apply to --search grid, which runs every cell (--repeats times); drop --num-samples"
        )


def scheduler_settings(request: Request, space: SearchSpace, max_epochs: int) -> Any:
    """ASHA's settings: the space's, with --grace-period/--reduction-factor/--brackets/--stop-on over them."""
    from tuning.schedulers import resolve_settings

    given = {k: getattr(request, k) for k in SCHEDULER_FLAGS}
    if request.scheduler != "asha" and any(v is not None for v in given.values()):
        flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)
        raise UsageError(
            f"{flags} set ASHA's rungs; with --scheduler {request.scheduler} there are none: drop them or use "
            "--scheduler asha"
        )
    try:
        return resolve_settings(space, max_epochs, **given)
    except ValueError as e:
        raise UsageError(f"--scheduler asha: {e.args[0]} (flags --grace-period, --brackets)") from None


def objectives(text: str) -> list[tuple[str, str]]:
    """--objective METRIC[:min|max],... as [(metric, mode), ...]; validation accuracy first."""
    goals = []
    for item in text.split(","):
        name, _, mode = item.strip().partition(":")
        if name not in OBJECTIVE_METRICS:
            raise UsageError(
                f"--objective {text!r}: unknown metric {name!r}; known: {', '.join(OBJECTIVE_METRICS)}, "
                "e.g. --objective val_accuracy,param_count"
            )
        mode = mode or OBJECTIVE_METRICS[name]
        if mode not in ("min", "max"):
            raise UsageError(f"--objective {text!r}: {name}:{mode} must end in :min or :max (or neither)")
        goals.append((name, mode))
    if goals[0] != (METRIC, MODE):
        raise UsageError(
            f"--objective {text!r}: the first objective must be {METRIC}:{MODE} (ASHA, the confirmation stage "
            f"and the report rank trials by it); list costs after it, e.g. --objective {METRIC},param_count"
        )
    if len({n for n, _ in goals}) < len(goals):
        raise UsageError(f"--objective {text!r} names a metric twice; name each once")
    return goals


def check_study_flags(request: Request) -> None:
    if request.optuna_storage and request.search == "grid":
        raise UsageError("--optuna-storage: --search grid asks Optuna nothing; drop --optuna-storage")
    if request.warm_start and request.search == "grid":
        raise UsageError(
            "--warm-start queues configurations for Optuna; --search grid asks it nothing: "
            "use --search optuna or random"
        )
    if request.warm_start_top < 1:
        raise UsageError(f"--warm-start-top must be >= 1 configuration, got {request.warm_start_top}")
    for ref in request.warm_start:
        if ref.rstrip("/").rpartition("/")[2] == request.name:
            raise UsageError(
                f"--warm-start {ref}: that is this experiment (--name {request.name}); name an earlier one"
            )


def check_mlflow(request: Request) -> None:
    """--mlflow-uri needs MLflow's client, an optional dependency: said before anything starts."""
    import importlib.util

    if request.mlflow_uri is not None and importlib.util.find_spec("mlflow") is None:
        raise UsageError(
            f"--mlflow-uri {request.mlflow_uri}: MLflow's client is not installed; pip install -e '.[mlflow]' "
            "(or mlflow-skinny), or drop --mlflow-uri"
        )


def check_pbt(request: Request, space: SearchSpace, race: Any) -> None:
    """What population-based training cannot be combined with, refused with the reason."""
    if request.scheduler != "pbt":
        if request.perturbation_interval is not None:
            raise UsageError("--perturbation-interval applies to --scheduler pbt; drop it or add --scheduler pbt")
        return
    from tuning.schedulers import default_interval, perturbation_bounds

    refusals = (
        (
            request.search == "optuna",
            "--search optuna: Optuna's define-by-run searcher learns a configuration's score, but PBT changes a "
            "trial's knobs mid-run, so the score belongs to no configuration Optuna proposed; use --search random "
            "(a population drawn from the space) or --search grid (its cells)",
        ),
        (
            bool(request.confirm_top),
            "--confirm-top: a PBT trial's result belongs to its schedule of knob values, not to one configuration "
            "that new seeds could retrain; drop --confirm-top",
        ),
        (bool(request.warm_start), "--warm-start: it queues configurations for Optuna, which PBT does without"),
        (race is not None, "--repeats auto: a race runs fixed cells to their budget, which PBT changes"),
        (request.optuna_storage is not None, "--optuna-storage: PBT asks Optuna nothing; drop it"),
    )
    why = next((reason for refused, reason in refusals if refused), None)
    if why:
        raise UsageError(f"--scheduler pbt cannot run with {why}")
    try:
        perturbation_bounds(space)
    except ValueError as e:
        raise UsageError(
            f"--scheduler pbt: {e}; spaces that declare some: "
            + ", ".join(sorted(n for n, s in SPACES.items() if s.perturbable))
        ) from None
    if request.perturbation_interval is not None and request.perturbation_interval < 1:
        raise UsageError(f"--perturbation-interval must be >= 1 epoch, got {request.perturbation_interval}")
    interval = request.perturbation_interval or default_interval(request.max_epochs or space.max_epochs)
    if interval % request.checkpoint_every:
        raise UsageError(
            f"--scheduler pbt perturbs every {interval} epochs from the checkpoint of that epoch, but trials "
            f"checkpoint every {request.checkpoint_every}: make --perturbation-interval a multiple of "
            "--checkpoint-every"
        )
