"""tuning.atomic_storage: the filesystem Tune writes a local storage path through; a file appears whole or
not at all, whoever writes it (Tune's snapshot upload, a worker's checkpoint) and however the writer dies."""

import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tuning import atomic_storage

PROJECT = Path(__file__).resolve().parents[2]
# The names Tune finds a resumed experiment's state by (Ray 2.60: TuneController, SearchGenerator, Searcher).
TUNE_STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


@pytest.fixture
def fs() -> pafs.FileSystem:
    path, fs = atomic_storage.tune_storage("/anywhere")
    assert path == "/anywhere" and fs is not None
    return fs


def test_a_file_appears_only_when_its_writer_closes_it(tmp_path, fs):
    target = tmp_path / "search_gen_state-2026.json"
    target.write_bytes(b"old")
    stream = fs.open_output_stream(str(target))
    stream.write(b"new state")
    assert target.read_bytes() == b"old"  # the previous copy, whole, until the new one is
    stream.close()
    assert target.read_bytes() == b"new state"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # the temporary file was renamed


def test_a_writer_killed_mid_write_leaves_the_previous_file_and_no_name_tune_reads(tmp_path):
    target = tmp_path / "experiment_state-2026.json"
    target.write_bytes(b"the last whole snapshot")
    writer = textwrap.dedent(f"""
        import sys
        from tuning import atomic_storage
        _, fs = atomic_storage.tune_storage({str(tmp_path)!r})
        stream = fs.open_output_stream({str(target)!r})
        stream.write(b"x" * 100_000)
        stream.flush()
        print("half written", flush=True)
        sys.stdin.read()  # killed here, as a driver is mid-copy
    """)
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "half written\n"
        (partial,) = (p for p in tmp_path.iterdir() if p != target)
        assert partial.stat().st_size == 100_000  # the half really was written, beside the target
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
    assert target.read_bytes() == b"the last whole snapshot"
    assert partial.exists() and partial.name.endswith(atomic_storage.PARTIAL_SUFFIX)
    for pattern in TUNE_STATE_PATTERNS:
        assert [p.name for p in tmp_path.glob(pattern)] == ([target.name] if target.match(pattern) else [])


def test_tunes_upload_of_its_staging_folder_writes_every_file_whole(tmp_path, fs):
    from ray.train._internal.storage import _upload_to_fs_path

    staging = tmp_path / "staging"
    (staging / "trial_1" / "checkpoint_000001").mkdir(parents=True)
    files = {
        "experiment_state-2026.json": b"{}" * 1000,
        "searcher-state-2026.pkl": bytes(range(256)) * 10_000,  # 2.5 MB: several of copy_files' chunks
        "trial_1/result.json": b'{"epoch": 1}\n',
        "trial_1/checkpoint_000001/model.weights.h5": b"w" * 3_000_000,
    }
    for name, data in files.items():
        (staging / name).write_bytes(data)
    storage = tmp_path / "storage"
    (storage / "trial_1").mkdir(parents=True)
    (storage / "trial_1" / "result.json").write_bytes(b"an older copy")
    _upload_to_fs_path(str(staging), fs, str(storage), exclude=None)
    _upload_to_fs_path(str(staging), fs, str(storage), exclude=["*/checkpoint_*/*"])  # Tune's snapshot sync
    for name, data in files.items():
        assert (storage / name).read_bytes() == data, name
    assert not list(storage.rglob(f"*{atomic_storage.PARTIAL_SUFFIX}"))


def test_it_travels_to_a_worker_pickled_and_still_writes_atomically(tmp_path, fs):
    copy = pickle.loads(pickle.dumps(fs))
    assert copy.equals(fs) and copy.type_name == "py::atomic-local"
    with copy.open_output_stream(str(tmp_path / "f")) as out:
        out.write(b"data")
        assert not (tmp_path / "f").exists()
    assert (tmp_path / "f").read_bytes() == b"data"
    info = copy.get_file_info(str(tmp_path / "f"))
    assert info.type == pafs.FileType.File and info.size == 4


def test_a_bucket_keeps_pyarrows_own_filesystem():
    assert atomic_storage.tune_storage("s3://bucket/results") == ("s3://bucket/results", None)


def test_the_drivers_tuners_write_a_local_storage_path_through_it(tmp_path, built_run_config):
    config = built_run_config()
    assert config.storage_filesystem.type_name == "py::atomic-local"
    assert config.storage_path == str(tmp_path)


def test_a_restored_tuner_writes_through_it_too(tmp_path):
    from ray import tune

    from tuning import tune_settings

    tuner = tune_settings.build_tuner(
        print, name="x", storage_path=str(tmp_path), num_samples=1, search_alg=None, scheduler=None, callbacks=[]
    )
    assert (tmp_path / "x" / "tuner.pkl").exists()  # Tune saves the Tuner when it is built
    del tuner
    restored = tune_settings.restore_tuner(str(tmp_path / "x"), print)
    assert isinstance(restored, tune.Tuner)
    assert restored._local_tuner.get_run_config().storage_filesystem.type_name == "py::atomic-local"


# ---- a resume refuses Tune state an earlier version left cut short ----------------------------------------


def tune_state(folder: Path, session: str) -> list[Path]:
    """Tune's resumed state files for one driver session, written by Tune's own code."""
    import json

    from ray.tune.search import Searcher, SearchGenerator
    from ray.tune.utils.serialization import TuneFunctionEncoder

    generator = SearchGenerator(Searcher())
    generator._counter, generator._total_samples = 7, 20  # a search 7 trials in
    generator.save_to_dir(str(folder), session)
    state = folder / f"experiment_state-{session}.json"
    state.write_text(json.dumps({"trial_data": [["{}", "{}"]] * 7, "runner_data": {}}, cls=TuneFunctionEncoder))
    return [state, folder / f"search_gen_state-{session}.json"]


def test_whole_tune_state_passes(tmp_path, fs):
    tune_state(tmp_path, "2026-12-04_10-00-00")
    assert atomic_storage.cut_short_state(fs, str(tmp_path)) == []
    assert atomic_storage.cut_short_state(fs, str(tmp_path / "no such phase")) == []


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.95])
def test_a_newest_state_file_cut_short_is_named(tmp_path, fs, which, keep):
    files = tune_state(tmp_path, "2026-12-04_10-00-00")
    data = files[which].read_bytes()
    files[which].write_bytes(data[: int(len(data) * keep)])
    assert atomic_storage.cut_short_state(fs, str(tmp_path)) == [str(files[which])]


def test_only_the_newest_sessions_state_counts(tmp_path, fs):
    older = tune_state(tmp_path, "2026-12-04_10-00-00")
    for path in older:
        path.write_bytes(b"")  # an earlier session's, which Tune does not read
    tune_state(tmp_path, "2026-12-04_11-00-00")
    assert atomic_storage.cut_short_state(fs, str(tmp_path)) == []
