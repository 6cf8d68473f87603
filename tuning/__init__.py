"""The Tune side: what the driver hands Ray Tune. The Optuna searcher and the fixed-points searcher
(optuna_search), ASHA and FIFO (schedulers), the Optuna study's storage (study), the Tuner and its run
settings (tune_settings), the Ray cluster wiring (cluster), and the replay engine that drives the same
Tuner with recorded learning curves instead of training (replay; benchmarks use it).

Below the driver, above search_spaces and trainables (docs/design.md, "Layers").
"""

METRIC, MODE = "val_accuracy", "max"  # what ASHA, Optuna, the confirmation stage and the report rank by
