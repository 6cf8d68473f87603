"""A reused worker replaced once its resident memory has grown too far (tuning.worker_memory): the
decision, and its place in a real Tune controller."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from tuning import worker_memory
from tuning.worker_memory import RSS_KEY, WorkerMemoryLimit


def result(pid: int, rss: float | None, node: str = "n") -> dict:
    out = {"pid": pid, "node": node, "epoch": 1}
    if rss is not None:
        out[RSS_KEY] = rss
    return out


def test_a_worker_is_kept_until_it_has_grown_past_the_limit_over_its_first_trial():
    limit = WorkerMemoryLimit(10)
    assert limit.keep_worker(result(1, 800))  # its first trial: the baseline
    assert limit.keep_worker(result(1, 880))  # +10 %: at the limit, kept
    assert not limit.keep_worker(result(1, 881))  # over it: replaced
    assert limit.replaced == 1
    # Its replacement (another pid) has a baseline of its own; so does the same pid on another node.
    assert limit.keep_worker(result(2, 900)) and limit.keep_worker(result(2, 985))
    assert limit.keep_worker(result(1, 2000, node="m"))


def test_a_trainable_that_reports_no_memory_keeps_its_worker():
    limit = WorkerMemoryLimit(10)
    assert limit.keep_worker(None) and limit.keep_worker({}) and limit.keep_worker(result(1, None))
    assert limit.keep_worker({RSS_KEY: 5000.0})  # no pid: no worker to tell apart


def test_the_pickle_keeps_the_limit_not_the_sessions_workers():
    limit = WorkerMemoryLimit(25)
    limit.keep_worker(result(1, 800))
    again = pickle.loads(pickle.dumps(limit))
    assert again.growth_percent == 25 and again.baselines == {} and again.replaced == 0


def test_the_controller_keeps_no_grown_worker_and_asks_tune_otherwise(tmp_path, monkeypatch):
    """A real TuneController (Ray 2.60's private names: a Ray that moved them fails here): the grown worker
    is not cached, whatever Tune would have done; any other goes to Tune's own decision."""
    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search import Searcher, SearchGenerator

    asked = []
    monkeypatch.setattr(TuneController, "_maybe_cache_trial_actor", lambda _, trial: asked.append(trial) or True)
    worker_memory.install()
    worker_memory.install()  # idempotent
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="x")

    def controller(callbacks: list) -> TuneController:
        return TuneController(storage=storage, callbacks=callbacks, search_alg=SearchGenerator(Searcher()))

    limited = controller([WorkerMemoryLimit(10)])
    first, grown = SimpleNamespace(last_result=result(7, 800)), SimpleNamespace(last_result=result(7, 900))
    assert limited._maybe_cache_trial_actor(first) is True and asked == [first]
    assert limited._maybe_cache_trial_actor(grown) is False and asked == [first]
    unlimited = controller([])
    assert unlimited._maybe_cache_trial_actor(grown) is True and asked == [first, grown]


def test_the_default_limit_is_the_requests_and_only_reused_workers_get_it(built_run_config):
    from driver.request import Request
    from tuning import tune_settings

    assert Request(space="basenet").worker_memory_growth == tune_settings.WORKER_MEMORY_GROWTH

    def limits(**settings: object) -> list[float]:
        callbacks = built_run_config(**settings).callbacks
        return [cb.growth_percent for cb in callbacks if isinstance(cb, WorkerMemoryLimit)]

    assert limits() == [tune_settings.WORKER_MEMORY_GROWTH]
    assert limits(worker_memory_growth=25.0) == [25.0]
    assert limits(worker_memory_growth=0) == [] and limits(reuse_actors=False) == []
    with pytest.raises(ValueError):
        WorkerMemoryLimit(0)
