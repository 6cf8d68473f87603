#!/usr/bin/env python
"""Private memory a trial's pipelines add over the shared dataset: the gather inside TensorFlow (issue 22)
against the NumPy gather it replaced, and against a plain tensor copy of the dataset, side by side.

    .venv/bin/python benchmarks/pipeline_memory.py            # CIFAR-100 0..24 (or digits)
    .venv/bin/python benchmarks/pipeline_memory.py --quick    # digits

Each variant runs in a fresh process that holds the dataset as a trial does, read-only and shared: the
uint8 arrays memory-mapped from .npy files (the page cache, shared by every process, like Ray's object
store; 64-byte aligned like it). It builds the trial's three pipelines (training with the policy's
random transform, validation, test) and fits BaseNet for `--steps` batches with validation, then reports
the growth of its resident *anonymous* memory (RssAnon: what a private copy of the dataset would add;
the mapped dataset pages are file-backed and shared, not counted). The same fit with the same model runs
in every variant, so the differences between variants are what the pipelines hold. Target (issue 7,
kept by issue 22): the data-attributable memory of a trial well under half the dataset's size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

NAME = "pipeline_memory"
VARIANTS = ("tf_gather", "numpy_gather", "tensor_copy")
MB = 2**20

WORKER = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[5])
from trainables.runtime import configure_tensorflow
configure_tensorflow(1)
import keras, tensorflow as tf
from trainables import augment
from trainables.architectures import build_model, build_optimizer
from trainables.config import TrialConfig
from trainables.data import ImageDataset, validation_split
from trainables.pipeline import make_dataset
from input_pipeline import numpy_gather_dataset

def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

variant, folder, policy, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
arrays = {k: np.load(f"{folder}/{k}.npy", mmap_mode="r") for k in ("x_train", "y_train", "x_test", "y_test")}
data = ImageDataset("bench", arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                    int(arrays["y_train"].max()) + 1)
config = TrialConfig(model="basenet", dataset="digits", augmentation=policy, batch_size=32)
train_idx, val_idx = validation_split(np.asarray(data.y_train), config.seed)
inputs = augment.policy_inputs(config, data, train_idx, cache_dir=folder + "/cache")
keras.utils.set_random_seed(0)
model = build_model(config, data.image_shape, data.num_classes)
model.compile(optimizer=build_optimizer(config), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
warm = tf.data.Dataset.from_tensor_slices((np.zeros((64, *data.image_shape), np.float32), np.zeros(64, np.int32)))
model.fit(warm.batch(32), epochs=1, verbose=0)  # Keras' and TensorFlow's own start-up, outside the figure
before = anon_mb()
x_train, x_test = inputs.x_train, inputs.x_test
if variant == "tensor_copy":  # what converting the dataset to a tensor would hold: a private copy
    held = [tf.constant(np.asarray(x_train)), tf.constant(np.asarray(x_test))]
def pipeline(x, y, idx, transform, seed):
    if variant == "numpy_gather":
        return numpy_gather_dataset(x, np.asarray(y), idx, 32, transform, seed or 0)
    return make_dataset(x, np.asarray(y), idx, 32, transform, seed)
train = pipeline(x_train, data.y_train, train_idx, inputs.train_transform, 0)
val = pipeline(x_train, data.y_train, val_idx, inputs.eval_transform, None)
test = pipeline(x_test, data.y_test, np.arange(len(data.y_test)), inputs.eval_transform, None)
model.fit(train, validation_data=val, epochs=1, steps_per_epoch=steps, validation_steps=5, verbose=0)
model.evaluate(test, steps=5, verbose=0)
print(json.dumps({"added_private_mb": anon_mb() - before}))
"""


def run_variant(variant: str, folder: Path, policy: str, steps: int) -> float:
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, variant, str(folder), policy, str(steps), str(Path(__file__).parent)],
        cwd=_common.PROJECT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(_common.PROJECT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{variant} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["added_private_mb"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="digits (a smoke run)")
    p.add_argument("--policies", nargs="+", default=["simple", "complex"])
    p.add_argument("--steps", type=int, default=40, help="training batches fitted per variant")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    dataset, data_dir = _common.pick_dataset(args.quick)
    data = _common.load(dataset, data_dir)
    info = _common.machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pipeline-memory-") as tmp:
        folder = Path(tmp)
        for key in ("x_train", "y_train", "x_test", "y_test"):
            np.save(folder / f"{key}.npy", getattr(data, key))  # a 128-byte header: the data 64-byte aligned
        for policy in args.policies:
            for variant in VARIANTS:
                rows.append(
                    {
                        "dataset": dataset,
                        "dataset_mb": round(data.nbytes / MB, 1),
                        "policy": policy,
                        "variant": variant,
                        "added_private_mb": round(run_variant(variant, folder, policy, args.steps), 1),
                    }
                )
    frame = pd.DataFrame(rows)
    for key in ("loadavg_1m", "cpus", "date_utc"):
        frame[key] = info[key]
    _common.emit(NAME, frame, args.out, "private memory a trial's pipelines add over the shared dataset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
