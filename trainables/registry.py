"""Registries of models, datasets and extra knobs: one entry is one file, and the built-in entries
(trainables/models/, trainables/datasets/) register exactly the way a plugin does.

    from trainables.registry import Knob, Model, register_model

    register_model(Model("tiny", build=build_tiny, knobs=("dense_units",)))

Nothing here imports TensorFlow, and neither may an entry's module body: a builder imports Keras
when it is called. So search spaces, the driver and `analysis` read what an entry declares
(its name, the knobs it reads, its defaults) without loading TensorFlow.

Search spaces have their own registry (search_spaces.SPACES, search_spaces.register_space); the
knobs a space declares (SearchSpace.knobs) are registered here, as KNOBS.
"""

from __future__ import annotations

import contextvars
import dataclasses
import importlib
import keyword
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

BUILT_IN = "built-in"
KNOB_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
# The packages whose every public module is a built-in entry; imported on the first lookup.
BUILT_IN_PACKAGES = ("trainables.models", "trainables.datasets")


class RegistryError(ValueError):
    """A bad or duplicate registration: a plugin that makes one exits 2 naming its file and line."""


def coerce(name: str, kind: type, value: Any) -> Any:
    """`value` as exactly `kind` (str, int, float or bool): Optuna and Ray hand over numpy scalars, and
    ints for floats; the Parquet schema wants exact types. A string is never read as a number or a bool,
    and a float that is not whole is never an int (ValueError naming the knob). The one coercion of
    knob values: built-in fields (trainables.config) and declared knobs alike."""
    if kind is bool:
        if isinstance(value, str):
            raise ValueError(f"{name} must be a bool, got {value!r}")
        return bool(value)
    if kind is int:
        if isinstance(value, str) or float(value) != int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, str):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class Knob:
    """A knob a search space adds to the trial config: validated like the built-in ones, a typed column
    of trials.parquet, null in the rows of models that do not read it."""

    name: str
    type: str  # one of KNOB_TYPES: the Python and Parquet type of the value
    default: Any
    models: tuple[str, ...] = ()  # the models that read it; every other model's rows hold null
    choices: tuple[Any, ...] | None = None  # allowed values, if a closed set
    low: float | None = None  # inclusive bounds of a numeric knob
    high: float | None = None
    doc: str = ""
    origin: str = BUILT_IN  # the file that registered it

    def __post_init__(self) -> None:
        kind = self.type.__name__ if isinstance(self.type, type) else self.type
        if kind not in KNOB_TYPES:
            raise RegistryError(f"knob {self.name!r}: unknown type {self.type!r}; use one of {', '.join(KNOB_TYPES)}")
        object.__setattr__(self, "type", kind)
        if not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise RegistryError(f"knob name {self.name!r} is not a Python identifier")
        object.__setattr__(self, "models", tuple(self.models))
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        self.coerce(self.default)  # a default outside the knob's own rules is a bad declaration

    def coerce(self, value: Any) -> Any:
        """`value` as this knob's exact type, checked against choices and bounds (ValueError if not)."""
        value = coerce(self.name, KNOB_TYPES[self.type], value)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"{self.name} must be >= {self.low}, got {value}")
        if self.high is not None and value > self.high:
            raise ValueError(f"{self.name} must be <= {self.high}, got {value}")
        return value

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Model:
    """A network: how to build it from a trial config, and what it reads.

    `build(config, input_shape, num_classes) -> keras.Model` imports Keras itself. `knobs`: the knobs it
    reads besides those every trial reads (config.ALWAYS_READ); `defaults`: its own values for knobs
    whose TrialConfig default is None (bn_position). `input_shape(config, image_shape)`: its input-size
    rule (None: the dataset's images as they are). `preprocess(config) -> batch transform`: a fixed
    input transform that replaces the augmentation policy's normalisation (a pretrained backbone's own
    preprocess_input); None: the policy's. `check(config)`: rules of its own, raising ValueError.

    What input it can take, which the driver checks against the dataset for every model a space can
    sample before any trial starts (`refusal`): `min_input_size`, the smallest side in pixels of what it
    is fed (after `input_shape`), a number or a rule of the config (a ConvNet's depth, kernel and pools
    set it); `channels`, the image channels it takes.
    """

    name: str
    build: Callable[..., Any]
    knobs: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    input_shape: Callable[[Any, tuple[int, ...]], tuple[int, ...]] | None = None
    preprocess: Callable[[Any], Any] | None = None
    check: Callable[[Any], None] | None = None
    min_input_size: int | Callable[[Any], int] = 1
    channels: tuple[int, ...] = (1, 3)
    description: str = ""
    origin: str = BUILT_IN

    def smallest_input(self, config: Any) -> int:
        """The smallest image side (pixels) this model can be fed under `config`."""
        return self.min_input_size(config) if callable(self.min_input_size) else self.min_input_size

    def refusal(self, config: Any, image_shape: tuple[int, ...]) -> str | None:
        """Why this model, under `config`, cannot take a dataset's images of `image_shape` (H, W, C), as a
        phrase ("needs images of at least 16x16 pixels"); None when it can."""
        if image_shape[-1] not in self.channels:
            return f"takes images of {' or '.join(map(str, self.channels))} channels only"
        fed = tuple(image_shape) if self.input_shape is None else self.input_shape(config, tuple(image_shape))
        least = self.smallest_input(config)
        if min(fed[:2]) < least:
            return f"needs images of at least {least}x{least} pixels"
        return None


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset: `load(data_dir, **options) -> trainables.data.ImageDataset` (uint8 images), and the
    shape of its images and its number of classes as loaded by default."""

    name: str
    load: Callable[..., Any]
    image_shape: tuple[int, int, int]
    num_classes: int
    description: str = ""
    origin: str = BUILT_IN


@dataclasses.dataclass(frozen=True)
class TrialCallback:
    """Keras callbacks a plugin adds to every trial's fit: `build(config) -> [keras.callbacks.Callback]`,
    called in the trial's process as the trial starts (Keras imports inside it). They run after the
    trial's own reporter, so an epoch's `on_epoch_end` sees that epoch reported; nothing of the tables
    comes from them. What they are for: a trial's own logging, and the fault tests' injected kills
    (tests/fault_plugin.py)."""

    name: str
    build: Callable[[Any], list[Any]]
    origin: str = BUILT_IN


MODELS: dict[str, Model] = {}
DATASETS: dict[str, Dataset] = {}
CALLBACKS: dict[str, TrialCallback] = {}  # none built in
KNOBS: dict[str, Knob] = {}  # knobs declared by search spaces, beyond TrialConfig's own fields
# TrialConfig's field names: a space may not declare a knob that already exists (set by config.py).
RESERVED_KNOBS: set[str] = set()

_origin: contextvars.ContextVar[str] = contextvars.ContextVar("origin", default=BUILT_IN)
_built_ins_loaded = False


@contextmanager
def registering_from(origin: str) -> Iterator[None]:
    """Entries registered inside this block record `origin` (the plugin file) as where they came from."""
    token = _origin.set(origin)
    try:
        yield
    finally:
        _origin.reset(token)


def current_origin() -> str:
    return _origin.get()


def _stamp(entry: Any) -> Any:
    if entry.origin == BUILT_IN and _origin.get() != BUILT_IN:
        return dataclasses.replace(entry, origin=_origin.get())
    return entry


def _add(table: dict[str, Any], kind: str, entry: Any) -> Any:
    load_built_ins()
    entry = _stamp(entry)
    if entry.name in table:
        raise RegistryError(
            f"{kind} {entry.name!r} is already registered (by {table[entry.name].origin}); pick another name"
        )
    table[entry.name] = entry
    return entry


def register_model(model: Model) -> Model:
    if not model.name.isidentifier():
        raise RegistryError(f"model name {model.name!r} is not an identifier")
    return _add(MODELS, "model", model)


def register_dataset(dataset: Dataset) -> Dataset:
    return _add(DATASETS, "dataset", dataset)


def register_callback(callback: TrialCallback) -> TrialCallback:
    return _add(CALLBACKS, "callback", callback)


def trial_callbacks(config: Any) -> list[Any]:
    """The Keras callbacks every registered TrialCallback builds for the trial of `config`."""
    return [c for entry in CALLBACKS.values() for c in entry.build(config)]


def register_knob(knob: Knob) -> Knob:
    if knob.name in RESERVED_KNOBS:
        raise RegistryError(
            f"knob {knob.name!r} is a built-in knob (a TrialConfig field); declare only new knobs, under another name"
        )
    load_built_ins()
    unknown = [m for m in knob.models if m not in MODELS]
    if unknown:
        raise RegistryError(
            f"knob {knob.name!r} is read by unknown models {unknown}; register the model "
            f"first (known: {', '.join(sorted(MODELS))})"
        )
    return _add(KNOBS, "knob", knob)


def model(name: str) -> Model:
    load_built_ins()
    if name not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name]


def dataset(name: str) -> Dataset:
    load_built_ins()
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {name!r}")
    return DATASETS[name]


def model_names() -> list[str]:
    load_built_ins()
    return sorted(MODELS)


def dataset_names() -> list[str]:
    load_built_ins()
    return sorted(DATASETS)


def load_built_ins() -> None:
    """Import every module of the built-in packages once (each registers its entry). A new built-in
    model is one new file in trainables/models/: nothing lists it."""
    global _built_ins_loaded
    if _built_ins_loaded:
        return
    _built_ins_loaded = True  # first: the entries' own register_* calls land here again
    import pkgutil

    for package_name in BUILT_IN_PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):  # _helpers.py: shared code, no entry
                importlib.import_module(f"{package_name}.{info.name}")


# ---- what an experiment records, so its tables can be rebuilt without the plugin's code -------------


def plugin_declarations() -> dict[str, Any]:
    """The entries plugins registered, as JSON: what experiment.json keeps so `python -m analysis`
    rebuilds the tables (knob columns, nulls) without importing the plugin, TensorFlow or Ray."""
    return {
        "knobs": [k.to_json() for k in KNOBS.values() if k.origin != BUILT_IN],
        "models": {
            m.name: {"knobs": list(m.knobs), "defaults": dict(m.defaults), "origin": m.origin}
            for m in MODELS.values()
            if m.origin != BUILT_IN
        },
        "datasets": {
            d.name: {"image_shape": list(d.image_shape), "num_classes": d.num_classes, "origin": d.origin}
            for d in DATASETS.values()
            if d.origin != BUILT_IN
        },
    }


def declare_recorded(declarations: Mapping[str, Any] | None) -> list[Knob]:
    """Register what `plugin_declarations()` recorded, where not registered already (the plugin itself
    loaded in this process wins); returns the recorded knobs, in their order."""
    load_built_ins()
    declarations = declarations or {}

    def not_loaded(*_: Any, **__: Any) -> Any:
        raise RuntimeError("declared from experiment.json only; load the plugin to build or load this")

    for name, m in (declarations.get("models") or {}).items():
        MODELS.setdefault(
            name,
            Model(
                name,
                build=not_loaded,
                knobs=tuple(m.get("knobs", ())),
                defaults=dict(m.get("defaults", {})),
                origin=m.get("origin", "?"),
            ),
        )
    for name, d in (declarations.get("datasets") or {}).items():
        DATASETS.setdefault(
            name,
            Dataset(
                name,
                load=not_loaded,
                image_shape=tuple(d["image_shape"]),
                num_classes=int(d["num_classes"]),
                origin=d.get("origin", "?"),
            ),
        )
    knobs = []
    for spec in declarations.get("knobs") or []:
        knob = Knob(
            **{
                **spec,
                "models": tuple(spec.get("models", ())),
                "choices": None if spec.get("choices") is None else tuple(spec["choices"]),
            }
        )
        knobs.append(KNOBS.setdefault(knob.name, knob))
    return knobs


def is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
