"""The report's PNG figures, drawn with matplotlib's Agg backend (no display needed) from the tables.

Each function takes DataFrames and returns a Figure or None when there is nothing to draw;
`save` writes it through pyarrow.fs, so a bucket works like a folder.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: the report runs on clusters and in CI
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from matplotlib.collections import LineCollection

from analysis import summary

DPI = 110
STATUS_COLORS = {"completed": "tab:green", "stopped": "tab:orange", "error": "tab:red"}
LOG_KNOBS = ("learning_rate", "weight_decay")
MIN_BOX_POINTS = 5  # a level with fewer trials gets its dots only


def save(fig: plt.Figure, fs: pafs.FileSystem, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    with fs.open_output_stream(path) as f:
        f.write(buf.getvalue())


def learning_curves(ranked: pd.DataFrame, epochs: pd.DataFrame, top: int = 5) -> plt.Figure | None:
    """Train (dashed) and validation (solid) loss and accuracy per epoch of the best-ranked trials."""
    best = ranked.head(top)
    if best.empty or epochs.empty:
        return None
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.get_cmap("tab10")(np.arange(10))  # the ten tab10 colours, as RGBA rows
    for i, (_, t) in enumerate(best.iterrows()):
        ep = epochs[epochs["trial_id"] == t["trial_id"]].sort_values("epoch")
        c = colors[i % len(colors)]
        label = f"#{i + 1} {t['trial_id']}"
        ax_loss.plot(ep["epoch"], ep["loss"], "--", color=c, marker=".")
        ax_loss.plot(ep["epoch"], ep["val_loss"], "-", color=c, marker="o", label=label)
        ax_acc.plot(ep["epoch"], ep["accuracy"], "--", color=c, marker=".")
        ax_acc.plot(ep["epoch"], ep["val_accuracy"], "-", color=c, marker="o", label=label)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss (dashed: train, solid: validation)")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (dashed: train, solid: validation)")
    if np.nanmax(epochs["val_loss"].to_numpy(dtype=float)) > 20 * max(1e-9, np.nanmin(epochs["loss"])):
        ax_loss.set_yscale("log")  # a diverged trial's loss would flatten every other curve
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    # Beside the axes, not on them: a legend inside covers the curves it names.
    ax_acc.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    fig.suptitle(f"learning curves of the {len(best)} best-ranked trials")
    fig.tight_layout()
    return fig


def best_configs(summary_df: pd.DataFrame, top: int = 10) -> plt.Figure | None:
    """Best configurations with 95 % intervals (repeated runs), else the best single trials."""
    conf = summary_df[(summary_df["kind"] == "config") & (summary_df["metric"] == "test_accuracy")]
    if not conf.empty:
        rows = conf.sort_values("rank").head(top).iloc[::-1]
        title, xlabel = "best configurations: mean test accuracy over seeds, 95 % t-interval", "test accuracy"
        lo = (rows["value"] - rows["ci_low"]).fillna(0).clip(lower=0)
        hi = (rows["ci_high"] - rows["value"]).fillna(0).clip(lower=0)
        labels = [f"{c}  (n={n})" for c, n in zip(rows["config"], rows["n"], strict=True)]
    else:
        rows = summary_df[summary_df["kind"] == "ranking"].sort_values("rank").head(top).iloc[::-1]
        if rows.empty:
            return None
        title = "best trials: best validation accuracy (single runs: no interval; repeat with --repeats)"
        xlabel = "best validation accuracy"
        lo = hi = np.zeros(len(rows))
        labels = [f"{c}  [{e} ep]" for c, e in zip(rows["config"], rows["budget_epochs"], strict=True)]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.6))
    y = np.arange(len(rows))
    ax.errorbar(rows["value"], y, xerr=[lo, hi], fmt="o", capsize=4, color="tab:blue")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set(xlabel=xlabel, title=title)
    ax.grid(axis="x", alpha=0.3)
    return fig


def study_questions(summary_df: pd.DataFrame) -> plt.Figure | None:
    """One panel per reference-study question: each level's mean test accuracy over seeds with its 95 %
    t-interval (left), and the seed-paired differences with theirs (right; green = Holm p < 0.05)."""
    q = summary_df[summary_df["kind"] == "question"]
    if q.empty:
        return None
    texts = list(dict.fromkeys(q["question"]))
    fig, axes = plt.subplots(len(texts), 2, figsize=(11, 2.6 * len(texts) + 0.6), squeeze=False)
    for (ax_lv, ax_d), text in zip(axes, texts, strict=True):
        rows = q[q["question"] == text]
        levels = rows[rows["level_b"].isna()].sort_values("rank").iloc[::-1]
        y = np.arange(len(levels))
        lo = (levels["value"] - levels["ci_low"]).fillna(0).clip(lower=0)
        hi = (levels["ci_high"] - levels["value"]).fillna(0).clip(lower=0)
        ax_lv.errorbar(levels["value"], y, xerr=[lo, hi], fmt="o", capsize=4, color="tab:blue")
        ax_lv.set_yticks(y, [f"{lv} (n={n})" for lv, n in zip(levels["level"], levels["n"], strict=True)])
        ax_lv.set(xlabel="test accuracy", title=text)
        pairs = rows[rows["level_b"].notna()].iloc[::-1]
        yd = np.arange(len(pairs))
        val = 100 * pairs["value"]
        dlo = (val - 100 * pairs["ci_low"]).fillna(0).clip(lower=0)
        dhi = (100 * pairs["ci_high"] - val).fillna(0).clip(lower=0)
        for yi, v, lo_, hi_, p in zip(yd, val, dlo, dhi, pairs["p_holm"].fillna(1.0), strict=True):
            ax_d.errorbar(
                [v], [yi], xerr=[[lo_], [hi_]], fmt="o", capsize=4, color="tab:green" if p < 0.05 else "tab:gray"
            )
        ax_d.axvline(0, color="black", lw=0.8)
        ax_d.set_yticks(yd, [f"{a} - {b}" for a, b in zip(pairs["level"], pairs["level_b"], strict=True)])
        ax_d.set(xlabel="seed-paired difference, points of test accuracy", title="differences, 95 % CI")
        for ax in (ax_lv, ax_d):
            ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


OUTCOME_COLORS = {"better": "tab:green", "equivalent": "tab:blue", "open": "tab:gray"}


def verdict_over_epochs(summary_df: pd.DataFrame) -> plt.Figure | None:
    """One panel per reference-study question: each two levels' seed-paired difference of validation
    accuracy at every epoch with its 95 % interval (band), the resolution (dotted), markers by outcome
    (green: one level better, blue: equivalent within the resolution, grey: open)."""
    rows = summary_df[summary_df["kind"] == "question_epoch"]
    if rows.empty:
        return None
    texts = list(dict.fromkeys(rows["question"]))
    fig, axes = plt.subplots(len(texts), 1, figsize=(10, 3.6 * len(texts) + 0.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, text in zip(axes[:, 0], texts, strict=True):
        q = rows[rows["question"] == text]
        for i, ((a, b), g) in enumerate(q.groupby(["level", "level_b"], sort=False)):
            g = g.sort_values("budget_epochs")
            x = g["budget_epochs"].to_numpy(dtype=float)
            color = colors[i % len(colors)]
            ax.plot(x, 100 * g["value"].to_numpy(dtype=float), "-", color=color, label=f"{a} - {b}")
            lo, hi = g["ci_low"].to_numpy(dtype=float), g["ci_high"].to_numpy(dtype=float)
            ax.fill_between(x, 100 * lo, 100 * hi, color=color, alpha=0.15)
            for outcome, marker_color in OUTCOME_COLORS.items():
                at = (g["outcome"] == outcome).to_numpy()
                if at.any():
                    ax.scatter(
                        x[at], 100 * g["value"].to_numpy(dtype=float)[at], color=marker_color, edgecolor=color, zorder=3
                    )
        res = rows["resolution"].dropna()
        if len(res):
            for sign in (-1, 1):
                ax.axhline(sign * 100 * float(res.iloc[0]), color="0.4", ls=":", lw=0.8)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel="epoch", ylabel="difference, val. accuracy points", title=text)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        "seed-paired differences over the budget (95 % CI band; dots: green better, blue equivalent, grey open;"
        " dotted: +-resolution)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def paired_differences(summary_df: pd.DataFrame) -> plt.Figure | None:
    """Seed-paired differences between levels of each knob, with 95 % intervals (repeated runs)."""
    rows = summary_df[(summary_df["kind"] == "paired") & (summary_df["metric"] == "test_accuracy")].iloc[::-1]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.6))
    y = np.arange(len(rows))
    val = 100 * rows["value"]
    lo = (val - 100 * rows["ci_low"]).fillna(0).clip(lower=0)
    hi = (100 * rows["ci_high"] - val).fillna(0).clip(lower=0)
    colors = ["tab:green" if p < 0.05 else "tab:gray" for p in rows["p_holm"].fillna(1.0)]
    for yi, v, low, high, c in zip(y, val, lo, hi, colors, strict=True):
        ax.errorbar([v], [yi], xerr=[[low], [high]], fmt="o", color=c, capsize=4)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(
        y,
        [
            f"{k}: {a} - {b} (n={n})"
            for k, a, b, n in zip(rows["knob"], rows["level"], rows["level_b"], rows["n"], strict=True)
        ],
        fontsize=8,
    )
    ax.set(
        xlabel="test accuracy difference, points (95 % CI; green: Holm p < 0.05)",
        title="paired-by-seed differences between levels",
    )
    ax.grid(axis="x", alpha=0.3)
    return fig


def knob_effects(trials: pd.DataFrame, epochs: pd.DataFrame) -> plt.Figure | None:
    """Each varying knob against the best validation accuracy at a matched budget (one dot per trial)."""
    search = summary.search_trials(trials)
    budget, score = summary.matched_budget(search, epochs)
    knobs = summary.varying_knobs(search)
    if budget is None or not knobs:
        return None
    at = search.set_index("trial_id").loc[score.index].assign(_score=score)
    cols = min(3, len(knobs))
    nrows = math.ceil(len(knobs) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.6 * nrows), squeeze=False)
    rng = np.random.default_rng(0)  # jitter only; fixed so the figure is reproducible
    for ax, knob in zip(axes.flat, knobs, strict=False):
        values = at[knob]
        if summary.is_discrete(values) or not pd.api.types.is_numeric_dtype(values):
            numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
            # Numbers in numeric order (32 before 128), everything else by its text.
            levels = sorted(values.dropna().unique().tolist(), key=None if numeric else summary.level_text)
            groups = [at.loc[values == lv, "_score"].to_numpy() for lv in levels]
            for i, g in enumerate(groups):
                if len(g) >= MIN_BOX_POINTS:  # a box over one or two points shows nothing the dots do not
                    ax.boxplot([g], positions=[i], widths=0.5, showfliers=False)
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(g)), g, s=18, alpha=0.8, zorder=3)
            ax.set_xticks(range(len(levels)), [summary.level_text(lv) for lv in levels], rotation=20)
        else:
            ax.scatter(values, at["_score"], s=18, alpha=0.8)
            if knob in LOG_KNOBS and values.min() > 0:
                ax.set_xscale("log")
                # A few labelled decades, no labelled minor ticks: within a decade or two matplotlib labels
                # every minor tick, and the labels run into each other.
                ax.xaxis.set_major_locator(mticker.LogLocator(numticks=4))
                ax.xaxis.set_minor_formatter(mticker.NullFormatter())
            ax.tick_params(axis="x", labelrotation=30)
        ax.set(title=knob, ylabel=f"best val. accuracy by epoch {budget}")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(knobs) :]:
        ax.set_visible(False)
    fig.suptitle(f"each knob's effect: {len(at)} search trials at matched budget {budget} epoch(s)")
    fig.tight_layout()
    return fig


def asha_rungs(trials: pd.DataFrame, epochs: pd.DataFrame) -> plt.Figure | None:
    """Where search trials ended (counts per epochs_completed by status) and each one's validation curve.
    Confirm runs are left out: they run the full budget without early stopping."""
    trials = summary.search_trials(trials)
    if trials.empty:
        return None
    fig, (ax_bar, ax_curve) = plt.subplots(1, 2, figsize=(11, 4.2))
    budgets = sorted(trials["epochs_completed"].unique())
    bottom = np.zeros(len(budgets))
    for status, color in STATUS_COLORS.items():
        counts = np.array([((trials["epochs_completed"] == b) & (trials["status"] == status)).sum() for b in budgets])
        if counts.any():
            ax_bar.bar([str(b) for b in budgets], counts, bottom=bottom, color=color, label=status)
            bottom += counts
    ax_bar.set(xlabel="epochs completed", ylabel="trials", title="where trials ended (ASHA rungs)")
    ax_bar.legend()
    # One LineCollection per status, not a line per trial: 10,000 trials draw in a second.
    status_of = dict(zip(trials["trial_id"], trials["status"], strict=True))
    ep = epochs[epochs["trial_id"].isin(status_of)].sort_values(["trial_id", "epoch"])
    curves: dict[str, list[np.ndarray]] = {}
    for trial_id, curve in ep.groupby("trial_id", sort=False)[["epoch", "val_accuracy"]]:
        curves.setdefault(status_of[trial_id], []).append(curve.to_numpy(dtype=float))
    for name, lines in curves.items():
        color = STATUS_COLORS.get(name, "gray")
        ax_curve.add_collection(LineCollection(lines, colors=color, alpha=0.6))
        ends = np.array([line[-1] for line in lines])
        ax_curve.plot(ends[:, 0], ends[:, 1], "o", color=color, ls="")
    ax_curve.autoscale_view()
    ax_curve.set(
        xlabel="epoch", ylabel="validation accuracy", title="each trial's validation accuracy; dot = where it ended"
    )
    ax_curve.xaxis.get_major_locator().set_params(integer=True)
    for ax in (ax_bar, ax_curve):
        ax.grid(alpha=0.3)
    return fig


def parallel_coordinates(trials: pd.DataFrame) -> plt.Figure | None:
    """One line per trial through every varying knob and its best validation accuracy, coloured by it.

    Categorical axes place levels evenly; numeric axes are min-max scaled (log for learning rates).
    """
    ok = trials[(trials["status"] != "error") & trials["best_val_accuracy"].notna()]
    knobs = summary.varying_knobs(ok)
    if ok.empty or not knobs:
        return None
    axes_names = knobs + ["best_val_accuracy"]
    scaled: dict[str, pd.Series] = {}
    ticks: dict[str, tuple[list[float], list[str]]] = {}  # per axis: tick positions in [0, 1], labels
    for name in axes_names:
        v = ok[name]
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            x = np.log10(v.astype(float)) if name in LOG_KNOBS and v.min() > 0 else v.astype(float)
            lo, hi = float(x.min()), float(x.max())
            scaled[name] = (x - lo) / (hi - lo) if hi > lo else x * 0 + 0.5
            raw = [v.min(), v.max()]
            ticks[name] = (
                [0, 1] if hi > lo else [0.5],
                [summary.level_text(float(r)) for r in raw][: 2 if hi > lo else 1],
            )
        else:
            levels = sorted(v.dropna().unique().tolist(), key=summary.level_text)
            pos = {lv: i / max(1, len(levels) - 1) for i, lv in enumerate(levels)}
            scaled[name] = v.map(pos).astype(float)
            ticks[name] = (list(pos.values()), [summary.level_text(lv) for lv in levels])
    fig, ax = plt.subplots(figsize=(max(7, 2.2 * len(axes_names)), 4.8))
    metric = ok["best_val_accuracy"].astype(float)
    norm = plt.Normalize(metric.min(), metric.max())
    cmap = plt.cm.viridis
    xs = np.arange(len(axes_names))
    order = np.argsort(metric.to_numpy())  # best drawn last, on top
    ys = np.column_stack([scaled[n].to_numpy(dtype=float) for n in axes_names])[order]
    full = (ok["status"] == "completed").to_numpy()[order]
    # One LineCollection, not a line per trial: 10,000 trials draw in a second.
    lines = LineCollection(
        [np.column_stack([xs, y]) for y in ys],
        colors=cmap(norm(metric.to_numpy()[order])),
        alpha=0.8,
        linewidths=np.where(full, 2.2, 1.0),
        linestyles=["-" if f else ":" for f in full],
    )
    ax.add_collection(lines)
    ax.set_xlim(-0.1, len(axes_names) - 1 + 0.4)
    for x, name in zip(xs, axes_names, strict=True):
        ax.axvline(float(x), color="black", lw=0.8)
        positions, labels = ticks[name]
        for where, label in zip(positions, labels, strict=True):
            ax.text(float(x) + 0.03, where, label, fontsize=7, va="center")
    ax.set_xticks(xs, axes_names)
    ax.set_yticks([])
    ax.set_ylim(-0.08, 1.08)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="best validation accuracy")
    ax.set_title(f"the search, one line per trial ({len(ok)}; solid: full budget, dotted: stopped early)")
    return fig


def pareto(pool: pd.DataFrame, front: pd.DataFrame, objectives: list[tuple[str, str]]) -> plt.Figure | None:
    """The primary objective (accuracy) against each other objective, one panel each: every full-budget
    trial in grey, the Pareto front (computed over all objectives at once) in colour, labelled by rank."""
    if pool.empty or len(objectives) < 2:
        return None
    (first, _), others = objectives[0], objectives[1:]
    fig, axes = plt.subplots(1, len(others), figsize=(5.5 * len(others), 4.2), squeeze=False)
    for ax, (col, mode) in zip(axes[0], others, strict=True):
        ax.scatter(pool[col], pool[first], color="0.7", label="full-budget trials")
        on = front.sort_values(col)
        # The staircase the front attains: each point holds until a costlier one is better.
        ax.step(
            on[col], on[first], "o-", where="post" if mode == "min" else "pre", color="tab:red", label="Pareto front"
        )
        for r in on.itertuples():
            ax.annotate(f"#{r.rank}", (getattr(r, col), getattr(r, first)), textcoords="offset points", xytext=(4, 4))
        values = pool[col].to_numpy(dtype=float)
        if values.min() > 0 and values.max() > 10 * values.min():
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels of 2e4, 3e4, ... overlap
        ax.set(xlabel=f"{col} ({'higher' if mode == 'max' else 'lower'} is better)", ylabel=first)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Pareto front: {len(front)} of {len(pool)} full-budget trials")
    return fig
