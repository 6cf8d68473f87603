"""--mlflow-uri URI: every trial as an MLflow run, through Ray Tune's own MLflowLoggerCallback.

Tune's callback logs a trial's config as params when it starts and each result as metrics. Three things
differ here, each for a reason:
- metrics are logged at step = epoch (the trainable's epoch count, ASHA's time unit and the tables' row),
  not Tune's training_iteration, which a trial restored from a checkpoint counts differently;
- params are logged once per run: MLflow refuses a param logged again with another value, and a trial that
  population-based training perturbed restarts with a changed config (its epochs carry the values in
  force, as metrics `config/<knob>`, and the tables as `set_<knob>`);
- a run is tagged with the experiment, the phase and the trial id, and a trial that starts again after a
  driver's --resume continues its run (found by those tags) instead of opening a second one.

Module-level, so the Tuner's pickle (tuner.pkl, which --resume unpickles) names this class.
"""

from __future__ import annotations

from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback

from tuning.schedulers import TIME_ATTR


class TrialRunsLogger(MLflowLoggerCallback):
    """One MLflow run per Tune trial, in the MLflow experiment named like the harness's experiment."""

    def __init__(self, tracking_uri: str, *, experiment: str, phase: str) -> None:
        super().__init__(tracking_uri, experiment_name=experiment, tags={"experiment": experiment, "phase": phase})

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_runs:
            return  # a restart (a retry, a perturbation): its run and params are there already
        found = self._existing_run(trial.trial_id)
        if found is not None:
            self._trial_runs[trial] = found
            return
        base = self.tags or {}
        self.tags = {**base, "trial_id": trial.trial_id}
        try:
            super().log_trial_start(trial)
        finally:
            self.tags = base

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        step = result.get(TIME_ATTR)
        if step is None:  # a report without an epoch (an out-of-memory error): no point on a curve
            return
        self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=result, step=int(step))

    def _existing_run(self, trial_id: str) -> str | None:
        """The run an earlier driver opened for this trial (tags experiment, phase, trial id), if any."""
        client = self.mlflow_util._mlflow.tracking.MlflowClient(self.tracking_uri)
        filters = " and ".join(f"tags.{k} = '{v}'" for k, v in {**(self.tags or {}), "trial_id": trial_id}.items())
        runs = client.search_runs([self.mlflow_util.experiment_id], filter_string=filters, max_results=1)
        return runs[0].info.run_id if runs else None
