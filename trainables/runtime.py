"""Per-process TensorFlow settings of a trial: CPU threads and GPU memory.

They must run before TensorFlow creates its runtime (the first op), which is why
the trainable calls `configure_tensorflow` first thing in its own process.
"""

from __future__ import annotations

import math

# Left to CUDA, cuDNN workspaces and the context itself on a shared GPU, in MiB.
GPU_RESERVE_MB = 512


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


def configure_tensorflow(cpus: float, gpu_share: float = 0.0) -> dict[str, object]:
    """Cap TensorFlow's threads at the trial's CPUs and set GPU memory growth or a limit."""
    import tensorflow as tf

    threads = max(1, int(cpus))
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    limit = None
    for gpu in gpus:
        if 0 < gpu_share < 1:
            total = _gpu_total_mb(gpu)
            limit = gpu_memory_limit_mb(total, gpu_share) if total else None
        if limit:
            tf.config.set_logical_device_configuration(
                gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)])
        else:
            tf.config.experimental.set_memory_growth(gpu, True)
    return {"threads": threads, "gpus": len(gpus), "gpu_memory_limit_mb": limit}


def _gpu_total_mb(gpu) -> int | None:  # noqa: ANN001 - a tf PhysicalDevice
    try:
        import subprocess

        import os

        index = gpu.name.rsplit(":", 1)[-1]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
        if visible != [""] and int(index) < len(visible):
            index = visible[int(index)]  # Ray narrows visible devices; nvidia-smi counts physical ones
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits",
                              "-i", index], capture_output=True, text=True, timeout=10, check=True)
        return int(out.stdout.strip().splitlines()[0])
    except Exception:  # noqa: BLE001 - no nvidia-smi: fall back to memory growth
        return None
