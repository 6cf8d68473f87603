"""tuning.racing: the race searcher driven through Tune's Searcher API as Tune calls it (no Ray
runtime): rounds, seeds only where a comparison is open, save/restore mid-race, the confirmation race,
and the driver's check of a race Tune returned from early."""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import sequential
from search_spaces import SPACES
from tuning.racing import CONFIRM, GRID, RaceSearcher, confirm_race, grid_race, max_trials, search_incomplete

FIXED = {"dataset": "digits", "seed": 10, "max_epochs": 2}
BN = SPACES["reference"].cells({"model": "basenet"})  # none, before_relu, after_relu
DESIGN = sequential.race_design(3, 6, 1.0)


def bn_values(seed: int, bn: str) -> float:
    """after_relu far above the others on every seed; none and before_relu equal within 0.1 point:
    every comparison settles at the first look."""
    rng = np.random.default_rng(seed)
    return {"none": 0.5, "before_relu": 0.5005, "after_relu": 0.8}[bn] + float(rng.normal(0, 0.0005))


def noisy_before(seed: int, bn: str) -> float:
    """before_relu noisy against both others (open); none and after_relu settled against each other."""
    rng = np.random.default_rng(1000 + seed)
    return {"none": 0.5, "after_relu": 0.8}.get(bn, 0.6 + float(rng.normal(0, 0.2)))


def drive(
    s: RaceSearcher, value: Callable[[int, str], float], stop_after: int | None = None, start: int = 0
) -> list[dict]:
    """Tune's loop: ask until the searcher waits, then finish the running trials (each reports its last
    epoch to on_trial_result and on_trial_complete); until FINISHED or `stop_after` trials finished."""
    proposed: list[dict] = []
    running: dict[str, dict] = {}
    done, i = 0, start
    while True:
        config = s.suggest(f"t{i}")
        if config == RaceSearcher.FINISHED:
            assert not running
            return proposed
        if config is not None:
            running[f"t{i}"] = config
            proposed.append(config)
            i += 1
            continue
        assert running, "the searcher waits with nothing running"
        for tid, config in list(running.items()):
            result = {"epoch": 2, "val_accuracy": 0.4, "test_accuracy": value(config["seed"], config["bn_position"])}
            s.on_trial_result(tid, result)
            s.on_trial_complete(tid, result=result)
            del running[tid]
            done += 1
            if stop_after is not None and done >= stop_after:
                return proposed


def seeds_by_cell(proposed: list[dict]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for c in proposed:
        out.setdefault(c["bn_position"], []).append(c["seed"])
    return out


def test_a_grid_race_starts_every_cell_at_the_minimum_and_stops_when_settled() -> None:
    s = grid_race(BN, FIXED, DESIGN)
    assert max_trials(s) == 3 * 6
    first = [s.suggest(f"t{i}") for i in range(9)]
    assert [c["seed"] for c in first] == [10] * 3 + [11] * 3 + [12] * 3  # seed-major, from --seed
    assert [c["bn_position"] for c in first[:3]] == ["none", "before_relu", "after_relu"]
    assert s.suggest("t9") is None  # the round is out: wait for it
    for i, c in enumerate(first):
        s.on_trial_complete(f"t{i}", result={"test_accuracy": bn_values(c["seed"], c["bn_position"])})
    assert s.suggest("t9") == RaceSearcher.FINISHED
    assert s.seeds() == [3, 3, 3] and s.finished
    assert s.looks == ["race look at seeds [3]: 0 of 3 comparisons open"]


def test_only_cells_in_an_open_comparison_get_more_seeds() -> None:
    s = grid_race(BN, FIXED, DESIGN)
    proposed = drive(s, noisy_before)
    seeds = seeds_by_cell(proposed)
    # before_relu is in the two open comparisons: it and both partners race to the maximum ...
    assert seeds["before_relu"] == list(range(10, 16))
    assert seeds["none"] == seeds["after_relu"] == list(range(10, 16))
    # ... while a cell whose comparisons are all settled stops at the minimum: lr 0.02 equals lr 0.01 on
    # every seed (settled), none vs after_relu (lr 0.01) is noisy (open), and lr 0.02 vs none differ in two
    # knobs (no comparison).
    three = [{**BN[0], "bn_position": "none"}, BN[2], {**BN[2], "learning_rate": 0.02}]
    s2 = grid_race(three, FIXED, DESIGN)
    proposed2 = drive(s2, lambda seed, bn: bn_values(seed, bn) if bn == "none" else 0.6 + (seed % 2) * 0.2)
    lr = {(c["bn_position"], c["learning_rate"]): 0 for c in proposed2}
    for c in proposed2:
        lr[(c["bn_position"], c["learning_rate"])] += 1
    assert lr == {("none", 0.01): 6, ("after_relu", 0.01): 6, ("after_relu", 0.02): 3}
    assert len({(c["bn_position"], c["learning_rate"], c["seed"]) for c in proposed2}) == len(proposed2)


def test_a_restored_race_continues_without_proposing_a_seed_again(tmp_path: Any) -> None:
    """Tune's snapshot mid-round (trials running) and between rounds; the restored searcher ends with the
    seeds an uninterrupted race has, each proposed once."""
    whole = drive(grid_race(BN, FIXED, DESIGN), noisy_before)
    for stop_after in (4, 9, 11):
        s = grid_race(BN, FIXED, DESIGN)
        before = drive(s, noisy_before, stop_after=stop_after)
        folder = tmp_path / str(stop_after)
        folder.mkdir()
        s.save_to_dir(str(folder), session_str="x")
        restored = RaceSearcher()
        restored.restore_from_dir(str(folder))
        # Trials Tune had running come back to it: Tune finishes them (here: all still pending).
        for tid in sorted(restored._pending):
            arm, seed = restored._trials[tid]
            cfg = {**restored.arms[arm], "seed": restored.first_seed + seed}
            restored.on_trial_complete(tid, result={"test_accuracy": noisy_before(cfg["seed"], cfg["bn_position"])})
        after = drive(restored, noisy_before, start=1000)
        keys = [(c["bn_position"], c["seed"]) for c in before + after]
        assert len(keys) == len(set(keys)) == len(whole), stop_after
        assert sorted(keys) == sorted((c["bn_position"], c["seed"]) for c in whole)
        pickle.dumps(restored)


def test_errored_trials_leave_a_gap_and_the_race_goes_on() -> None:
    s = grid_race(BN, FIXED, DESIGN)
    configs = [s.suggest(f"t{i}") for i in range(9)]
    for i, c in enumerate(configs):
        if c["bn_position"] == "none" and c["seed"] == 10:
            s.on_trial_complete(f"t{i}", error=True)
        else:
            s.on_trial_complete(f"t{i}", result={"test_accuracy": noisy_before(c["seed"], c["bn_position"])})
    assert math.isnan(s._values[(0, 0)])
    assert s.suggest("t9") is not None  # the race decides on the seeds it has


def test_a_confirm_race_drops_a_clearly_worse_config_and_ends_with_one_or_at_the_maximum() -> None:
    base = {"model": "basenet", "optimizer": "adam", "max_epochs": 2, "patience": 0, "dataset": "digits"}
    configs = [{**base, "learning_rate": lr, "seed": 5} for lr in (0.001, 0.01, 0.1)]
    s = confirm_race(configs, DESIGN)
    assert s.kind == CONFIRM and s.first_seed == 5 and len(s.arms) == 3

    def val(seed: int, lr: float) -> float:  # 0.1 far behind; 0.001 and 0.01 close and noisy
        rng = np.random.default_rng(seed * 7 + int(lr * 1000))
        return {0.001: 0.80, 0.01: 0.81, 0.1: 0.30}[lr] + float(rng.normal(0, 0.01))

    counts: dict[float, int] = {}
    i = 0
    while (config := s.suggest(f"c{i}")) != RaceSearcher.FINISHED:
        if config is None:
            for tid in sorted(s._pending):
                arm, seed = s._trials[tid]
                lr = s.arms[arm]["learning_rate"]
                # The race compares best validation accuracy: the max over the epochs reported.
                s.on_trial_result(tid, {"epoch": 1, "val_accuracy": val(seed, lr) - 0.1})
                s.on_trial_complete(tid, result={"epoch": 2, "val_accuracy": val(seed, lr)})
            continue
        counts[config["learning_rate"]] = counts.get(config["learning_rate"], 0) + 1
        i += 1
    assert counts[0.1] < counts[0.01] == counts[0.001] == 6  # dropped early; the close two to the maximum
    assert s._alive == [True, True, False]
    assert any("dropped config(s) 3" in line for line in s.looks)


@dataclasses.dataclass
class FakeResult:
    config: dict
    metrics: dict
    error: Any = None
    metrics_dataframe: pd.DataFrame | None = None


class FakeGrid(list):
    """What the driver's check reads of Tune's ResultGrid."""

    def __init__(self, results: list[FakeResult], unfinished: int = 0) -> None:
        super().__init__(results)
        self.num_terminated = len(results) - unfinished
        self.num_errors = 0


def test_the_driver_can_tell_a_finished_race_from_one_tune_returned_from_early() -> None:
    s = grid_race(BN, FIXED, DESIGN)
    proposed = drive(s, noisy_before)
    grid = FakeGrid([FakeResult(c, {"test_accuracy": noisy_before(c["seed"], c["bn_position"])}) for c in proposed])
    fresh = grid_race(BN, FIXED, DESIGN)  # the driver's Phase holds a fresh searcher of the same race
    assert search_incomplete(fresh, grid) is False
    cut = FakeGrid([r for r in grid if r.config["seed"] < 13])  # Ctrl-C between two rounds
    assert search_incomplete(fresh, cut) is True
    running = FakeGrid(list(grid), unfinished=1)
    assert search_incomplete(fresh, running) is True
    assert search_incomplete(object(), grid) is None  # not a race: the driver's own check applies
    settled = FakeGrid(
        [
            FakeResult({**c, "seed": 10 + s_}, {"test_accuracy": bn_values(10 + s_, c["bn_position"])})
            for c in grid_race(BN, FIXED, DESIGN).arms
            for s_ in range(3)
        ]
    )
    assert search_incomplete(fresh, settled) is False


def test_grid_is_the_default_kind_and_a_bare_searcher_unpickles() -> None:
    s = RaceSearcher()
    assert s.kind == GRID and s.arms == [] and pickle.loads(pickle.dumps(s)).design == s.design
    with pytest.raises(ValueError, match="--max-repeats"):
        sequential.race_design(3, 2, None)
