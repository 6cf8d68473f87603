"""The report of an experiment: `report/summary.parquet`, `report/report.md` and PNG figures.

Reads only `tables/trials.parquet` and `tables/epochs.parquet` (local folder or s3:// / gs:// URI);
imports neither Ray nor TensorFlow. `python -m analysis EXPERIMENT_DIR` runs it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import against as against_reference
from analysis import knob_changes, pareto, questions, rungs, sequential, stats, summary, tables
from experiment import storage
from trainables import registry

REPORT_DIR = "report"
EXIT_OK, EXIT_USAGE = 0, 2
TOP = 10  # rows of each table in report.md; the summary keeps them all
FIGURES = {  # file -> what it shows (the report's captions)
    "study_questions.png": "The study's questions: each level over seeds, and the seed-paired differences",
    "verdict_over_epochs.png": "The study's questions over the budget: seed-paired differences of validation "
    "accuracy at every epoch",
    "learning_curves.png": "Learning curves of the best-ranked trials (train dashed, validation solid)",
    "best_configs.png": "The best configurations with their 95 % intervals",
    "paired_differences.png": "Seed-paired differences between levels of each knob",
    "knob_effects.png": "Each knob's effect at matched budget",
    "asha_rungs.png": "Where ASHA stopped trials, and each trial's validation curve",
    "parallel_coordinates.png": "The search in parallel coordinates",
    "pareto_front.png": "Accuracy against each cost objective; the Pareto front highlighted",
}
PARETO_TABLE = "pareto.parquet"
AGAINST_TABLE = "against.parquet"


class BadInput(Exception):
    """An experiment folder that cannot be reported: one line, exit 2."""


def read_tables(experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    fs, root = storage.resolve(experiment)
    if not storage.exists(fs, root):
        raise BadInput(
            f"{experiment}: no such experiment folder; pass the folder run_search.py wrote (<storage-path>/<name>)"
        )
    out = []
    for name in ("trials", "epochs"):
        path = storage.join(root, "tables", f"{name}.parquet")
        if not storage.exists(fs, path):
            raise BadInput(
                f"{experiment}: no tables/{name}.parquet; rebuild the tables from the trial "
                "folders with --rebuild-tables"
            )
        try:
            out.append(pq.read_table(path, filesystem=fs).to_pandas())
        except (pa.ArrowInvalid, OSError) as e:
            raise BadInput(
                f"{experiment}: cannot read tables/{name}.parquet ({_one_line(e)}); rebuild it with --rebuild-tables"
            ) from None
    missing = [
        c
        for c in (
            "trial_id",
            "phase",
            "status",
            "epochs_completed",
            "best_val_accuracy",
            "test_accuracy",
            "max_epochs",
            "seed",
        )
        if c not in out[0]
    ]
    if missing:
        raise BadInput(f"{experiment}: tables/trials.parquet lacks columns {missing}; rebuild it with --rebuild-tables")
    return out[0], out[1]


def build_report(experiment: str, rebuild_tables: bool = False, against: Sequence[str] = ()) -> dict[str, Any]:
    """Write the report of an experiment; return {'summary': DataFrame, 'files': [paths written],
    'against': analysis.against.Comparison or None}. `against`: reference experiment folders; the
    best confirmed configuration is compared with the best of their cells of its model, paired by seed,
    in the report's first lines and report/against.parquet."""
    from analysis import plots  # matplotlib only when figures are drawn

    if rebuild_tables:
        try:
            tables.export_tables(experiment)
        except FileNotFoundError as e:
            raise BadInput(_one_line(e)) from None
    trials, epochs = read_tables(experiment)
    references = [read_tables(ref)[0] for ref in against]
    comparison = against_reference.compare(trials, pd.concat(references, ignore_index=True) if references else None)
    meta = _meta(experiment)
    # A plugin's knobs are columns too: declare them from the record, so the answers treat them as
    # knobs without importing the plugin (or TensorFlow) here.
    registry.declare_recorded(meta.get("plugin_declarations"))
    scheduler = rungs.settings_from_meta(meta)
    design = sequential.design_from_meta(meta)
    summary_table = summary.build_summary(trials, epochs, scheduler, design)
    summary_df = summary_table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)  # ranks stay ints
    fs, root = storage.resolve(experiment)
    folder = storage.join(root, REPORT_DIR)
    fs.create_dir(folder, recursive=True)
    written = []
    tables.write_table(summary_table, fs, storage.join(folder, "summary.parquet"))
    written.append(storage.join(folder, "summary.parquet"))
    ranked = summary.ranking(trials)
    goals = pareto.objectives_from_meta(meta)
    front = pareto.pareto_front(trials, goals) if len(goals) > 1 else None
    pool = pareto.candidates(trials, goals)
    written += write_pareto_table(front, fs, storage.join(folder, PARETO_TABLE))
    written += write_against_table(comparison if against else None, fs, storage.join(folder, AGAINST_TABLE))
    figures = {
        "study_questions.png": lambda: plots.study_questions(summary_df),
        "verdict_over_epochs.png": lambda: plots.verdict_over_epochs(summary_df),
        "learning_curves.png": lambda: plots.learning_curves(ranked, epochs),
        "best_configs.png": lambda: plots.best_configs(summary_df),
        "paired_differences.png": lambda: plots.paired_differences(summary_df),
        "knob_effects.png": lambda: plots.knob_effects(trials, epochs),
        "asha_rungs.png": lambda: plots.asha_rungs(trials, epochs),
        "parallel_coordinates.png": lambda: plots.parallel_coordinates(trials),
        "pareto_front.png": lambda: None if front is None else plots.pareto(pool, front, goals),
    }
    drawn = []
    for name, draw in figures.items():
        path = storage.join(folder, name)
        fig = draw()
        if fig is None:
            if storage.exists(fs, path):
                fs.delete_file(path)  # a figure from an earlier report that no longer applies
            continue
        plots.save(fig, fs, path)
        drawn.append(name)
        written.append(path)
    md = markdown(
        experiment,
        trials,
        summary_df,
        drawn,
        rungs.rung_markdown(trials, epochs, scheduler),
        pareto_markdown(front, goals, len(pool)) if front is not None else "",
        ([] if comparison is None else comparison.lines()) + race_lines(design),
        knob_changes.schedule_markdown(epochs),
    )
    storage.write_text(fs, storage.join(folder, "report.md"), md)
    written.append(storage.join(folder, "report.md"))
    return {"summary": summary_df, "files": written, "folder": folder, "against": comparison}


def race_lines(design: sequential.Design) -> list[str]:
    """For a race (--repeats auto): how its seeds were chosen, so the n columns read as what each needed."""
    if not design.raced:
        return []
    return [
        f"Seeds were raced (`--repeats auto`, {design.min_repeats} to {design.max_repeats} per cell or "
        f"configuration, resolution {_points_text(design.resolution)}): another seed only while a comparison "
        f"it is part of was open; comparisons are corrected for the race's {design.looks} looks "
        '(analysis/README.md, "Racing repeats"). The `n` columns are the seeds each needed.'
    ]


def write_against_table(comparison: against_reference.Comparison | None, fs: Any, path: str) -> list[str]:
    """report/against.parquet: one row, the tuned-vs-reference comparison; removed when the report is
    written without --against, so a stale comparison never outlives its inputs."""
    if comparison is None:
        if storage.exists(fs, path):
            fs.delete_file(path)
        return []
    tables.write_table(pa.Table.from_pylist([comparison.row()], schema=AGAINST_SCHEMA), fs, path)
    return [path]


_TEXT, _REAL = pa.string(), pa.float64()
AGAINST_SCHEMA = pa.schema(
    [(k, _TEXT) for k in ("model", "tuned_config", "tuned_seeds")]
    + [(k, _REAL) for k in ("tuned_test_accuracy", "tuned_ci_low", "tuned_ci_high")]
    + [(k, _TEXT) for k in ("reference_cell", "reference_seeds")]
    + [(k, _REAL) for k in ("reference_test_accuracy", "reference_ci_low", "reference_ci_high")]
    + [("paired_seeds", _TEXT)]
    + [(k, _REAL) for k in ("difference", "diff_ci_low", "diff_ci_high", "p_value")]
)


def write_pareto_table(front: pd.DataFrame | None, fs: Any, path: str) -> list[str]:
    """report/pareto.parquet for a search with several objectives; a stale one is removed otherwise."""
    if front is None:
        if storage.exists(fs, path):
            fs.delete_file(path)
        return []
    tables.write_table(pa.Table.from_pandas(front, preserve_index=False), fs, path)
    return [path]


# ---------------------------------------------------------------- report.md


def _fmt(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and stats.null(value) is None):
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def md_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_none_\n"
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(_fmt(v) for v in row) + " |\n" for row in df.itertuples(index=False))


def question_section(s: pd.DataFrame) -> list[str]:
    """The reference study's questions, first, in their own words (analysis.questions); [] when the
    experiment holds no two levels of either question."""
    q = s[s["kind"] == "question"]
    if q.empty:
        return []
    out = [
        "## The study's questions\n",
        "Test accuracy of full-budget runs over seeds (95 % t-interval); differences paired by seed, "
        "paired t-test, Holm-corrected within each question" + _design_text(q) + ". Each comparison is "
        "settled (one level better, or no difference larger than the resolution) or open; an open one "
        "names the smallest difference its seeds could detect.\n",
    ]
    for text in dict.fromkeys(q["question"]):
        rows = q[q["question"] == text]
        levels = rows[rows["level_b"].isna()].sort_values("rank")
        pairs = rows[rows["level_b"].notna()]
        out.append(f"### {text}\n")
        out.append(questions.answer(s, text) + "\n")
        out.append(
            md_table(
                levels[["rank", "level", "n", "value", "std", "ci_low", "ci_high", "note"]].rename(
                    columns={
                        "level": rows["knob"].iloc[0],
                        "value": "mean test acc.",
                        "ci_low": "95% CI low",
                        "ci_high": "95% CI high",
                        "note": "seeds",
                    }
                )
            )
        )
        out.extend(f"- {v}" for v in pairs["verdict"])
        out.append("")
        budget = [t for t in pairs.get("over_epochs", pd.Series(dtype=str)) if isinstance(t, str) and t]
        if budget:
            out.append("Over the budget (seed-paired validation accuracy at every epoch):\n")
            out.extend(f"- {t}" for t in budget)
            out.append("")
    out.append("![The study's questions](study_questions.png)\n")
    if (s["kind"] == "question_epoch").any():
        out.append("![The study's questions over the budget](verdict_over_epochs.png)\n")
    return out


def _design_text(rows: pd.DataFrame) -> str:
    """How the comparisons were corrected: over a race's looks, and at which resolution."""
    looks = rows["looks"].dropna() if "looks" in rows else pd.Series(dtype=float)
    res = rows["resolution"].dropna() if "resolution" in rows else pd.Series(dtype=float)
    text = f" and Bonferroni over the race's {int(looks.max())} looks" if len(looks) and looks.max() > 1 else ""
    return text + (f"; resolution {_points_text(float(res.iloc[0]))}" if len(res) else "")


def _points_text(accuracy: float) -> str:
    points = 100 * accuracy
    return f"{points:g} point" + ("" if points == 1 else "s")


def _meta(experiment: str) -> dict[str, Any]:
    """experiment.json, or {} when it is missing or unreadable (the tables alone still make a report)."""
    fs, root = storage.resolve(experiment)
    path = storage.join(root, storage.EXPERIMENT_FILE)
    try:
        return storage.read_json(fs, path) if storage.exists(fs, path) else {}
    except (OSError, ValueError):
        return {}


def pareto_markdown(front: pd.DataFrame, goals: pareto.Objectives, n_candidates: int) -> str:
    names = ", ".join(f"`{c}` ({'higher' if m == 'max' else 'lower'} is better)" for c, m in goals)
    return "\n".join(
        [
            "## Pareto front\n",
            f"Objectives: {names}. Of the {n_candidates} search trials that reached the full budget without "
            f"error, {len(front)} are dominated by no other (none is as good on every objective and "
            "better on one); trials stopped early are left out (lower fidelity). Where the confirmation stage "
            "retrained a configuration, `confirm_*` is its test accuracy over the new seeds (mean, 95 % "
            f"t-interval). Also in `{PARETO_TABLE}`.\n",
            md_table(front.drop(columns=["config_id"])),
        ]
    )


def markdown(
    experiment: str,
    trials: pd.DataFrame,
    s: pd.DataFrame,
    drawn: Sequence[str],
    rung_section: str = "",
    pareto_section: str = "",
    headline: Sequence[str] = (),
    schedule_section: str = "",
) -> str:
    name = trials["experiment"].iloc[0] if len(trials) and "experiment" in trials else experiment
    counts = ", ".join(f"{n} {st}" for st, n in trials["status"].value_counts().items())
    phases = ", ".join(f"{n} {ph}" for ph, n in trials["phase"].value_counts().items())
    out = [
        f"# Report: {name}\n",
        f"{len(trials)} trials ({counts}; {phases}); full budget "
        f"{_fmt(trials['max_epochs'].max() if len(trials) else None)} epochs. "
        f"Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC from `tables/*.parquet`; every number "
        "below is a row of `summary.parquet` (column docs in its Parquet field metadata).\n",
    ]
    out.extend(f"{line}\n" for line in headline)

    out.extend(question_section(s))
    out.append("## Answer: paired-by-seed comparisons\n")
    paired = s[(s["kind"] == "paired") & (s["metric"] == "test_accuracy")]
    if paired.empty and (s["kind"] == "config").any():
        out.append(
            "Configurations were repeated, but no two of them differ in one knob alone, so no "
            "difference between levels can be paired by seed. Repeat configurations that differ "
            "only in the knob in question (e.g. a grid over it with `--repeats`).\n"
        )
    elif paired.empty:
        out.append(
            "No repeated runs, so no difference between levels can be put to a test. "
            "Re-run the best configurations with new seeds (`--repeats R --confirm-top K`).\n"
        )
    else:
        out.append(
            "Test accuracy of repeated full-budget runs; difference of two levels on runs that share "
            "the seed and every other knob; 95 % t-interval, paired t-test, Holm-corrected.\n"
        )
        out.extend(f"- {v}" for v in paired["verdict"])
        out.append("")

    conf = s[(s["kind"] == "config") & (s["metric"] == "test_accuracy")]
    out.append("## Best configurations over repeated runs\n")
    if conf.empty:
        out.append("_No configuration was run more than once._\n")
    else:
        out.append(
            md_table(
                conf.head(TOP)[["rank", "config", "n", "value", "std", "ci_low", "ci_high", "note"]].rename(
                    columns={
                        "value": "mean test acc.",
                        "ci_low": "95% CI low",
                        "ci_high": "95% CI high",
                        "note": "seeds",
                    }
                )
            )
        )

    if pareto_section:
        out.append(pareto_section)

    rank = s[s["kind"] == "ranking"]
    out.append("## Ranking at matched budget\n")
    out.append(
        "Trials ordered by the budget they reached, then by best validation accuracy: a trial ASHA "
        "stopped early never ranks above one that ran longer.\n"
    )
    out.append(
        md_table(
            rank.head(TOP)[["rank", "trial_id", "phase", "budget_epochs", "config", "value", "test_accuracy"]].rename(
                columns={"value": "best val. acc.", "budget_epochs": "epochs"}
            )
        )
    )

    marg = s[s["kind"] == "marginal"]
    out.append("## Knob levels at matched budget (search trials)\n")
    if marg.empty:
        out.append("_No knob with a few discrete levels varied._\n")
    else:
        out.append(
            f"Best validation accuracy by epoch {int(marg['budget_epochs'].iloc[0])}, other knobs varying "
            "freely (an association, not a paired test).\n"
        )
        out.append(
            md_table(
                marg[["knob", "level", "n", "value", "std", "ci_low", "ci_high"]].rename(
                    columns={"value": "mean", "ci_low": "95% CI low", "ci_high": "95% CI high"}
                )
            )
        )

    imp = s[s["kind"] == "importance"]
    out.append("## Knob importance\n")
    if imp.empty or imp["knob"].isna().all():
        out.append(f"_{imp['note'].iloc[0] if len(imp) else 'no importance computed'}._\n")
    else:
        out.append(f"{imp['note'].iloc[0]}.\n")
        out.append(md_table(imp[["rank", "knob", "value"]].rename(columns={"value": "importance"})))

    if rung_section:
        out.append(rung_section)

    if schedule_section:
        out.append(schedule_section)

    errors = trials[trials["status"] == "error"]
    if len(errors):
        out.append("## Failed trials\n")
        out.append(md_table(errors[["trial_id", "phase", "epochs_completed", "error"]]))

    if drawn:
        out.append("## Figures\n")
        out.extend(f"### {FIGURES[f]}\n\n![{FIGURES[f]}]({f})\n" for f in drawn)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- command line


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description=__doc__.split("\n\n")[0],
        epilog="Several experiments side by side: python -m analysis compare EXP_A EXP_B ... (see its --help).",
    )
    p.add_argument(
        "experiment",
        metavar="EXPERIMENT_DIR",
        help="experiment folder (<storage-path>/<name>), local path or s3:// / gs:// URI",
    )
    p.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REFERENCE_EXP",
        help="a reference experiment folder (repeatable): the report's first lines compare the best "
        "confirmed configuration with its best cell of the same model, paired by seed",
    )
    p.add_argument(
        "--rebuild-tables",
        action="store_true",
        help="first rebuild tables/*.parquet from the trial folders (after a crash or a resume)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = build_report(args.experiment, rebuild_tables=args.rebuild_tables, against=args.against)
    except BadInput as e:
        print(f"python -m analysis: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (pa.ArrowInvalid, OSError) as e:  # e.g. an unreachable bucket or a malformed URI
        print(f"python -m analysis: error: {args.experiment}: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    print(f"report: {result['folder']}/report.md ({len(result['files'])} files)")
    print("\n".join(answer_lines(result)))
    return EXIT_OK


def answer_lines(result: dict[str, Any]) -> list[str]:
    """The report's answers as lines for a terminal: the tuned-vs-reference comparison, each question of
    the study, each seed-paired verdict on test accuracy."""
    lines = [] if result["against"] is None else [f"  {line}".replace("**", "") for line in result["against"].lines()]
    s = result["summary"]
    lines += [
        f"  {q} {questions.answer(s, q)}".replace("**", "")
        for q in dict.fromkeys(s.query("kind == 'question'")["question"])
    ]
    lines += [f"  {v}" for v in s.query("kind == 'paired' and metric == 'test_accuracy'")["verdict"]]
    return lines
