"""Per-process TensorFlow settings of a trial: CPU threads and GPU memory.

They must run before TensorFlow creates its runtime (the first op), which is why
the trainable calls `configure_tensorflow` first thing. Ray Tune reuses a worker
process for the next trial that asks the same resources (`reuse_actors`), so the
settings are made once per process and every later trial in it checks that it
asks the same ones: the same CPUs and the same GPU share, hence the same thread
count and the same memory limit, which therefore stay right for it. Between
trials, `reset_trial_state` clears what Keras and TensorFlow keep per process
(models, layer names, tf.function traces, seeds).
"""

from __future__ import annotations

import math
import os

# Left to CUDA, cuDNN workspaces and the context itself on a shared GPU, in MiB.
GPU_RESERVE_MB = 512
# Seconds a reused worker waits for the previous trial's training thread to end (ASHA stopped it: it
# unwinds out of Keras' fit) before Ray Tune gives up reusing the worker. Tune's default, 2 s, is lost
# on a loaded node (workers starting after a crash, other trials training): Tune then fails the *next*
# trial with "Trainable runner reuse requires reset_config() ... return True" and does not retry it.
TRIAL_EXIT_TIMEOUT_S = 60
TRIAL_EXIT_TIMEOUT_ENV = "TUNE_FUNCTION_THREAD_TIMEOUT_S"  # read by Tune in the worker at each reuse


def allow_slow_trial_exit() -> None:
    """Give the worker's previous trial TRIAL_EXIT_TIMEOUT_S to end before its reuse for the next one;
    called by every trial, so it holds from this worker's first reuse on (an operator's own setting wins)."""
    os.environ.setdefault(TRIAL_EXIT_TIMEOUT_ENV, str(TRIAL_EXIT_TIMEOUT_S))


def gpu_memory_limit_mb(total_mb: int, share: float, reserve_mb: int = GPU_RESERVE_MB) -> int | None:
    """Memory limit of one trial holding `share` (0 < share <= 1) of a GPU with `total_mb` MiB.

    None for a whole GPU (memory growth instead). A fractional share gets that fraction of
    the memory left after each co-tenant's CUDA reserve, so 1/share trials fit side by side.
    """
    if not 0 < share <= 1:
        raise ValueError(f"a GPU share must be in (0, 1], got {share}")
    if share == 1:
        return None
    tenants = math.floor(1 / share + 1e-9)
    usable = total_mb - tenants * reserve_mb
    if usable <= 0:
        raise ValueError(f"{tenants} trials of {share} GPU do not fit in {total_mb} MiB")
    return int(usable * share)


def memory_limit_for(gpu_share: float, total_mb: int | None) -> int | None:
    """The decision per visible GPU: a limit in MiB for a fractional share, None for memory growth.

    A whole GPU (or several) is the trial's alone, so growth wastes nothing; an unknown device
    size (no nvidia-smi) cannot be divided, so it also falls back to growth.
    """
    if not 0 < gpu_share < 1 or not total_mb:
        return None
    return gpu_memory_limit_mb(total_mb, gpu_share)


def thread_count(cpus: float) -> int:
    """TensorFlow threads for a trial holding `cpus` Ray CPUs: whole CPUs, at least one."""
    return max(1, int(cpus))


def physical_gpu_index(logical: int, cuda_visible_devices: str | None) -> str:
    """What nvidia-smi calls TensorFlow's GPU `logical`: Ray narrows CUDA_VISIBLE_DEVICES to the
    trial's devices (indices or UUIDs), TensorFlow renumbers them from 0, nvidia-smi does not."""
    visible = [v.strip() for v in (cuda_visible_devices or "").split(",") if v.strip()]
    return visible[logical] if logical < len(visible) else str(logical)


# What configure_tensorflow set in this process: (cpus, gpu_share) -> its summary. One entry at most.
_CONFIGURED: dict[tuple[float, float], dict[str, object]] = {}


class WorkerMismatch(RuntimeError):
    """A reused worker was configured for other resources than this trial's (Ray Tune reuses a worker
    only for trials with the same resource request, so this means a bug, not bad input)."""


def configure_tensorflow(cpus: float, gpu_share: float = 0.0) -> dict[str, object]:
    """Cap TensorFlow's threads at the trial's CPUs and set GPU memory growth or a limit, once per
    process: a reused worker's later trials get the same settings back (TensorFlow refuses to change
    them once its runtime exists)."""
    key = (float(cpus), float(gpu_share))
    if _CONFIGURED:
        if key not in _CONFIGURED:
            raise WorkerMismatch(
                f"this worker was configured for (cpus, gpus) {next(iter(_CONFIGURED))}, "
                f"a trial asks {key}; TensorFlow's settings cannot change in a process"
            )
        return {**_CONFIGURED[key], "reused": True}
    import tensorflow as tf

    threads = thread_count(cpus)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    limit = None
    for gpu in gpus:
        limit = memory_limit_for(gpu_share, _gpu_total_mb(gpu) if 0 < gpu_share < 1 else None)
        if limit:
            tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)
    _CONFIGURED[key] = {"threads": threads, "gpus": len(gpus), "gpu_memory_limit_mb": limit}
    return {**_CONFIGURED[key], "reused": False}


def reset_trial_state() -> None:
    """Forget the previous trial of this process: Keras' global state (layer-name counters, the
    graph of its models, its seed generators) and the Python objects still holding tensors. Called at
    the start of every trial, so a trial run after another in the same worker starts as the first did;
    TensorFlow's allocator keeps the freed memory for reuse (RSS stays flat, see benchmarks/memory.py)."""
    import gc

    import keras

    keras.backend.clear_session(free_memory=True)  # also runs Python's garbage collector
    # What survives that collection is the worker's own state (TensorFlow, Ray, the dataset) or, for
    # the train-step graphs TensorFlow 2.21 keeps after clear_session (~1-3 MB a trial, see
    # benchmarks/README.md), uncollectable anyway. Freezing it keeps the next trial's full collection
    # to what that trial allocated: 10-50 ms instead of a walk over the whole heap, which grew with
    # every trial (0.3 s at the first, 1-6 s by the twelfth on two busy cores).
    gc.freeze()
    _release_free_heap()


def _release_free_heap() -> None:
    """Give the heap the previous trial freed back to the OS (glibc's malloc_trim). Each trial runs in
    a new thread of the worker (Tune's function runner), and glibc keeps what a thread's malloc arena
    freed for reuse, so without this a reused worker's resident memory creeps up trial after trial.
    A no-op where the C library has no malloc_trim (musl, macOS)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


RSS_KEY = "worker_rss_mb"  # the result key of the worker's resident memory (tuning.worker_memory reads it)


def resident_mb() -> float | None:
    """This process's resident memory in MB (Linux's /proc; None elsewhere): reported with every epoch, so
    that the driver can replace a reused worker that has grown too far (tuning.worker_memory)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _gpu_total_mb(gpu) -> int | None:  # noqa: ANN001 - a tf PhysicalDevice
    try:
        import os
        import subprocess

        index = physical_gpu_index(int(gpu.name.rsplit(":", 1)[-1]), os.environ.get("CUDA_VISIBLE_DEVICES"))
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return int(out.stdout.strip().splitlines()[0])
    except Exception:  # noqa: BLE001 - no nvidia-smi: fall back to memory growth
        return None
