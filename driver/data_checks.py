"""Checks of the loaded dataset against what every trial will ask of it, run by the driver after loading
it and before Ray starts or anything is written.

A built-in dataset always passes them; a plugin's loader (docs/plugins.md) is where a user's own data
comes in, and without them each of its problems surfaced inside every trial's worker (scikit-learn's
stratified split, Keras' "Computed output size would be zero or negative"), retried --max-failures times
after Ray had started and the experiment was written. Each check raises UsageError with one line that
names the dataset, the problem and the fix; they run cheapest and most basic first (arrays, labels, the
validation split, one batch, then every model the space can sample).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from driver.request import Plan
from experiment.errors import UsageError
from trainables import registry
from trainables.config import TrialConfig
from trainables.data import VALIDATION_FRACTION, ImageDataset, images_for_split, validation_size

CHANNELS = (1, 3)  # grayscale or RGB: what the augmentation policies and the built-in models take
SPLIT = f"stratified {VALIDATION_FRACTION:.0%} validation split"


def check_data(p: Plan, data: ImageDataset, search: str) -> None:
    """Every check of `data` (the dataset `p.dataset`, as loaded) for the space `p.space` searched with
    `search` (a grid runs its cells only)."""
    check_arrays(p.dataset, data)
    check_labels(p.dataset, data, registry.dataset(p.dataset).num_classes)
    check_split(p.dataset, data)
    configs = sampled_configs(p, search)
    largest = [c.batch_size for c in configs]
    if search != "grid":  # a range's top, which 64 random draws may miss
        largest.append(p.space.largest("batch_size") or 0)
    check_batch(p.dataset, data, p.space.name, max(largest))
    check_models(p, data, configs, search)


def sampled_configs(p: Plan, search: str) -> list[TrialConfig]:
    """Configs the search can run: the grid's cells it visits, else 64 seeded random draws of the space
    and its cells (driver.request checked that they make valid configs with the flags' knobs)."""
    knobs = p.space.cells(p.cell_filter) if search == "grid" else p.space.examples()
    return [TrialConfig.from_params({**k, **p.fixed}) for k in knobs]


def check_arrays(name: str, data: ImageDataset) -> None:
    """Images uint8 (N, H, W, C) with C 1 or 3, one shape in both splits; one integer label per image."""
    for field in ("x_train", "x_test"):
        x = getattr(data, field)
        if not isinstance(x, np.ndarray):
            raise UsageError(
                f"dataset {name!r}: {field} is a {type(x).__name__}, not a numpy array; have the loader return "
                "the images as one uint8 array (N, H, W, C) (np.stack them, resized to one size)"
            )
        if x.dtype == object:
            raise UsageError(
                f"dataset {name!r}: {field} is an object array (images of different shapes?); resize every "
                "image to one size in the loader and np.stack them into one uint8 array (N, H, W, C)"
            )
        if x.ndim != 4:
            add_axis = " (grayscale: add the channel axis, x[..., None])" if x.ndim == 3 else ""
            raise UsageError(
                f"dataset {name!r}: {field} has shape {x.shape}; images must be one array (N, H, W, C) "
                f"with C 1 or 3{add_axis}"
            )
        if x.dtype != np.uint8:
            raise UsageError(
                f"dataset {name!r}: {field} holds {x.dtype} pixels; the pipeline takes uint8 (0..255): "
                "convert them in the loader (floats in 0..1: (x * 255).round().astype(np.uint8))"
            )
        if x.shape[-1] not in CHANNELS:
            raise UsageError(
                f"dataset {name!r}: its images have {x.shape[-1]} channels; 1 (grayscale) or 3 (RGB) are "
                "taken: convert them in the loader (RGBA: x[..., :3])"
            )
    if data.x_train.shape[1:] != data.x_test.shape[1:]:
        raise UsageError(
            f"dataset {name!r}: training images are {shape_text(data.x_train.shape[1:])} but test images "
            f"{shape_text(data.x_test.shape[1:])}; resize both splits to one shape in the loader"
        )
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(x):
            raise UsageError(
                f"dataset {name!r}: y_{split} has shape {y.shape} for {len(x)} images in x_{split}; give one "
                "integer class label per image, a 1-D array"
            )


def check_labels(name: str, data: ImageDataset, declared: int) -> None:
    """Labels are integers 0..K-1, K the loaded ImageDataset's num_classes (what the model's output layer
    is built for), which is the entry's num_classes or fewer: a loader may load a subset (a CUB folder of
    fewer species: trainables.cub counts the classes it finds), never more classes than its entry says."""
    k = data.num_classes
    if k > declared:
        raise UsageError(
            f"dataset {name!r}: its loader's ImageDataset says num_classes={k} but its entry "
            f"(register_dataset) says {declared}; make the two agree"
        )
    for split, y in (("train", np.asarray(data.y_train)), ("test", np.asarray(data.y_test))):
        if y.dtype.kind not in "iu":
            raise UsageError(
                f"dataset {name!r}: y_{split} holds {y.dtype} labels; class labels are integers 0..{k - 1}: "
                "convert them in the loader (y.astype(np.int32))"
            )
        outside = np.unique(y[(y < 0) | (y >= k)])
        if outside.size:
            shown = ", ".join(str(v) for v in outside[:5]) + (", ..." if outside.size > 5 else "")
            more = f", or register the dataset with num_classes={int(y.max()) + 1}" if outside.min() >= 0 else ""
            raise UsageError(
                f"dataset {name!r}: y_{split} holds labels outside 0..{k - 1} ({shown}); labels are 0..K-1 "
                f"with K its num_classes={k}: renumber the classes 0..{k - 1} in the loader{more}"
            )


def check_split(name: str, data: ImageDataset) -> None:
    """The stratified validation split can be made: 2 training images of every class at least, and
    enough images that each side of the split holds one of every class (scikit-learn's conditions)."""
    k = data.num_classes
    counts = np.bincount(np.asarray(data.y_train), minlength=k)
    few = np.flatnonzero(counts < 2)
    if few.size:
        c = int(few[0])
        them = "that class" if few.size == 1 else "those classes"
        others = f" (classes with fewer than 2: {', '.join(map(str, few[:10]))}{', ...' if few.size > 10 else ''})"
        raise UsageError(
            f"dataset {name!r}: class {c} has {counts[c]} training image{'' if counts[c] == 1 else 's'}"
            f"{others if few.size > 1 else ''}; the {SPLIT} needs at least 2 training images of every class: "
            f"add images of {them}, or leave {'it' if few.size == 1 else 'them'} out and renumber the labels 0..K-1"
        )
    n, need = len(data.y_train), images_for_split(k)
    if n < need:
        raise UsageError(
            f"dataset {name!r}: its {n} training images give a {SPLIT} of {validation_size(n)}, fewer than "
            f"its {k} classes; the split needs at least {need} training images for {k} classes: add images, "
            "or use fewer classes"
        )


def check_batch(name: str, data: ImageDataset, space: str, batch_size: int) -> None:
    """The training part of the split holds one batch of the largest batch_size the space can sample."""
    n = len(data.y_train)
    train = n - validation_size(n)
    if train < batch_size:
        raise UsageError(
            f"dataset {name!r}: its training split holds {train} images after the {SPLIT}, fewer than one "
            f"batch of {batch_size}, the largest batch_size space {space!r} can sample: add images, or let the "
            f"space sample batch_size <= {train}"
        )


def check_models(p: Plan, data: ImageDataset, configs: Sequence[TrialConfig], search: str) -> None:
    """Every model the space can sample takes the dataset's images (registry.Model.refusal)."""
    shape = data.image_shape
    refused: dict[str, list[TrialConfig]] = {}
    taken: list[TrialConfig] = []
    for config in configs:
        if registry.model(config.model).refusal(config, shape):
            refused.setdefault(config.model, []).append(config)
        else:
            taken.append(config)
    if not refused:
        return
    model = min(refused)
    cases = refused[model]
    entry = registry.model(model)
    why = entry.refusal(cases[0], shape)
    fix = image_fix(entry, cases[0], shape)
    images = f"{shape_text(shape)} images"
    if not taken:
        others = sorted(set(refused) - {model})
        also = f" (nor can {', '.join(others)})" if others else ""
        raise UsageError(
            f"dataset {p.dataset!r} has {images}, which model {model!r} of space {p.space.name!r} cannot take: "
            f"it {why}{also}; the space samples no model that takes them: {fix}, or use a space whose models "
            f"take {images}"
        )
    knob, value = knob_to_drop(model, cases, [c for c in taken if c.model == model])
    cells = ""
    if search == "grid" and all(knob in cell for cell in p.space.cells(p.cell_filter)):
        other = next((c.to_dict()[knob] for c in taken if c.to_dict()[knob] != value), None)
        cells = "" if other is None else f", or run only cells that take them (--cells {knob}={other})"
    which = f"model {model!r}" + ("" if knob == "model" else f" with {knob}={value!r}")
    raise UsageError(
        f"space {p.space.name!r} can sample {which}, which cannot take the {images} of dataset {p.dataset!r}: "
        f"it {why}; drop {knob}={value!r} from the space (its other configs take them){cells}, or {fix}"
    )


def knob_to_drop(model: str, refused: Sequence[TrialConfig], taken: Sequence[TrialConfig]) -> tuple[str, Any]:
    """(knob, value) that only refused configs of `model` have: the model itself when none of its configs
    takes the data, else the first of its knobs whose value never appears in a config that takes it."""
    if not taken:
        return "model", model
    ok = {(k, repr(v)) for c in taken for k, v in c.to_dict().items()}
    for knob in registry.model(model).knobs:
        value = refused[0].to_dict()[knob]
        if (knob, repr(value)) not in ok:
            return knob, value
    return "model", model  # no single knob tells them apart: the model is what to drop


def image_fix(entry: registry.Model, config: TrialConfig, shape: tuple[int, ...]) -> str:
    """What the loader can do so that `entry` takes the images."""
    if shape[-1] not in entry.channels:
        rgb = " (grayscale to RGB: np.repeat(x, 3, axis=-1))" if entry.channels == (3,) else ""
        return f"convert the images to {' or '.join(map(str, entry.channels))} channels in the loader{rgb}"
    least = entry.smallest_input(config)
    return f"upsample the images to at least {least}x{least} in the loader"


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)
