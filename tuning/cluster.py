"""Ray cluster wiring: join a cluster or start an embedded Ray, ship the project's code to a cluster's
workers, and refuse a trial no node could ever hold."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiment.errors import UsageError
from trainables import plugins

PROJECT_DIR = Path(__file__).resolve().parents[1]
# Left out of the code shipped to a cluster's workers: environments, results, caches.
WORKING_DIR_EXCLUDES = [".venv", ".git", "results", "**/__pycache__", "*.egg-info", ".pytest_cache"]


def cluster_runtime_env(environ: Mapping[str, str], plugin_refs: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """What trials on other nodes need from this driver: the project's code (the packages trials
    import), the plugin files (py_modules: trials import them by module name) and the S3 endpoint.
    Credentials stay with the nodes' own environment or instance roles; they are not copied into the
    cluster. Inside a `ray job` (or a KubeRay RayJob) whose own runtime env already sets the working dir
    or a variable, the job's wins: Ray refuses to merge a conflict."""
    job = json.loads(environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}").get("runtime_env") or {}
    env: dict[str, Any] = {}
    if "working_dir" not in job:
        env.update(working_dir=str(PROJECT_DIR), excludes=WORKING_DIR_EXCLUDES)
    files = [str(Path(r).absolute()) for r in plugin_refs if plugins.is_file_ref(r)]
    if files:
        env["py_modules"] = [*job.get("py_modules", []), *files]
    env_vars = {k: environ[k] for k in ("AWS_ENDPOINT_URL",) if k in environ and k not in job.get("env_vars", {})}
    if env_vars:
        env["env_vars"] = env_vars
    return env


def connect_ray(address: str | None, environ: Mapping[str, str], plugin_refs: tuple[str, ...], verbose: bool) -> None:
    """Join the cluster at `address`, or start an embedded Ray (address="local": always a fresh one,
    never a cluster some other process started on this host)."""
    import ray

    options: dict[str, Any] = {"log_to_driver": verbose, "logging_level": "WARNING", "configure_logging": True}
    if address is None:
        ray.init(address="local", include_dashboard=False, **options)
        return
    try:
        ray.init(address=address, runtime_env=cluster_runtime_env(environ, plugin_refs), **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UsageError(
            f"--address {address!r}: cannot join a Ray cluster there ({e}). "
            "Start one with `ray start --head`, or leave --address out for an embedded Ray"
        ) from None


def trial_gpus(requested: float | None, space_default: float, cluster_gpus: float) -> float:
    """GPUs per trial: the flag when given; else the space's default, but only where the cluster
    has GPUs, so a GPU-minded space (transfer learning) still runs on a CPU-only machine."""
    if requested is not None:
        return requested
    return space_default if cluster_gpus > 0 else 0.0


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def check_resources(cpus: float, gpus: float, on_cluster: bool) -> None:
    """A trial asking more CPUs or GPUs than any node has would wait forever: say so instead."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    where = "the Ray cluster's largest node" if on_cluster else "this machine"
    for flag, need, key in (("--cpus-per-trial", cpus, "CPU"), ("--gpus-per-trial", gpus, "GPU")):
        most = max((n.get(key, 0.0) for n in nodes), default=0.0)
        if need > most:
            raise UsageError(
                f"{flag} {need:g} is more than {where} has ({most:g} {key}); a trial would "
                f"wait forever. Lower {flag}" + (" or add larger nodes" if on_cluster else "")
            )
