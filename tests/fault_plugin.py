"""A test-only plugin (`--plugin tests/fault_plugin.py`): faults at the moments of a trial where losing a
process is dangerous, triggered by the trial's own progress, never by a timer, so a test proves the same
thing on a machine twice as fast or twice as loaded.

The plan is a JSON file named by HPO_FAULT_PLAN (the driver's environment reaches its local Ray workers),
written by `write_plan`, e.g. [{"at": "report_done", "epoch": 3}]. Each fault fires once, in the first
trial process to reach its moment: the process claims it by creating `<plan>.fired/<index>.json` with
O_EXCL (atomic across processes: a retried trial, a resumed driver, a concurrent trial do not fire it
again), writes there what it hit, then acts. `fired(plan)` reads those records back.

Moments of epoch k, by what the driver holds when the fault fires:
- trial_start: a trial begins in this process, before its first epoch (a restored trial: before the
  epoch after its checkpoint). With "reused", in a worker that ran another trial before: that trial has
  just ended in the driver (Tune reuses the worker only for a trial it has finished).
- mid_epoch: epoch k has trained its first batch; nothing of it is reported, no checkpoint k exists.
- checkpoint_saved: checkpoint k's files are on the storage (Ray's StorageContext.
  persist_current_checkpoint, inside tune.report); its report has not reached the driver.
- report_received: the driver has logged report k (its result.json line) and asks the worker for the
  checkpoint that came with it (FunctionTrainable.save_checkpoint); checkpoint k is not registered yet.
- report_done: report k and its checkpoint are registered and tune.report has returned; epoch k+1 has
  not begun (for the last epoch: the trial function has not returned).
Conditions: "epoch" (1-based, required except at trial_start), "reused" (true: only in a process that
ran another trial before), "trial" (n: only in the n-th trial of the experiment to start, counted across
processes and resumed drivers by claiming `<plan>.trials/<n>` with O_EXCL). Actions ("do"): kill_worker
(SIGKILL this process, the default), kill_driver (SIGKILL run_search.py, then this worker), oom (raise
TensorFlow's out-of-memory error, mid_epoch only).

The two Ray-internal moments are reached by wrapping those two Ray methods in the trial's process; the
wrappers are installed at the first trial a process runs and act only where a plan says so.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from trainables.registry import TrialCallback, register_callback

PLAN_ENV = "HPO_FAULT_PLAN"
MOMENTS = ("trial_start", "mid_epoch", "checkpoint_saved", "report_received", "report_done")
ACTIONS = ("kill_worker", "kill_driver", "oom")

_trials_here: list[str] = []  # trial ids this process has started, in order
# The trial running here, its number in the experiment (1 = the first to start) and its 1-based epoch.
_current: dict[str, Any] = {"trial_id": None, "number": None, "epoch": None}


# ---- the plan: written by a test, read by trials ----------------------------------------------------


def write_plan(path: Path, faults: list[dict[str, Any]]) -> Path:
    """Check and write a plan; returns `path` (give it to the run as HPO_FAULT_PLAN)."""
    for fault in faults:
        fault.setdefault("do", "kill_worker")
        if fault.get("at") not in MOMENTS or fault["do"] not in ACTIONS:
            raise ValueError(f"bad fault {fault}: 'at' one of {MOMENTS}, 'do' one of {ACTIONS}")
        if fault["at"] != "trial_start" and not isinstance(fault.get("epoch"), int):
            raise ValueError(f"bad fault {fault}: {fault['at']} needs a 1-based 'epoch'")
        if fault["do"] == "oom" and fault["at"] != "mid_epoch":
            raise ValueError(f"bad fault {fault}: oom is raised mid_epoch only (where TensorFlow raises it)")
    path.write_text(json.dumps(faults, indent=1))
    fired_dir(path).mkdir(exist_ok=True)
    trials_dir(path).mkdir(exist_ok=True)
    return path


def fired_dir(plan: Path) -> Path:
    return plan.with_name(plan.name + ".fired")


def trials_dir(plan: Path) -> Path:
    return plan.with_name(plan.name + ".trials")


def fired(plan: Path) -> list[dict[str, Any]]:
    """What each fired fault hit, in the plan's order: index, at, epoch, do, pid, trial_id, trials_here."""
    records = [json.loads(p.read_text()) for p in fired_dir(plan).glob("*.json")]
    return sorted(records, key=lambda r: r["index"])


# ---- in the trial's process ---------------------------------------------------------------------------


def fire(moment: str, epoch: int | None = None) -> None:
    """Act on the first fault of the plan due at this moment that no process has claimed yet."""
    plan = os.environ.get(PLAN_ENV)
    if not plan:
        return
    for index, fault in enumerate(json.loads(Path(plan).read_text())):
        if fault["at"] != moment or fault.get("epoch", epoch) != epoch:
            continue
        if fault.get("reused") and len(_trials_here) < 2:
            continue
        if fault.get("trial", _current["number"]) != _current["number"]:
            continue
        if claim(Path(plan), index, {**fault, "index": index, "epoch": epoch}):
            act(fault)


def claim(plan: Path, index: int, fault: dict[str, Any]) -> bool:
    """Create the fault's record, once across every process (O_EXCL); False if another claimed it."""
    record = {
        **fault,
        "pid": os.getpid(),
        "trial_id": _current["trial_id"],
        "trial": _current["number"],
        "trials_here": list(_trials_here),
    }
    try:
        fd = os.open(fired_dir(plan) / f"{index}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps(record).encode())
        os.fsync(fd)  # on disk before the kill, so a restarted trial never fires it again
    finally:
        os.close(fd)
    return True


def trial_number(plan: Path, trial_id: str) -> int:
    """The trial's number in the experiment: the one it claimed when it first started (a retried or
    resumed trial finds it again), else the lowest not yet claimed."""
    folder = trials_dir(plan)
    for n in range(1, 100_000):
        try:
            fd = os.open(folder / str(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if (folder / str(n)).read_text() == trial_id:
                return n
            continue
        try:
            os.write(fd, trial_id.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return n
    raise RuntimeError("no trial number left")


def act(fault: dict[str, Any]) -> None:
    if fault["do"] == "oom":
        import tensorflow as tf

        raise tf.errors.ResourceExhaustedError(None, None, f"injected by fault_plugin at epoch {fault['epoch']}")
    if fault["do"] == "kill_driver":
        os.kill(driver_pid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def driver_pid() -> int:
    """run_search.py's pid: the fault tests start it as the leader of a session of its own, which Ray's
    processes inherit (tests/test_faults.py `start`). Anything else is refused, not killed."""
    leader = os.getsid(0)
    cmdline = Path(f"/proc/{leader}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    if "run_search.py" not in cmdline:
        raise RuntimeError(f"kill_driver: the session leader {leader} is not run_search.py ({cmdline!r})")
    return leader


def wrap_ray_methods() -> None:
    """The two moments inside Ray's report path (see the module docstring), wrapped in this process:
    StorageContext.persist_current_checkpoint, and save_checkpoint of the trial's actor class. Ray sets
    an actor's methods on the actor class itself (a subclass of FunctionTrainable it builds in the
    worker), so that is the class wrapped, not FunctionTrainable. Idempotent: a reused worker's next
    trial wraps nothing twice."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.trainable.function_trainable import FunctionTrainable

    def persist_then_fire(persist: Any) -> Any:
        def wrapper(self: Any, checkpoint: Any) -> Any:
            persisted = persist(self, checkpoint)
            fire("checkpoint_saved", _current["epoch"])
            return persisted

        return wrapper

    def fire_then_save(save: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            fire("report_received", _current["epoch"])  # the training thread waits inside report k
            return save(self, *args, **kwargs)

        return wrapper

    wrap_once(StorageContext, "persist_current_checkpoint", persist_then_fire)
    for cls in (FunctionTrainable, *subclasses(FunctionTrainable)):
        if "save_checkpoint" in vars(cls):
            wrap_once(cls, "save_checkpoint", fire_then_save)


def subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]


def wrap_once(cls: type, name: str, wrap: Any) -> None:
    method = vars(cls)[name]
    if getattr(method, "fault_plugin_wrapped", False):
        return
    wrapped = wrap(method)
    wrapped.fault_plugin_wrapped = True
    setattr(cls, name, wrapped)


def build(config: Any) -> list[Any]:
    if not os.environ.get(PLAN_ENV):
        return []
    import keras
    from ray import tune

    wrap_ray_methods()

    class FaultInjector(keras.callbacks.Callback):
        """Runs after the trial's EpochReporter: its on_epoch_end comes once tune.report has returned."""

        def on_train_begin(self, logs: dict | None = None) -> None:
            _current["trial_id"] = tune.get_context().get_trial_id()
            _current["number"] = trial_number(Path(os.environ[PLAN_ENV]), _current["trial_id"])
            _trials_here.append(_current["trial_id"])
            fire("trial_start")

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            _current["epoch"] = epoch + 1

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if batch == 0:
                fire("mid_epoch", _current["epoch"])

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            fire("report_done", epoch + 1)

    return [FaultInjector()]


# Registered where run_search.py loads it as a plugin (module `fault_plugin`); a test that imports it as
# `tests.fault_plugin`, for write_plan and fired, registers nothing in its own process.
if __name__ == "fault_plugin":
    register_callback(TrialCallback("fault_plugin", build=build))
