"""Per-trial TensorFlow settings: GPU memory limits from a fractional share, thread caps.

The limit arithmetic and the limit-or-growth decision are plain functions, so they are checked
here on a CPU machine; the thread cap is read back from TensorFlow in a fresh process (TensorFlow
accepts thread settings only before its runtime starts).
"""

import json
import math
import os

import pytest

from tests.fresh_python import run_fresh_python
from trainables.runtime import (
    GPU_RESERVE_MB,
    TRIAL_EXIT_TIMEOUT_ENV,
    TRIAL_EXIT_TIMEOUT_S,
    allow_slow_trial_exit,
    gpu_memory_limit_mb,
    memory_limit_for,
    physical_gpu_index,
    thread_count,
)

GIB = 1024  # MiB


H100 = 80 * GIB  # an 80 GiB device, in MiB


@pytest.mark.parametrize(
    ("share", "expected_mb"),
    [
        (0.25, (H100 - 4 * GPU_RESERVE_MB) // 4),  # 4 tenants: 19968 MiB each
        (0.5, (H100 - 2 * GPU_RESERVE_MB) // 2),  # 2 tenants: 40448 MiB each
        (1 / 3, int((H100 - 3 * GPU_RESERVE_MB) / 3)),  # 3 tenants: 26794 MiB each
    ],
)
def test_fractional_share_gets_its_fraction_after_reserves(share, expected_mb):
    assert gpu_memory_limit_mb(H100, share) == expected_mb


def test_known_values_for_80_gib():
    # The numbers docs/cluster.md quotes; a change of GPU_RESERVE_MB shows up here.
    assert [gpu_memory_limit_mb(H100, s) for s in (0.25, 0.5, 1 / 3)] == [19968, 40448, 26794]


def test_whole_gpu_means_memory_growth():
    assert gpu_memory_limit_mb(H100, 1.0) is None


@pytest.mark.parametrize("share", [0.1, 0.2, 0.25, 0.3, 1 / 3, 0.4, 0.5, 0.75, 0.9])
def test_co_tenants_fit_on_the_device(share):
    # As many trials as Ray packs on one GPU (floor(1/share)), each with its limit and its CUDA
    # reserve, never ask for more than the device has.
    tenants = math.floor(1 / share + 1e-9)
    limit = gpu_memory_limit_mb(H100, share)
    assert limit > 0
    assert tenants * (limit + GPU_RESERVE_MB) <= H100


@pytest.mark.parametrize("share", [0.0, -0.25, 1.5, 2.0, math.nan])
def test_invalid_share_is_rejected(share):
    with pytest.raises(ValueError, match="GPU share"):
        gpu_memory_limit_mb(H100, share)


def test_share_too_small_for_the_device_is_rejected():
    # 10 trials on a 4 GiB card: the CUDA reserves alone (10 x 512 MiB) exceed it.
    with pytest.raises(ValueError, match="do not fit"):
        gpu_memory_limit_mb(4 * GIB, 0.1)


@pytest.mark.parametrize(
    ("share", "total_mb", "expected"),
    [
        (0.25, H100, 19968),  # fractional share of a known device: a limit
        (0.5, 16 * GIB, (16 * GIB - 2 * GPU_RESERVE_MB) // 2),
        (1.0, H100, None),  # the whole GPU: memory growth
        (2.0, H100, None),  # several whole GPUs: memory growth
        (0.0, H100, None),  # no GPU share (Ray hides the devices anyway)
        (0.25, None, None),  # device size unknown (no nvidia-smi): memory growth
    ],
)
def test_limit_or_growth_decision(share, total_mb, expected):
    assert memory_limit_for(share, total_mb) == expected


@pytest.mark.parametrize(
    ("logical", "visible", "expected"),
    [
        (0, "3", "3"),  # Ray gave the trial physical GPU 3; TensorFlow calls it GPU:0
        (1, "2,5", "5"),
        (0, "GPU-8f1c2d", "GPU-8f1c2d"),  # UUIDs pass through; nvidia-smi -i takes them
        (0, None, "0"),  # not narrowed: logical = physical
        (0, "", "0"),
    ],
)
def test_physical_gpu_index(logical, visible, expected):
    assert physical_gpu_index(logical, visible) == expected


@pytest.mark.parametrize(("cpus", "threads"), [(0.5, 1), (1, 1), (2, 2), (3.7, 3)])
def test_thread_count_is_whole_cpus_at_least_one(cpus, threads):
    assert thread_count(cpus) == threads


def test_a_reused_worker_waits_for_the_previous_trial_to_end(monkeypatch):
    """Tune's 2 s wait for the previous trial's thread is raised, unless the operator set one."""
    monkeypatch.delenv(TRIAL_EXIT_TIMEOUT_ENV, raising=False)
    allow_slow_trial_exit()
    assert os.environ[TRIAL_EXIT_TIMEOUT_ENV] == str(TRIAL_EXIT_TIMEOUT_S)
    monkeypatch.setenv(TRIAL_EXIT_TIMEOUT_ENV, "5")
    allow_slow_trial_exit()
    assert os.environ[TRIAL_EXIT_TIMEOUT_ENV] == "5"


def test_configure_tensorflow_caps_threads_once_per_process_and_a_reused_worker_keeps_them():
    """A worker's first trial sets the threads; a later trial in the same (reused) worker, after
    TensorFlow's runtime has started, gets the same settings back; a trial asking other resources
    than the worker was configured for is refused (Tune reuses workers only for equal requests)."""
    code = """
import json
import tensorflow as tf
from trainables.runtime import WorkerMismatch, configure_tensorflow, reset_trial_state
out = []
for _ in range(2):  # two trials in one worker
    info = configure_tensorflow(3.7, gpu_share=0.25)
    float(tf.reduce_sum(tf.ones((4, 4))))  # the runtime now exists: settings can no longer change
    reset_trial_state()
    out.append({**info, "intra": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter": tf.config.threading.get_inter_op_parallelism_threads()})
try:
    configure_tensorflow(2, gpu_share=0.25)
    out.append("accepted")
except WorkerMismatch as e:
    out.append(str(e))
print(json.dumps(out))
"""
    proc = run_fresh_python(code)
    *results, mismatch = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["threads"], r["intra"], r["inter"], r["reused"]) for r in results] == [(3, 3, 3, False), (3, 3, 3, True)]
    # No GPU visible: nothing to limit, whatever the share.
    assert all(r["gpus"] == 0 and r["gpu_memory_limit_mb"] is None for r in results)
    assert "configured for" in mismatch


def test_reset_collects_the_last_trials_cycles_and_freezes_what_survives():
    """The reset at a trial's start frees the previous trial's reference cycles, then freezes the
    survivors, so the next reset's collection walks only what the trial in between allocated; a cycle
    made during a trial is still collected at the next reset (freezing never keeps garbage)."""
    code = """
import gc, json, weakref
from trainables.runtime import reset_trial_state

class Node:
    pass

def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)

gc.disable()  # only the resets collect, so what they do is what is measured
before = cycle()
reset_trial_state()
frozen = gc.get_freeze_count()
during = cycle()  # made by "the next trial"
alive_during = during() is not None
reset_trial_state()
print(json.dumps([before() is None, frozen, alive_during, during() is None]))
"""
    proc = run_fresh_python(code)
    before_freed, frozen, alive_during, during_freed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before_freed and during_freed and alive_during
    assert frozen > 10_000  # the worker's modules and Keras' state: out of later collections' way
