"""The result tables (docs/design.md, "The tables"): built from an experiment folder alone, written atomically.

Everything here reads what trials reported (Ray Tune's per-trial `result.json`,
`params.json`, `error.txt`) and the driver's `experiment.json`, so the tables
can be rebuilt at any time, from a local folder or a bucket, without Ray or
TensorFlow. Each reported epoch is one row, however often it was reported: a trial retried or resumed
from a checkpoint trains and reports again the epochs after it (the later report wins, see _epochs_of),
and a trial's status, `epochs_completed` and test accuracy follow the last epoch it reached.

Knobs a plugin's search space declared become typed columns after the built-in ones; experiment.json
records their declarations (`plugin_declarations`), so the tables are rebuilt without the plugin's code.
"""

from __future__ import annotations

import fnmatch
import json
import math
import posixpath
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from experiment import storage
from trainables import registry
from trainables.config import PERTURBABLE_KNOBS, WARM_START, TrialConfig, knob_types

# 2: knobs a trial did not read are null (were their defaults); summary.parquet gained `question`;
#    trials.parquet gained the cost columns (param_count ... inference_device).
# 3: trials.parquet gained `warm_start`; epochs.parquet the knob values in force (`set_learning_rate`, ...).
SCHEMA_VERSION = "3"
PHASES = ("search", "confirm")  # sub-folders of the experiment, one Ray Tune run each
# A phase run again later (a search extended with --resume --num-samples, a confirmation given afresh) is a
# Ray Tune run of its own in `<phase>-2`, `<phase>-3`, ...: Tune keeps one experiment state per folder, and
# each run's trials stay where Tune put them. Its trials belong to the phase.
RUN_SEPARATOR = "-"
STATUSES = ("completed", "stopped", "error")

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
_TS = pa.timestamp("us", tz="UTC")

# (column, type, meaning). Knob columns (TrialConfig fields) sit between `status` and `epochs_completed`.
TRIAL_HEAD = [
    ("experiment", pa.string(), "experiment name (--name)"),
    ("space", pa.string(), "search space (--space)"),
    ("phase", pa.string(), "'search', or 'confirm' for re-runs of the best configurations"),
    ("trial_id", pa.string(), "Ray Tune trial id, unique within the experiment"),
    ("status", pa.string(), "'completed' (full budget), 'stopped' (ASHA or patience), 'error'"),
]
TRIAL_TAIL = [
    (
        WARM_START,
        pa.string(),
        "'<experiment>/<trial id>' whose configuration --warm-start queued as this trial; null otherwise",
    ),
    ("epochs_completed", pa.int64(), "last epoch the trial reached (each epoch counts once, however often reported)"),
    ("stopped_early", pa.bool_(), "ended before max_epochs without error"),
    ("best_val_accuracy", pa.float64(), "best validation accuracy over epochs"),
    ("val_accuracy", pa.float64(), "validation accuracy of the last epoch"),
    ("val_loss", pa.float64(), "validation loss of the last epoch"),
    ("test_accuracy", pa.float64(), "test accuracy at full budget; null otherwise"),
    ("train_time_s", pa.float64(), "seconds of training, all epochs"),
    ("param_count", pa.int64(), "weights of the model, trainable or not (keras count_params)"),
    (
        "macs_per_image",
        pa.int64(),
        "multiply-accumulates to classify one image: convs, dense, normalisation, "
        "average pooling (trainables.cost); null if a layer has no rule",
    ),
    (
        "inference_s_per_image_b1",
        pa.float64(),
        "seconds per image, predicting one image per call, on the "
        "trial's device (fastest of a few calls after a warm-up)",
    ),
    (
        "inference_s_per_image_large",
        pa.float64(),
        "seconds per image, predicting inference_large_batch images per call, on the trial's device",
    ),
    (
        "inference_large_batch",
        pa.int64(),
        "images per call of the large-batch timing (256 on a GPU, 32 on "
        "a CPU; halved while the device ran out of memory)",
    ),
    ("inference_device", pa.string(), "where the timings ran: 'GPU: <name>' or 'CPU: <model>'"),
    ("node", pa.string(), "host:ray-node-id the trial last ran on"),
    ("gpus", pa.float64(), "GPUs (or share of one) the trial held"),
    ("started_at", _TS, "first epoch started (UTC)"),
    ("ended_at", _TS, "last epoch reported (UTC)"),
    ("error", pa.string(), "null, or why the trial failed"),
    ("git_sha", pa.string(), "code version of the driver"),
    ("tensorflow_version", pa.string(), ""),
    ("keras_version", pa.string(), ""),
    ("ray_version", pa.string(), ""),
    ("optuna_version", pa.string(), ""),
]
EPOCH_COLUMNS = [
    ("trial_id", pa.string(), "Ray Tune trial id"),
    ("epoch", pa.int64(), "1-based epoch"),
    ("loss", pa.float64(), "training loss"),
    ("accuracy", pa.float64(), "training accuracy"),
    ("val_loss", pa.float64(), "validation loss"),
    ("val_accuracy", pa.float64(), "validation accuracy"),
    ("learning_rate", pa.float64(), "optimizer learning rate at the epoch's end"),
    ("epoch_time_s", pa.float64(), "seconds the epoch took, validation included"),
    *(
        (
            f"set_{knob}",
            pa.float64(),
            f"the {knob} knob in force during the epoch (--scheduler pbt changes it mid-run); null where the "
            "trial does not read it",
        )
        for knob in PERTURBABLE_KNOBS
    ),
]


def _schema(columns: list[tuple[str, pa.DataType, str]], table: str) -> pa.Schema:
    fields = [pa.field(n, t, metadata={"doc": d} if d else None) for n, t, d in columns]
    return pa.schema(fields, metadata={"schema_version": SCHEMA_VERSION, "table": table})


def knob_columns(declared: list[registry.Knob] | None = None) -> list[tuple[str, pa.DataType, str]]:
    """The built-in knobs (TrialConfig fields), then `declared` knobs (default: every registered one)."""
    columns = [(name, _ARROW[kind], "knob (TrialConfig field)") for name, kind in knob_types(declared=False).items()]
    knobs = list(registry.KNOBS.values()) if declared is None else declared
    columns += [
        (
            k.name,
            _ARROW[registry.KNOB_TYPES[k.type]],
            f"knob declared by {posixpath.basename(k.origin)}" + (f": {k.doc}" if k.doc else ""),
        )
        for k in knobs
    ]
    return columns


def trials_schema(declared: list[registry.Knob] | None = None) -> pa.Schema:
    """trials.parquet's schema: TRIALS_SCHEMA plus a column per declared knob."""
    return _schema(TRIAL_HEAD + knob_columns(declared or []) + TRIAL_TAIL, "trials")


TRIALS_SCHEMA = trials_schema()  # an experiment without plugin knobs
EPOCHS_SCHEMA = _schema(EPOCH_COLUMNS, "epochs")


def read_trial_dir(fs: pafs.FileSystem, trial_dir: str) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """(params, reported rows, Ray's error text) of one trial folder."""
    params: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    error = None
    if storage.exists(fs, storage.join(trial_dir, "params.json")):
        params = storage.read_json(fs, storage.join(trial_dir, "params.json"))
    if storage.exists(fs, storage.join(trial_dir, "result.json")):
        for line in storage.read_text(fs, storage.join(trial_dir, "result.json")).splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed writer: that epoch's report is replayed later
    if storage.exists(fs, storage.join(trial_dir, "error.txt")):
        text = storage.read_text(fs, storage.join(trial_dir, "error.txt")).strip()
        error = _last_line(text) or "trial failed"
    return params, rows, error


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _epochs_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch, in epoch order. An epoch reported twice (result.json is in report order) keeps
    its later report: a trial re-reports an epoch only after restoring an earlier checkpoint (its worker
    died between the report and the checkpoint's registration, or a resumed driver restored what its
    last snapshot named), and the epochs after it were trained from the later report's weights, so the
    later one belongs to the curve the trial went on with, and the first was trained from weights that
    were thrown away."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for row in rows:
        if "epoch" in row:
            by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value  # NaN stays NaN: a diverged epoch is data, not a missing value


# Defaults that changed since experiments first recorded their config version (experiment.json
# `config_version`; absent = 1). A trial's params.json holds only the knobs its space set, so a knob it
# left out took the default of the code that ran it: rebuilding the tables must use that default.
CONFIG_VERSION = 2
LEGACY_DEFAULTS: dict[int, dict[str, dict[str, Any]]] = {
    1: {"convnet": {"bn_position": "none"}},  # version 2: the ConvNet's default became BN after ReLU
}


def legacy_params(meta: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """params completed with the defaults of the config version that wrote them."""
    version = int(meta.get("config_version", 1))
    model = params.get("model", "convnet")
    filled = dict(params)
    for old, defaults in LEGACY_DEFAULTS.items():
        if version <= old:
            for knob, value in defaults.get(model, {}).items():
                filled.setdefault(knob, value)
    return filled


def config_row(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's knob columns: its config's row (null where the trial does not read a knob). A config
    that does not validate (its trial ended with a `bad config` error, trainables.failures) is still a
    row: each knob as given where it has the column's type, null where not."""
    try:
        return TrialConfig.from_params(params).to_row()
    except (ValueError, TypeError):
        types, row = knob_types(), {}
        for name, value in params.items():
            if name in types and not registry.is_null(value):
                try:
                    row[name] = registry.coerce(name, types[name], value)
                except (ValueError, TypeError):
                    row[name] = None
        return row


def trial_record(
    meta: dict[str, Any],
    phase: str,
    trial_dir: str,
    params: dict[str, Any],
    rows: list[dict[str, Any]],
    ray_error: str | None,
    tune_status: str | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trial's row and epoch rows. `ray_error` is the last failure Ray recorded (error.txt); it
    is the trial's error unless Tune's record says the trial ended well (`tune_status` TERMINATED):
    then the failure was retried from a checkpoint and the trial went on (a killed worker)."""
    epochs = _epochs_of(rows)
    if tune_status == "TERMINATED":
        ray_error = None
    config = config_row(legacy_params(meta, params)) if params else {}
    trial_id = next((r["trial_id"] for r in rows if "trial_id" in r), posixpath.basename(trial_dir))
    last = epochs[-1] if epochs else {}
    max_epochs = config.get("max_epochs", meta.get("max_epochs"))
    reported_error = next((r["error"] for r in reversed(rows) if r.get("error")), None)
    # The last epoch reached, not a count of rows: a row lost before issue 24's fix (or a line cut short)
    # must not turn a trial that trained its full budget into a `stopped` one without its test accuracy.
    done = int(last["epoch"]) if last else 0
    if reported_error:
        status, error = "error", reported_error
    elif max_epochs is not None and done >= max_epochs:
        status, error = "completed", None
    elif ray_error:
        status, error = "error", ray_error
    elif done == 0:
        status, error = "error", "trial reported no epoch"
    else:
        status, error = "stopped", None
    val_accs = [
        r["val_accuracy"] for r in epochs if r.get("val_accuracy") is not None and math.isfinite(r["val_accuracy"])
    ]
    first = epochs[0] if epochs else {}
    versions = meta.get("versions", {})
    record: dict[str, Any] = {
        "experiment": meta.get("experiment"),
        "space": meta.get("space"),
        "phase": phase,
        "trial_id": trial_id,
        "status": status,
        **config,
        WARM_START: params.get(WARM_START),
        "epochs_completed": done,
        "stopped_early": status == "stopped",
        "best_val_accuracy": max(val_accs) if val_accs else None,
        "val_accuracy": _num(last.get("val_accuracy")),
        "val_loss": _num(last.get("val_loss")),
        "test_accuracy": _num(last.get("test_accuracy")) if status == "completed" else None,
        "train_time_s": _num(last.get("time_total_s")),
        **_cost_of(rows),
        "node": last.get("node") or last.get("hostname"),
        "gpus": _num(last.get("gpus", meta.get("gpus_per_trial"))),
        "started_at": _ts(first["timestamp"] - first.get("time_this_iter_s", 0.0)) if first else None,
        "ended_at": _ts(last.get("timestamp")),
        "error": error,
        "git_sha": meta.get("git_sha"),
        "tensorflow_version": versions.get("tensorflow"),
        "keras_version": versions.get("keras"),
        "ray_version": versions.get("ray"),
        "optuna_version": versions.get("optuna"),
    }
    epoch_rows = [
        {
            "trial_id": trial_id,
            "epoch": int(r["epoch"]),
            **{
                k: _num(r.get(k))
                for k in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "epoch_time_s")
            },
            **knobs_in_force(r, config),
        }
        for r in epochs
    ]
    return record, epoch_rows


def knobs_in_force(row: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The perturbable knobs during an epoch: the config Tune reported with it (population-based training
    changes it mid-run), else the trial's own; null where the trial does not read the knob."""
    reported: dict[str, Any] = row["config"] if isinstance(row.get("config"), dict) else {}
    return {f"set_{k}": None if config.get(k) is None else _num(reported.get(k, config[k])) for k in PERTURBABLE_KNOBS}


COST_FIELDS = (
    "param_count",
    "macs_per_image",
    "inference_s_per_image_b1",
    "inference_s_per_image_large",
    "inference_large_batch",
    "inference_device",
)


def _cost_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The cost columns from the last report that carries them (a restored trial measures again)."""
    last: dict[str, Any] = next((r for r in reversed(rows) if "param_count" in r), {})
    return {k: last.get(k) for k in COST_FIELDS}


# Ray Tune's snapshot of a run (trial states, the searcher's): the name carries the start time of the
# run (or of its resume) in a sortable format; the newest sorts last, as Tune itself picks it.
TUNE_STATE_GLOB = "experiment_state-*.json"


def tune_records(fs: pafs.FileSystem, phase_dir: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """{trial folder name: (Tune's status, the trial's config)} from the run's newest experiment-state
    snapshot (status 'TERMINATED', 'ERROR', 'RUNNING', ...); empty when there is none or it cannot be
    read. A snapshot lags the run by seconds, so a trial it does not name, or names as still running,
    is judged from its own files."""
    if not storage.exists(fs, phase_dir):
        return {}
    infos = fs.get_file_info(pafs.FileSelector(phase_dir, recursive=False))
    names = sorted(i.path for i in infos if fnmatch.fnmatch(posixpath.basename(i.path), TUNE_STATE_GLOB))
    if not names:
        return {}
    try:
        state = storage.read_json(fs, names[-1])
        trials = [json.loads(trial_json) for trial_json, _ in state.get("trial_data", [])]
        # Tune's own trial folder (our trial_dirname_creator names it by trial id).
        return {
            posixpath.basename(t.get("relative_logdir") or t["trial_id"]): (
                t["status"],
                t["config"] if isinstance(t.get("config"), dict) else {},
            )
            for t in trials
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # a snapshot of another Tune version, or cut short: judge from the trial files alone


def is_trial_dir(fs: pafs.FileSystem, path: str) -> bool:
    """A trial's folder: its params.json, or only the error.txt of a trial Tune failed before it ran
    (a worker that could not be reused), which must still be a row of the table, not lost."""
    return storage.exists(fs, storage.join(path, "params.json")) or storage.exists(fs, storage.join(path, "error.txt"))


def _knobs_only(config: dict[str, Any]) -> dict[str, Any]:
    """The knobs of a config Tune recorded (it adds keys of its own, such as trial info)."""
    known = set(knob_types())
    return {k: v for k, v in config.items() if k in known}


def build_tables(experiment: str | Path) -> tuple[pa.Table, pa.Table]:
    """(trials, epochs) of an experiment folder, local path or URI."""
    fs, root = storage.resolve(experiment)
    meta_path = storage.join(root, storage.EXPERIMENT_FILE)
    if not storage.exists(fs, meta_path):
        raise FileNotFoundError(f"{experiment} is not an experiment folder (no {storage.EXPERIMENT_FILE})")
    meta = storage.read_json(fs, meta_path)
    declared = registry.declare_recorded(meta.get("plugin_declarations"))
    trials: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    for phase, run in ((p, r) for p in PHASES for r in phase_runs(fs, root, p)):
        records = tune_records(fs, storage.join(root, run))
        for trial_dir in storage.list_dirs(fs, storage.join(root, run)):
            if not is_trial_dir(fs, trial_dir):
                continue
            params, reported, ray_error = read_trial_dir(fs, trial_dir)
            status, tune_config = records.get(posixpath.basename(trial_dir), (None, {}))
            params = params or _knobs_only(tune_config)  # a trial failed before it wrote params.json
            record, rows = trial_record(meta, phase, trial_dir, params, reported, ray_error, status)
            trials.append(record)
            epochs.extend(rows)
    trials.sort(key=lambda r: (PHASES.index(r["phase"]), r["trial_id"]))
    return (
        pa.Table.from_pylist(trials, schema=trials_schema(declared)),
        pa.Table.from_pylist(epochs, schema=EPOCHS_SCHEMA),
    )


def run_name(phase: str, number: int) -> str:
    """The folder of a phase's `number`-th Ray Tune run (1: the phase's own name)."""
    return phase if number == 1 else f"{phase}{RUN_SEPARATOR}{number}"


def phase_of(run: str) -> str:
    """The phase a run folder belongs to ("search-2" -> "search")."""
    return next((p for p in PHASES if run == p or run.startswith(p + RUN_SEPARATOR)), run)


def phase_runs(fs: pafs.FileSystem, root: str, phase: str) -> list[str]:
    """The folder names of a phase's Ray Tune runs that exist, in the order they ran."""
    names = {posixpath.basename(d) for d in storage.list_dirs(fs, root)}
    numbered = [(1, phase)] if phase in names else []
    prefix = phase + RUN_SEPARATOR
    numbered += [(int(n[len(prefix) :]), n) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()]
    return [name for _, name in sorted(numbered)]


def write_table(table: pa.Table, fs: pafs.FileSystem, path: str) -> None:
    """Temp file, then rename (experiment.storage.replaced_atomically): a crash mid-write leaves the
    previous table intact."""
    with storage.replaced_atomically(fs, path) as tmp:
        pq.write_table(table, tmp, filesystem=fs)


def export_tables(experiment: str | Path) -> tuple[str, pa.Table, pa.Table]:
    """Build and write `tables/trials.parquet` and `tables/epochs.parquet`; return the folder."""
    trials, epochs = build_tables(experiment)
    fs, root = storage.resolve(experiment)
    folder = storage.join(root, "tables")
    write_table(trials, fs, storage.join(folder, "trials.parquet"))
    write_table(epochs, fs, storage.join(folder, "epochs.parquet"))
    return folder, trials, epochs


def read_table(experiment: str | Path, name: str) -> pd.DataFrame:
    """A table of an experiment as a DataFrame (local path or URI)."""
    fs, root = storage.resolve(experiment)
    return pq.read_table(storage.join(root, "tables", f"{name}.parquet"), filesystem=fs).to_pandas()
