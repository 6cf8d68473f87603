"""tuning.atomic_storage: Tune's experiment snapshot copied to a local storage with its state files renamed
into place, so that a driver killed mid-copy leaves the previous state whole; a resume refuses the state an
earlier version left cut short."""

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from tuning import atomic_storage, snapshots

PROJECT = Path(__file__).resolve().parents[2]
# The names Tune finds a resumed experiment's state by (Ray 2.60: TuneController, SearchGenerator, Searcher).
TUNE_STATE_PATTERNS = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")


@pytest.fixture
def fs() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


def staging(folder: Path, state_bytes: int = 2000) -> dict[str, bytes]:
    """A driver staging folder as Tune's snapshot leaves it: state files on top, a folder per trial."""
    files = {
        "experiment_state-2026-12-04_10-00-00.json": b"s" * state_bytes,
        "search_gen_state-2026-12-04_10-00-00.json": b"g" * 1000,
        "searcher-state-2026-12-04_10-00-00.pkl": bytes(range(256)) * 40,
        "trial_1/result.json": b'{"epoch": 1}\n{"epoch": 2}\n',
        "trial_1/params.json": b'{"learning_rate": 0.01}',
        "trial_2/result.json": b'{"epoch": 1}\n',
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return files


def test_the_upload_copies_every_file_and_replaces_older_copies(tmp_path, fs):
    files = staging(tmp_path / "staging")
    # what a killed upload left on the storage, which a resume's download brings into the staging folder
    (tmp_path / "staging" / f".experiment_state-2026-12-04_09-00-00.json{atomic_storage.PARTIAL_SUFFIX}").write_bytes(
        b"s"
    )
    storage = tmp_path / "storage"
    (storage / "trial_1").mkdir(parents=True)
    (storage / "trial_1" / "result.json").write_bytes(b"an older copy, longer than the new one" * 10)
    (storage / "experiment_state-2026-12-04_10-00-00.json").write_bytes(b"the last snapshot's")
    atomic_storage.upload_atomically(str(tmp_path / "staging"), fs, str(storage))
    for name, data in files.items():
        assert (storage / name).read_bytes() == data, name
    assert not list(storage.rglob(f"*{atomic_storage.PARTIAL_SUFFIX}"))
    assert not [p for p in storage.rglob("*") if p.is_symlink()]  # real files, though copied through links


def test_the_links_follow_the_trial_folders_from_one_upload_to_the_next(tmp_path, fs):
    staging(tmp_path / "staging")
    storage = tmp_path / "storage"
    atomic_storage.upload_atomically(str(tmp_path / "staging"), fs, str(storage))
    links = tmp_path / f"staging{atomic_storage.LINKS_SUFFIX}"
    assert sorted(p.name for p in links.iterdir()) == ["trial_1", "trial_2"]
    subprocess.run(["rm", "-r", str(tmp_path / "staging" / "trial_2")], check=True)
    (tmp_path / "staging" / "trial_3").mkdir()
    (tmp_path / "staging" / "trial_3" / "result.json").write_bytes(b'{"epoch": 1}\n')
    (tmp_path / "staging" / "trial_1" / "result.json").write_bytes(b"three epochs now")
    atomic_storage.upload_atomically(str(tmp_path / "staging"), fs, str(storage))
    assert sorted(p.name for p in links.iterdir()) == ["trial_1", "trial_3"]
    assert (storage / "trial_3" / "result.json").read_bytes() == b'{"epoch": 1}\n'
    assert (storage / "trial_1" / "result.json").read_bytes() == b"three epochs now"


def test_an_upload_with_exclusions_is_tunes_own(tmp_path, fs):
    files = staging(tmp_path / "staging")
    (tmp_path / "staging" / "trial_1" / "checkpoint_000001").mkdir()
    (tmp_path / "staging" / "trial_1" / "checkpoint_000001" / "w.h5").write_bytes(b"w")
    atomic_storage.upload_atomically(str(tmp_path / "staging"), fs, str(tmp_path / "storage"), ["*/checkpoint_*/*"])
    assert all((tmp_path / "storage" / name).read_bytes() == data for name, data in files.items())
    assert not (tmp_path / "storage" / "trial_1" / "checkpoint_000001" / "w.h5").exists()


def test_a_driver_killed_mid_upload_leaves_the_previous_state_whole(tmp_path):
    # The upload in a process of its own, killed once its copy of the 64 MB experiment state has begun: the
    # storage then holds the previous snapshot's state, whole. Triggered on progress (the temporary file has
    # grown), never on time; a copy that finished before the kill is retried with a fresh storage.
    files = staging(tmp_path / "staging", state_bytes=64 << 20)
    state = "experiment_state-2026-12-04_10-00-00.json"
    uploader = textwrap.dedent(f"""
        import pyarrow.fs as pafs
        from tuning import atomic_storage
        staging, storage = {str(tmp_path / "staging")!r}, {str(tmp_path / "storage")!r}
        atomic_storage.upload_atomically(staging, pafs.LocalFileSystem(), storage)
    """)
    cut = 0
    for _ in range(5):
        storage = tmp_path / "storage"
        subprocess.run(["rm", "-rf", str(storage)], check=True)
        storage.mkdir()
        (storage / state).write_bytes(b"the last whole snapshot")
        partial = storage / f".{state}{atomic_storage.PARTIAL_SUFFIX}"
        proc = subprocess.Popen([sys.executable, "-c", uploader], cwd=PROJECT)
        try:
            while proc.poll() is None and not (partial.exists() and partial.stat().st_size > 0):
                time.sleep(0.0005)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.wait()
        assert (storage / state).read_bytes() in (b"the last whole snapshot", files[state])
        if partial.exists() and (storage / state).read_bytes() == b"the last whole snapshot":
            cut += 1
            # the trials' folders were copied before the state that names them
            assert (storage / "trial_1" / "result.json").read_bytes() == files["trial_1/result.json"]
            for pattern in TUNE_STATE_PATTERNS:  # the temporary file is no name Tune reads
                assert partial not in storage.glob(pattern)
            break
    assert cut, "no kill landed while the state was being copied"


def test_every_controller_uploads_its_snapshots_atomically(tmp_path):
    """A real TuneController's storage gets the syncer, with Tune's settings (Ray 2.60's private names)."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import Searcher, SearchGenerator

    from tuning.checkpoint_pruning import CheckpointPruner

    snapshots.install()
    for callbacks in ([], [CheckpointPruner(2)]):
        storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="x")
        period, timeout = storage.syncer.sync_period, storage.syncer.sync_timeout
        TuneController(storage=storage, callbacks=callbacks, search_alg=SearchGenerator(Searcher()))
        assert isinstance(storage.syncer, atomic_storage.AtomicStateSyncer)
        assert (storage.syncer.sync_period, storage.syncer.sync_timeout) == (period, timeout)
        staging(tmp_path / "staging")  # as the driver's staging folder (under Ray's session folder) holds it
        assert storage.syncer.sync_up(str(tmp_path / "staging"), storage.experiment_fs_path)
        storage.syncer.wait()
        assert (tmp_path / "x" / "trial_2" / "result.json").exists()
        assert (tmp_path / "x" / "searcher-state-2026-12-04_10-00-00.pkl").stat().st_size == 256 * 40


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
