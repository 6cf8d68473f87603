"""The ASHA flags --grace-period, --reduction-factor, --brackets, --stop-on (driver.request.scheduler_settings;
no Ray run)."""

from __future__ import annotations

import pytest

import driver
import run_search
from driver.request import scheduler_settings
from search_spaces import SPACES
from search_spaces.base import SchedulerSettings


def settings(*flags: str, max_epochs: int = 27):
    request, _ = run_search.request_of(["--space", "basenet", *flags])
    return scheduler_settings(request, SPACES["basenet"], max_epochs)


def test_flags_reach_the_settings_and_defaults_are_the_spaces():
    assert settings() == SPACES["basenet"].scheduler
    assert settings(
        "--grace-period", "3", "--reduction-factor", "2", "--brackets", "2", "--stop-on", "ema"
    ) == SchedulerSettings(3, 2, 2, "ema")


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--scheduler", "fifo", "--grace-period", "2"], "--grace-period set ASHA's rungs; with --scheduler fifo"),
        (["--grace-period", "30"], "grace_period 30 is more than the full budget of 27 epochs"),
        (["--brackets", "9"], "brackets 9"),
        (["--reduction-factor", "1"], "reduction_factor must be >= 2"),
    ],
)
def test_bad_scheduler_flags_are_usage_errors(flags, message):
    with pytest.raises(driver.UsageError, match=message):
        settings(*flags)


def test_bad_flags_exit_2_with_one_line(capsys):
    code = run_search.main(["--space", "basenet", "--dataset", "digits", "--grace-period", "0"])
    err = capsys.readouterr().err
    assert code == driver.EXIT_USAGE and "grace_period must be >= 1" in err and len(err.strip().splitlines()) == 1
