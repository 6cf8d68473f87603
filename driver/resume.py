"""--resume: the experiment it continues (free, and started far enough to resume), its stored request
merged with what this call may change, and what an extension may add: more trials (a larger
--num-samples, never fewer) and a confirmation asked afresh (other --confirm-top/--repeats).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from driver.guards import check_free, read_resumable
from driver.request import FIELDS, Plan, Request
from driver.storage_checks import use_s3_endpoint
from experiment import folder, storage
from experiment.errors import UsageError
from experiment.folder import Experiment

# Settings --resume may change: where things are and how much is printed. Every other stored
# setting (space, budget, seeds, searcher, resources, retries, plugins) shapes the experiment and must match.
RESUME_MAY_CHANGE = (
    "resume",
    "name",
    "storage_path",
    "s3_endpoint",
    "address",
    "data_dir",
    "verbose",
    "quiet",
    "mlflow_uri",
)
# Settings --resume may change to extend the experiment: more trials (never fewer than it asked for:
# check_extension) and a confirmation given afresh.
RESUME_MAY_EXTEND = ("num_samples", "confirm_top", "repeats")
# Settings whose change on --resume asks for the confirmation afresh: a new run, not the stored one continued.
CONFIRM_SETTINGS = ("confirm_top", "repeats")


def resumable(request: Request) -> tuple[Experiment, dict[str, Any]]:
    """The experiment --resume continues, free and resumable, and its record."""
    if not request.name:
        raise UsageError("--resume needs --name NAME of the experiment to continue")
    use_s3_endpoint(request.storage_path, request.s3_endpoint)
    exp = folder.locate(request.storage_path, request.name)
    check_free(exp)
    return exp, read_resumable(exp)


def resumed(request: Request, given: frozenset[str], stored: Any, exp_uri: str) -> Request:
    """The stored request of the experiment (its plugins included), with what --resume may change taken
    from this call. A flag given now that contradicts the stored value is refused, not silently ignored."""
    if not isinstance(stored, dict):
        raise UsageError(
            f"{exp_uri}/{storage.EXPERIMENT_FILE} holds no stored arguments ('args'); "
            "it cannot be resumed, start a new experiment under another --name"
        )
    # A setting the record lacks (an experiment from before that flag existed) is this call's.
    before = Request(**{k: stored.get(k, getattr(request, k)) for k in FIELDS if k != "resume"})
    conflicts = [
        f"--{k.replace('_', '-')} {getattr(request, k)!r} (stored: {getattr(before, k)!r})"
        for k in sorted(given - set(RESUME_MAY_CHANGE) - set(RESUME_MAY_EXTEND))
        if k in stored and getattr(request, k) != getattr(before, k)
    ]
    if conflicts:
        raise UsageError(
            f"--resume continues {exp_uri} with its stored settings, but {', '.join(conflicts)} differ; "
            "drop those flags"
        )
    # What may change is this call's only where given: a resume that omits --data-dir reads the data the
    # experiment was started on, not Keras' download. Where the experiment is comes from this call always.
    now = {k for k in (*RESUME_MAY_CHANGE, *RESUME_MAY_EXTEND) if k in given} | {"resume", "name", "storage_path"}
    if now & {"verbose", "quiet"}:  # -v and -q count against each other: one verbosity, this call's
        now |= {"verbose", "quiet"}
    return dataclasses.replace(before, **{k: getattr(request, k) for k in now})


def check_extension(p: Plan, given: frozenset[str], before: dict[str, Any], exp_uri: str) -> None:
    """A --num-samples given on --resume may extend the search, never shrink it below what it asked for."""
    if "num_samples" in given and p.num_samples < int(before.get("num_samples") or 0):
        raise UsageError(
            f"--num-samples {p.num_samples}: {exp_uri} asked for {before['num_samples']} "
            "trials already; --resume can extend a search (a larger --num-samples), never shrink it"
        )


def confirm_afresh(request: Request, before: dict[str, Any]) -> bool:
    """Whether --resume asks for the confirmation afresh: other --confirm-top/--repeats than stored."""
    stored = before.get("args") or {}
    return request.resume and any(stored.get(k) != getattr(request, k) for k in CONFIRM_SETTINGS)


def run_targets(p: Plan, before: dict[str, Any]) -> dict[str, int]:
    """Each Ray Tune run's trial count as experiment.json `runs` keeps it (an experiment recorded before
    it had `runs`: its one search run); a new experiment's search, once it starts."""
    return dict(before.get("runs") or {"search": before.get("num_samples", p.num_samples)})
