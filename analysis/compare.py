"""`python -m analysis compare EXP_A EXP_B ...`: do the answers of one experiment hold in the others?

Reads each experiment's `report/summary.parquet` (written by `python -m analysis EXP`) and lines up
the comparisons they share: the study's questions (`question` rows: two levels of the question's knob,
seed-paired test accuracy) and every paired comparison (`paired` rows: two levels of a knob, one
metric). A comparison is keyed by (kind, question or knob, metric, the two levels); experiments that
list the levels the other way round are flipped onto the first one's order.

Each experiment's outcome for a comparison is the verdict the report gave it, in the three outcomes of
analysis.sequential: `A` (the first level is better: Holm-adjusted p < 0.05), `B` (the second is),
`equivalent` (no difference larger than the experiment's resolution: its TOST interval lies inside it)
or `open` (neither, fewer than two seed pairs included: "no difference detected" alone settles
nothing). Summaries written before the outcomes existed (schema 2) are read as A / B by the same rule,
else open. Across experiments the answer is `held` only when every experiment that has the comparison
gave the same settled outcome (the same winner, or equivalent everywhere), `flipped` when one says A and
another B, `open` when the answer is unsettled in any experiment, `differs` otherwise (a winner in one,
equivalent in another), and `only one` when a single experiment has it.

Writes, under `--out` (default `<first experiment's parent>/compare-<A>-vs-<B>...`):
`compare.parquet` (one row per comparison and experiment, columns documented in COMPARE_COLUMNS and
in the Parquet field metadata), `compare.md` (one table per kind, experiments side by side) and
`compare.png` (per comparison, each experiment's difference with its 95 % interval: the questions,
then paired test-accuracy comparisons that no question already shows).
"""

from __future__ import annotations

import argparse
import math
import posixpath
import sys
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import stats, tables
from experiment import storage

EXIT_OK, EXIT_USAGE = 0, 2
HELD, FLIPPED, DIFFERS, OPEN, ONLY_ONE = "held", "flipped", "differs", "open", "only one"
EQUIVALENT = "equivalent"
SCHEMA_VERSION = "3"  # 3: three outcomes (A, B, equivalent, open), `open` answers, mdd and equivalence_bound
KEY = ["kind", "subject", "metric", "level", "level_b"]

COMPARE_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    (
        "kind",
        pa.string(),
        "'question' (the study's questions, analysis.questions) or 'paired' (two levels of any knob, analysis.summary)",
    ),
    ("subject", pa.string(), "question rows: the question in its words; paired rows: the knob"),
    ("knob", pa.string(), "the knob whose two levels are compared"),
    ("metric", pa.string(), "what is compared: 'test_accuracy' or 'best_val_accuracy'"),
    ("level", pa.string(), "first level: the difference is level - level_b"),
    ("level_b", pa.string(), "second level"),
    ("experiment", pa.string(), "the experiment folder as given on the command line"),
    ("n", pa.int64(), "seed-paired differences the experiment's row rests on"),
    ("value", pa.float64(), "mean difference level - level_b"),
    ("ci_low", pa.float64(), "lower end of its 95 % t-interval"),
    ("ci_high", pa.float64(), "upper end of its 95 % t-interval"),
    ("p_holm", pa.float64(), "Holm-adjusted p-value, as the experiment's report adjusted it"),
    ("mdd", pa.float64(), "minimum detectable difference at the experiment's seed pairs (power 0.8)"),
    ("equivalence_bound", pa.float64(), "the experiment's data support |difference| < this (TOST)"),
    (
        "outcome",
        pa.string(),
        "'A' (level is better), 'B' (level_b is better), 'equivalent' (no difference larger than the "
        "experiment's resolution) or 'open' (unsettled, or n < 2)",
    ),
    ("verdict", pa.string(), "the experiment's report line for this comparison"),
    (
        "held",
        pa.string(),
        "across experiments: 'held' (the same settled outcome everywhere), 'flipped' (A in one, B in "
        "another), 'open' (unsettled in some experiment), 'differs' (a winner in one, equivalent in "
        "another) or 'only one'",
    ),
]
COMPARE_SCHEMA = pa.schema(
    [pa.field(n, t, metadata={"doc": d}) for n, t, d in COMPARE_COLUMNS],
    metadata={"schema_version": SCHEMA_VERSION, "table": "compare"},
)


class BadInput(Exception):
    """An experiment that cannot be compared: one line, exit 2."""


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def read_summary(experiment: str) -> pd.DataFrame:
    fs, root = storage.resolve(experiment)
    path = storage.join(root, "report", "summary.parquet")
    if not storage.exists(fs, root):
        raise BadInput(
            f"{experiment}: no such experiment folder; pass folders run_search.py wrote (<storage-path>/<name>)"
        )
    if not storage.exists(fs, path):
        raise BadInput(
            f"{experiment}: no report/summary.parquet; write it first with `python -m analysis {experiment}`"
        )
    try:
        return pq.read_table(path, filesystem=fs).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise BadInput(
            f"{experiment}: cannot read report/summary.parquet ({_one_line(e)}); rewrite it with "
            f"`python -m analysis {experiment}`"
        ) from None


def _nan(x: Any) -> float:
    return math.nan if x is None or x is pd.NA or pd.isna(x) else float(x)


def outcome(n: int, value: float, ci_low: float, ci_high: float, p_holm: float, settled: Any = None) -> str:
    """The experiment's verdict as A / B / equivalent / open. `settled`: the summary's `outcome`
    (analysis.sequential), absent from summaries of schema 2, which can then only say A / B or open."""
    if n < 2 or not math.isfinite(value):
        return OPEN
    if isinstance(settled, str) and settled:
        return {"better": "A" if value >= 0 else "B", EQUIVALENT: EQUIVALENT}.get(settled, OPEN)
    excludes_zero = ci_low > 0 or ci_high < 0
    if math.isfinite(p_holm) and p_holm < stats.ALPHA and excludes_zero:
        return "A" if value >= 0 else "B"
    return OPEN


def comparisons(summary: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The two-level comparisons of one experiment's summary, one row each."""
    if "kind" not in summary:
        raise BadInput(
            f"{experiment}: report/summary.parquet has no `kind` column; rewrite it with "
            f"`python -m analysis {experiment}`"
        )
    rows = summary[summary["kind"].isin(("question", "paired")) & summary["level_b"].notna()]
    out = []
    for r in rows.to_dict("records"):
        n = 0 if pd.isna(r.get("n")) else int(r["n"])
        value, lo, hi, p = (_nan(r.get(k)) for k in ("value", "ci_low", "ci_high", "p_holm"))
        settled = r.get("outcome")
        out.append(
            {
                "kind": r["kind"],
                "subject": r["question"] if r["kind"] == "question" else r["knob"],
                "knob": r["knob"],
                "metric": r["metric"],
                "level": r["level"],
                "level_b": r["level_b"],
                "experiment": experiment,
                "n": n,
                "value": value,
                "ci_low": lo,
                "ci_high": hi,
                "p_holm": p,
                "mdd": _nan(r.get("mdd")),
                "equivalence_bound": _nan(r.get("equivalence_bound")),
                "outcome": outcome(n, value, lo, hi, p, settled if isinstance(settled, str) else None),
                "verdict": r.get("verdict"),
            }
        )
    return pd.DataFrame(out, columns=[c for c, *_ in COMPARE_COLUMNS if c != "held"])


def _align(df: pd.DataFrame) -> pd.DataFrame:
    """Put every experiment's comparison in the level order the first experiment used."""
    seen: dict[tuple, tuple[str, str]] = {}
    rows = []
    for r in df.to_dict("records"):
        pair = (r["kind"], r["subject"], r["metric"], frozenset((r["level"], r["level_b"])))
        order = seen.setdefault(pair, (r["level"], r["level_b"]))
        if (r["level"], r["level_b"]) != order:
            r.update(
                level=order[0],
                level_b=order[1],
                value=-r["value"],
                ci_low=-r["ci_high"],
                ci_high=-r["ci_low"],
                outcome={"A": "B", "B": "A"}.get(r["outcome"], r["outcome"]),
            )
        rows.append(r)
    return pd.DataFrame(rows, columns=df.columns)


def held(outcomes: Sequence[str]) -> str:
    """Across experiments: flipped (opposite winners) first, then open (unsettled anywhere), held (one
    settled outcome everywhere), differs (a winner in one, equivalent in another)."""
    if len(outcomes) < 2:
        return ONLY_ONE
    found = set(outcomes)
    if {"A", "B"} <= found:
        return FLIPPED
    if OPEN in found:
        return OPEN
    return HELD if len(found) == 1 else DIFFERS


def compare_table(experiments: Sequence[str]) -> pd.DataFrame:
    """One row per comparison and experiment, with whether the answer held (module docstring)."""
    parts = [comparisons(read_summary(exp), exp) for exp in experiments]
    df = _align(pd.concat(parts, ignore_index=True)) if any(len(p) for p in parts) else parts[0]
    if df.empty:
        raise BadInput(
            f"none of {', '.join(experiments)} has a question or paired comparison (repeated "
            "runs over seeds, e.g. --search grid --repeats 3, or --confirm-top K --repeats R)"
        )
    df["held"] = df.groupby(KEY, sort=False)["outcome"].transform(lambda s: held(list(s)))
    order = {e: i for i, e in enumerate(experiments)}
    df["_kind"] = df["kind"].map({"question": 0, "paired": 1})
    df["_exp"] = df["experiment"].map(order)
    df["_first"] = df.groupby(KEY, sort=False).ngroup()  # first appearance, i.e. the report's order
    return (
        df.sort_values(["_kind", "metric", "_first", "_exp"], ascending=[True, False, True, True], kind="stable")
        .drop(columns=["_kind", "_exp", "_first"])
        .reset_index(drop=True)
    )


# ---------------------------------------------------------------- compare.md and compare.png


def _cell(r: pd.Series) -> str:
    if r["n"] < 2:
        return f"open: too few (n={r['n']})"
    bound = "" if math.isnan(r["equivalence_bound"]) else f" +-{stats.points(r['equivalence_bound'])}"
    mdd = "" if math.isnan(r["mdd"]) else f", MDD {stats.points(r['mdd'])}"
    mark = {
        "A": f"{r['level']} wins",
        "B": f"{r['level_b']} wins",
        EQUIVALENT: f"equivalent (within{bound})",
        OPEN: f"open (within{bound} only{mdd})",
    }[r["outcome"]]
    interval = "" if math.isnan(r["ci_low"]) else f" [{stats.points(r['ci_low'])}, {stats.points(r['ci_high'])}]"
    return f"{stats.points(r['value'])}{interval}, n={r['n']}: {mark}"


def _names(experiments: Sequence[str]) -> list[str]:
    return [posixpath.basename(str(e).rstrip("/")) or str(e) for e in experiments]


def markdown(df: pd.DataFrame, experiments: Sequence[str]) -> str:
    names = _names(experiments)
    out = [
        "# Comparison of experiments\n",
        "Experiments: " + ", ".join(f"`{e}`" for e in experiments) + ".\n",
        "Each cell: difference first level - second level in accuracy points, its 95 % interval, the "
        "seed pairs, and the experiment's verdict: a winner (Holm-adjusted p < 0.05), equivalent (no "
        "difference larger than the experiment's resolution; the bound its data support) or open (with "
        "the minimum detectable difference, MDD, of its seeds). **held**: the same settled verdict in "
        "every experiment; **flipped**: opposite winners; **open**: unsettled in some experiment; "
        "**differs**: a winner in one, equivalent in another.\n",
    ]
    sections = [("question", "The study's questions"), ("paired", "Paired comparisons of knob levels")]
    for kind, title in sections:
        part = df[df["kind"] == kind]
        if part.empty:
            continue
        out.append(f"## {title}\n")
        for metric in dict.fromkeys(part["metric"]):
            rows = part[part["metric"] == metric]
            out.append(f"### {metric}\n")
            head = ["question" if kind == "question" else "knob", "comparison", *names, "answer"]
            out.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
            for _key, g in rows.groupby(KEY, sort=False):
                first = g.iloc[0]
                cells = {r["experiment"]: _cell(r) for _, r in g.iterrows()}
                line = [
                    first["subject"],
                    f"{first['level']} - {first['level_b']}",
                    *(cells.get(e, "absent") for e in experiments),
                    f"**{first['held']}**",
                ]
                out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in line) + " |")
            out.append("")
    counts = df.drop_duplicates(KEY)["held"].value_counts()
    out.append("## In short\n")
    out.append(", ".join(f"{int(counts.get(h, 0))} {h}" for h in (HELD, FLIPPED, OPEN, DIFFERS, ONLY_ONE)) + ".\n")
    out.append("![each experiment's difference with its 95 % interval](compare.png)\n")
    return "\n".join(out) + "\n"


def figure_rows(df: pd.DataFrame) -> pd.DataFrame:
    """What the figure draws: the questions, then the paired test-accuracy comparisons that no question
    already shows (the table keeps every row)."""
    questions = df[df["kind"] == "question"]
    asked = set(zip(questions["knob"], questions["metric"], questions["level"], questions["level_b"], strict=True))
    paired = df[(df["kind"] == "paired") & (df["metric"] == "test_accuracy")]
    fresh = [
        (k, m, a, b) not in asked
        for k, m, a, b in zip(paired["knob"], paired["metric"], paired["level"], paired["level_b"], strict=True)
    ]
    return pd.concat([questions, paired[fresh]])


HELD_COLORS = {HELD: "black", FLIPPED: "tab:red", DIFFERS: "tab:orange", OPEN: "tab:purple", ONLY_ONE: "0.5"}


def figure(df: pd.DataFrame, experiments: Sequence[str]):  # noqa: ANN201 - matplotlib Figure
    """A forest plot: per comparison (one band), each experiment's difference and 95 % interval."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(figure_rows(df).groupby(KEY, sort=False))
    k = len(experiments)
    fig, ax = plt.subplots(figsize=(10, 0.3 * k * len(groups) + 0.35 * len(groups) + 1.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    labels, ticks, label_colors = [], [], []
    for gi, (_key, g) in enumerate(groups[::-1]):  # the first comparison on top
        base = gi * (k + 1)
        first = g.iloc[0]
        where = "question" if first["kind"] == "question" else first["metric"]
        labels.append(f"{first['knob']}: {first['level']} - {first['level_b']} ({where}) [{first['held']}]")
        label_colors.append(HELD_COLORS[first["held"]])
        ticks.append(base + (k - 1) / 2)
        for _, r in g.iterrows():
            j = list(experiments).index(r["experiment"])
            v = 100 * r["value"]
            lo = 0 if math.isnan(r["ci_low"]) else max(0.0, v - 100 * r["ci_low"])
            hi = 0 if math.isnan(r["ci_high"]) else max(0.0, 100 * r["ci_high"] - v)
            color = colors[j % len(colors)]
            ax.errorbar(
                [v],
                [base + (k - 1 - j)],
                xerr=[[lo], [hi]],
                fmt="s" if r["outcome"] == EQUIVALENT else "o",
                color=color,
                capsize=3,
                mfc=color if r["outcome"] in ("A", "B", EQUIVALENT) else "white",
            )
        if gi:
            ax.axhline(base - 1, color="0.85", lw=0.6)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(np.array(ticks), labels, fontsize=8)
    for tick, color in zip(ax.get_yticklabels(), label_colors, strict=True):
        tick.set_color(color)  # red: flipped, orange: differs
    ax.set(
        xlabel="difference first level - second level, accuracy points (95 % CI; filled: settled, square: "
        "equivalent, open: unsettled)",
        title="Does the answer hold across experiments? (red: flipped, purple: open, orange: differs)",
    )
    for j, name in enumerate(_names(experiments)):
        ax.plot([], [], "o", color=colors[j % len(colors)], label=name)  # one legend entry each
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- writing


def default_out(experiments: Sequence[str]) -> str:
    """A folder named after the experiments, beside the first one."""
    first = str(experiments[0]).rstrip("/")
    name = "compare-" + "-vs-".join(_names(experiments))
    if storage.is_uri(first):
        return first.rsplit("/", 1)[0] + "/" + name
    fs, root = storage.resolve(first)
    return storage.join(posixpath.dirname(root), name)


def write_comparison(experiments: Sequence[str], out: str | None = None) -> dict[str, Any]:
    """Write compare.parquet, compare.md and compare.png; return {'table', 'folder', 'files'}."""
    from analysis import plots

    experiments = list(experiments)
    if len(experiments) < 2:
        raise BadInput("compare needs two or more experiment folders: python -m analysis compare EXP_A EXP_B ...")
    if len(set(experiments)) < len(experiments):
        raise BadInput(f"an experiment is named twice in {' '.join(experiments)}; name each once")
    df = compare_table(experiments)
    out = out or default_out(experiments)
    fs, folder = storage.resolve(out)
    try:
        fs.create_dir(folder, recursive=True)
    except OSError as e:
        raise BadInput(f"--out {out}: cannot create the folder ({_one_line(e)}); pass a writable --out") from None
    table = pa.Table.from_pandas(df[[c for c, *_ in COMPARE_COLUMNS]], schema=COMPARE_SCHEMA, preserve_index=False)
    files = [storage.join(folder, f) for f in ("compare.parquet", "compare.md", "compare.png")]
    tables.write_table(table, fs, files[0])
    storage.write_text(fs, files[1], markdown(df, experiments))
    plots.save(figure(df, experiments), fs, files[2])
    return {"table": df, "folder": folder, "files": files}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m analysis compare",
        description="Put the same questions' verdicts of several experiments side by "
        "side: which answers held. Each experiment needs its report "
        "(python -m analysis EXP) first.",
    )
    p.add_argument(
        "experiments",
        nargs="+",
        metavar="EXPERIMENT_DIR",
        help="two or more experiment folders, local paths or s3:// / gs:// URIs",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="where to write compare.parquet/.md/.png (default: compare-<A>-vs-<B>... beside the first experiment)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = write_comparison(args.experiments, args.out)
    except BadInput as e:
        print(f"python -m analysis compare: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (pa.ArrowInvalid, OSError) as e:  # an unreachable bucket, a malformed URI
        print(f"python -m analysis compare: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    df = result["table"]
    print(f"comparison: {result['folder']}/compare.md")
    for _key, g in df.groupby(KEY, sort=False):
        first = g.iloc[0]
        if first["kind"] == "question" or first["metric"] == "test_accuracy":
            print(
                f"  {first['held']:>8}: {first['subject']} {first['level']} - {first['level_b']} "
                f"({first['metric']}): " + ", ".join(f"{r['outcome']}" for _, r in g.iterrows())
            )
    return EXIT_OK
