"""experiment.json as the driver records it: what the tables need (knob declarations of plugins
included) and everything --resume needs to rebuild the run with no other flags."""

from __future__ import annotations

from typing import Any

from analysis.tables import CONFIG_VERSION
from driver.request import Plan, Request
from driver.resume import RESUME_MAY_EXTEND
from experiment import folder
from experiment.folder import Experiment
from tuning import METRIC, MODE


def record(request: Request, p: Plan, exp: Experiment, gpus: float, argv: list[str], before: dict[str, Any]) -> None:
    """experiment.json: what the tables need (knob declarations of plugins included) and everything
    --resume needs to rebuild this run with no other flags (experiment.folder writes it)."""
    from trainables import registry
    from tuning import schedulers
    from tuning.study import JOURNAL_FILE

    if request.resume:
        # What an extension changed (more trials, a confirmation afresh) is what the next resume continues.
        args = {**before.get("args", {}), **{k: v for k, v in request.stored().items() if k in RESUME_MAY_EXTEND}}
        folder.note_resumed(exp, before, argv, {"args": args, "num_samples": p.num_samples})
        return
    folder.write_record(
        exp,
        {
            "space": p.space.name,
            "dataset": p.dataset,
            "max_epochs": p.max_epochs,
            "num_samples": p.num_samples,
            "seed": request.seed,
            "scheduler": request.scheduler,
            "search": request.search,
            "cpus_per_trial": request.cpus_per_trial,
            "gpus_per_trial": gpus,
            "argv": argv,
            "scheduler_settings": schedulers.record(
                request.scheduler,
                p.asha,
                p.max_epochs,
                METRIC,
                MODE,
                space=p.space,
                perturbation_interval=request.perturbation_interval,
            ),
            "objectives": [{"metric": m, "mode": d} for m, d in p.objectives],
            "optuna_study": None
            if request.search == "grid" or request.scheduler == "pbt"
            else {"name": exp.name, "storage": request.optuna_storage or JOURNAL_FILE},
            "config_version": CONFIG_VERSION,  # which defaults a params.json without a knob means
            "plugins": list(request.plugin),
            "plugin_declarations": registry.plugin_declarations(),
            "args": request.stored(),
        },
    )
