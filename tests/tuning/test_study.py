"""tuning.study: a resumed journal whose last line a full disk cut short is read again by Optuna."""

import json

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from experiment import folder
from tuning import study as study_module


def journal_with_trials(path, n: int) -> bytes:
    s = optuna.create_study(study_name="x", storage=JournalStorage(JournalFileBackend(str(path))))
    for i in range(n):
        s.tell(s.ask(), float(i))
    return path.read_bytes()


def test_a_cut_last_line_is_dropped_and_the_study_reads_after_the_next_append(tmp_path):
    path = tmp_path / "optuna.journal"
    whole = journal_with_trials(path, 3)
    with open(path, "ab") as f:  # what a full disk left of the next append
        f.write(b'{"op_code":5,"worker_id":"w","trial_id":3,"sta')
    assert study_module.drop_cut_short_line(str(path)) == 46
    assert path.read_bytes() == whole
    assert study_module.drop_cut_short_line(str(path)) == 0  # a whole journal is left alone
    s = optuna.load_study(study_name="x", storage=JournalStorage(JournalFileBackend(str(path))))
    s.tell(s.ask(), 9.0)  # the next append, after the line that was whole
    again = optuna.load_study(study_name="x", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [t.value for t in again.trials] == [0.0, 1.0, 2.0, 9.0]


def test_without_the_repair_the_next_append_breaks_every_read(tmp_path):
    # Why the repair exists (Optuna 5.1's JournalFileBackend): the cut line glued to the next one.
    path = tmp_path / "optuna.journal"
    lines = journal_with_trials(path, 1).count(b"\n")
    with open(path, "ab") as f:
        f.write(b'{"op_code":5,"worker_id":"w","trial_id":1,"sta')
    assert len(list(JournalFileBackend(str(path)).read_logs(0))) == lines  # the cut last line skipped
    for _ in range(2):  # the glued line is skipped while it is the last one, and breaks reads once followed
        JournalFileBackend(str(path)).append_logs([{"op_code": 4, "worker_id": "w", "study_id": 0}])
    with pytest.raises(json.JSONDecodeError):
        list(JournalFileBackend(str(path)).read_logs(0))


@pytest.mark.parametrize("resume", [True, False])
def test_a_resuming_driver_repairs_the_experiments_journal(tmp_path, capsys, resume):
    exp = folder.locate(str(tmp_path), "x")
    (tmp_path / "x").mkdir()
    path = tmp_path / "x" / "optuna.journal"
    whole = journal_with_trials(path, 2)
    with open(path, "ab") as f:
        f.write(b'{"op_code":5')
    study_module.open_study(exp, None, resume=resume)
    assert (path.read_bytes() == whole) is resume  # a new experiment's journal is not the driver's to touch
    assert ("dropped a last line cut short after 12 bytes" in capsys.readouterr().out) is resume


def test_a_journal_without_any_newline_is_emptied_and_a_missing_one_is_left_missing(tmp_path):
    path = tmp_path / "optuna.journal"
    path.write_bytes(b"x" * 70_000)  # longer than one backward read
    assert study_module.drop_cut_short_line(str(path)) == 70_000 and path.read_bytes() == b""
    assert study_module.drop_cut_short_line(str(tmp_path / "none")) == 0 and not (tmp_path / "none").exists()
