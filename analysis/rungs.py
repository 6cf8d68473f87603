"""Rung diagnostics: does ASHA's early judgement of a trial agree with how the trial ends?

ASHA judges every trial at its rungs (epochs grace_period * reduction_factor**k below the full
budget) and keeps the best 1/reduction_factor. That pays only where the ranking at the rung predicts
the ranking at the full budget. For each rung this module measures, over the search trials that
reached both the rung and the final epoch:

- Spearman's rho and Kendall's tau-b between the rung's metric (what ASHA compared: the epoch's
  val_accuracy, or its smoothed form with --stop-on) and the final val_accuracy;
- how many of the final top-k had a rung metric below the rung's cut-off (the (1 - 1/rf) quantile
  of the rung metric over every trial that reached the rung), i.e. would have been stopped there
  had ASHA judged them against the whole field;
- a plain-words warning when the rung judges poorly (Spearman below RHO_WARN, or the final best
  trial behind the cut-off), naming the setting to try.

The final epoch is the full budget when at least MIN_PAIRS trials reached it, else the deepest epoch
that many reached (under ASHA few trials run the full budget); each row says which. Under ASHA the
trials that reached the final epoch are survivors of the rung, a narrower field than all trials, so
correlations there understate how well the rung sorts the whole field; a FIFO experiment (every
trial runs the full budget) has no such selection, and its rows say what ASHA at the recorded
settings would have judged.

Settings come from experiment.json's `scheduler_settings` (run_search.py records them); an older
experiment without them ran ASHA at grace 1, reduction factor 3, one bracket, on the last epoch.
pandas, numpy and scipy only: no Ray, no TensorFlow.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

METRIC = "val_accuracy"
MIN_PAIRS = 5  # fewer trials that reached both epochs: figures are shown, no verdict is drawn
RHO_WARN = 0.5  # Spearman below this: the rung's ranking says little about the final one
TOP_K = 3  # the final top-k whose fate at the rung is counted
EMA_WEIGHT = 0.5  # stop_on='ema': weight of the newest epoch (a half-life of one epoch); ASHA's too
# What experiments ran before run_search.py recorded scheduler_settings (grace 1, rf 3, 'epoch').
LEGACY_SETTINGS = {"grace_period": 1, "reduction_factor": 3, "brackets": 1, "stop_on": "last"}
ROW_METRICS = ("rung_spearman", "rung_kendall", "rung_top_k_behind")


def settings_from_meta(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The scheduler settings of an experiment from its experiment.json: {'kind', 'grace_period',
    'reduction_factor', 'brackets', 'stop_on', 'max_t'}; None when there are no ASHA settings to judge."""
    recorded = meta.get("scheduler_settings")
    if isinstance(recorded, dict) and "grace_period" in recorded:
        out = {**LEGACY_SETTINGS, **recorded}
    elif meta.get("scheduler", "asha") == "asha":
        out = {**LEGACY_SETTINGS, "kind": "asha"}
    else:
        return None
    out.setdefault("kind", meta.get("scheduler", "asha"))
    out.setdefault("max_t", meta.get("max_epochs"))
    return out


def bracket_rungs(grace_period: int, reduction_factor: int, brackets: int, max_t: int) -> list[list[int]]:
    """Each bracket's rungs (epochs, ascending, below max_t), as Ray's _Bracket computes them: bracket s
    judges at grace * rf**(k+s). A rung at max_t judges nothing (max_t stops all). The one copy of this
    arithmetic: tuning.schedulers builds ASHA from it, and this module judges its rungs."""
    out = []
    for s in range(brackets):
        count = int(math.log(max_t / grace_period) / math.log(reduction_factor) - s + 1)  # Ray's MAX_RUNGS
        out.append([e for k in range(count) if (e := grace_period * reduction_factor ** (k + s)) < max_t])
    return out


def rung_epochs(grace_period: int, reduction_factor: int, brackets: int, max_t: int) -> list[int]:
    """Epochs some bracket judges at, below max_t, ascending."""
    return sorted({e for rungs in bracket_rungs(grace_period, reduction_factor, brackets, max_t) for e in rungs})


def curves(trials: pd.DataFrame, epochs: pd.DataFrame, stop_on: str = "last") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(raw, judged): trial x epoch tables of val_accuracy for the search trials that did not fail;
    `judged` is what ASHA compares (smoothed per --stop-on). Epochs a trial did not reach are NaN."""
    search = trials[trials["phase"] == "search"] if "phase" in trials else trials
    ok = search[search["status"] != "error"]["trial_id"]
    ep = epochs[epochs["trial_id"].isin(ok)]
    raw = ep.pivot_table(index="trial_id", columns="epoch", values=METRIC, aggfunc="last").sort_index(axis=1)
    raw = raw.where(np.isfinite(raw))
    if stop_on == "best":
        judged = raw.cummax(axis=1)
    elif stop_on == "ema":
        judged = raw.T.ewm(alpha=EMA_WEIGHT, adjust=False, ignore_na=True).mean().T.where(raw.notna())
    else:
        judged = raw
    return raw, judged


def final_epoch(raw: pd.DataFrame, rung: int, max_t: int) -> int | None:
    """max_t when MIN_PAIRS trials reached it, else the deepest epoch above `rung` that many reached
    (all trials, if there are fewer than MIN_PAIRS); None if no epoch above the rung qualifies."""
    if raw.empty:
        return None
    reached = raw.notna().sum()
    need = min(MIN_PAIRS, len(raw))
    deeper = [int(e) for e in reached.index if e > rung and reached[e] >= need]
    if max_t in deeper:
        return max_t
    return max(deeper) if deeper else None


def judge(
    raw: pd.DataFrame, judged: pd.DataFrame, rung: int, final: int, rf: int, top_k: int = TOP_K
) -> dict[str, Any]:
    """The figures of one rung against one final epoch (see the module doc)."""
    at_rung = judged[rung].dropna() if rung in judged else pd.Series(dtype=float)
    both = pd.concat([at_rung.rename("rung"), raw[final].rename("final")], axis=1).dropna()
    n = len(both)
    out: dict[str, Any] = {
        "rung": rung,
        "final": final,
        "n": n,
        "n_rung": len(at_rung),
        "spearman": None,
        "spearman_p": None,
        "kendall": None,
        "kendall_p": None,
        "cutoff": None,
        "k": min(top_k, n),
        "behind": None,
        "behind_ids": [],
    }
    if len(at_rung):
        # Ray's cut-off: np.nanpercentile of the recorded rung values at (1 - 1/rf) * 100.
        out["cutoff"] = float(np.nanpercentile(at_rung.to_numpy(float), (1 - 1 / rf) * 100))
    if n >= 2 and both["rung"].nunique() > 1 and both["final"].nunique() > 1:
        rho = sps.spearmanr(both["rung"], both["final"])
        tau = sps.kendalltau(both["rung"], both["final"])
        out.update(
            spearman=float(rho.statistic),
            spearman_p=float(rho.pvalue),
            kendall=float(tau.statistic),
            kendall_p=float(tau.pvalue),
        )
    out["best_behind"] = None
    if n and out["cutoff"] is not None:
        # Ties in the final metric (a small validation split) go to the trial the rung favours:
        # a verdict never rests on an arbitrary order among equals.
        ranked = both.sort_values(["final", "rung"], ascending=False, kind="stable")
        top = ranked.head(out["k"])
        behind = top[top["rung"] < out["cutoff"]]
        out["behind"] = len(behind)
        out["behind_ids"] = list(behind.index)
        out["best_behind"] = bool(ranked["rung"].iloc[0] < out["cutoff"])
    return out


def poor(figures: dict[str, Any]) -> bool:
    """A rung judges poorly: enough pairs, and Spearman below RHO_WARN or the final best trial behind
    the cut-off (ASHA would have stopped the winner). How many of the top k were behind is reported,
    not judged: losing the third best costs little."""
    if figures["n"] < MIN_PAIRS:
        return False
    return bool((figures["spearman"] is not None and figures["spearman"] < RHO_WARN) or figures.get("best_behind"))


def rung_figures(trials: pd.DataFrame, epochs: pd.DataFrame, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One dict of figures per rung (judge()), plus 'warning' (text or None) and 'suggest'."""
    max_t = int(settings.get("max_t") or trials["max_epochs"].max())
    g, rf, b = int(settings["grace_period"]), int(settings["reduction_factor"]), int(settings["brackets"])
    stop_on = settings.get("stop_on", "last")
    raw, judged = curves(trials, epochs, stop_on)
    out = []
    for rung in rung_epochs(g, rf, b, max_t):
        final = final_epoch(raw, rung, max_t)
        if final is None:
            out.append(
                {
                    "rung": rung,
                    "final": None,
                    "n": 0,
                    "n_rung": int(raw[rung].notna().sum()) if rung in raw else 0,
                    "warning": None,
                    "suggest": None,
                }
            )
            continue
        figures = judge(raw, judged, rung, final, rf)
        figures["warning"], figures["suggest"] = None, None
        if poor(figures):
            figures["suggest"] = suggestion(raw, judged, figures, settings, max_t)
            figures["warning"] = warning_text(figures, settings, figures["suggest"])
        out.append(figures)
    return out


def suggestion(
    raw: pd.DataFrame, judged: pd.DataFrame, figures: dict[str, Any], settings: dict[str, Any], max_t: int
) -> str:
    """The setting to try: the first later epoch that would judge well as the grace period; else a
    smoothed metric if that judges this rung well; else more brackets or FIFO."""
    rung, final, rf = figures["rung"], figures["final"], int(settings["reduction_factor"])
    tips = []
    for epoch in [int(e) for e in raw.columns if rung < e < final]:
        later = judge(raw, judged, epoch, final, rf)
        if later["n"] >= MIN_PAIRS and not poor(later):
            if epoch < max_t / rf:  # room for a rung after it, else ASHA stops almost nothing
                tips.append(
                    f"--grace-period {epoch} (epoch {epoch} ranks with Spearman "
                    f"{later['spearman']:.2f}, no final top-{later['k']} trial behind its cut-off)"
                )
            break
    if settings.get("stop_on", "last") == "last":
        best = judge(raw, raw.cummax(axis=1), rung, final, rf)
        if best["n"] >= MIN_PAIRS and not poor(best):
            tips.append("--stop-on best (the best-so-far judges this rung well)")
    if int(settings["brackets"]) == 1:
        tips.append("--brackets 3 (hedges: two of three brackets skip this rung)")
    if int(settings["reduction_factor"]) > 2:
        tips.append("--reduction-factor 2 (a rung keeps half the trials, not a third)")
    tips.append("--scheduler fifo if no rung judges well")
    return "; or ".join(tips)


def warning_text(figures: dict[str, Any], settings: dict[str, Any], suggest: str) -> str:
    rung, final = figures["rung"], figures["final"]
    parts = []
    if figures["spearman"] is not None and figures["spearman"] < RHO_WARN:
        parts.append(
            f"its ranking barely predicts the final one (Spearman {figures['spearman']:.2f} between "
            f"{METRIC} at epoch {rung} and at epoch {final}, over {figures['n']} trials)"
        )
    if figures.get("best_behind"):
        parts.append(
            f"the final best trial was behind its cut-off ({figures['behind']} of the final top "
            f"{figures['k']} were), so ASHA (reduction factor {settings['reduction_factor']}) would "
            "have stopped the winner there"
        )
    return f"The rung at epoch {rung} judges poorly: " + "; ".join(parts) + f". Try {suggest}."


def _fisher_ci(r: float | None, n: int, var: float) -> tuple[float | None, float | None]:
    """95 % interval of a rank correlation by Fisher's z; var*1/(n - 3) is the variance of atanh(r)
    (1.06 for Spearman, Fieller et al. 1957; 0.437/(n - 4) is used for Kendall by the caller)."""
    if r is None or n < 5 or not math.isfinite(r):
        return None, None
    z, se = math.atanh(max(min(r, 0.999999), -0.999999)), math.sqrt(var)
    return math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)


def rung_rows(trials: pd.DataFrame, epochs: pd.DataFrame, settings: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Summary rows of kind 'rung' (analysis.summary.SUMMARY_COLUMNS), three per rung: metric
    'rung_spearman' and 'rung_kendall' (value = the correlation, n = trials that reached both epochs,
    95 % Fisher-z interval, p-value), 'rung_top_k_behind' (value = how many of the final top-k were
    behind the cut-off, n = k). `level` is the rung's epoch, `budget_epochs` the final epoch it is
    compared with; `verdict` is the warning, or 'judges well'."""
    if settings is None or trials.empty or epochs.empty:
        return []
    what_if = settings.get("kind") == "fifo"
    rows: list[dict[str, Any]] = []
    for f in rung_figures(trials, epochs, settings):
        if f["final"] is None:
            continue
        verdict = f["warning"] or (
            "too few trials reached both epochs to judge" if f["n"] < MIN_PAIRS else "judges well"
        )
        base = {
            "kind": "rung",
            "phase": "search",
            "budget_epochs": int(f["final"]),
            "level": str(f["rung"]),
            "verdict": verdict,
        }
        note = (
            f"{f['n']} search trials reached epochs {f['rung']} and {f['final']}; "
            f"{settings.get('stop_on', 'last')} {METRIC} at the rung vs {METRIC} at epoch {f['final']}"
            + (
                "; FIFO run: what ASHA at these settings would have judged"
                if what_if
                else "; ASHA's survivors only: correlations understate how well the rung sorts all trials"
            )
        )
        for metric, r, p, var in (
            ("rung_spearman", f["spearman"], f["spearman_p"], 1.06 / max(f["n"] - 3, 1)),
            ("rung_kendall", f["kendall"], f["kendall_p"], 0.437 / max(f["n"] - 4, 1)),
        ):
            lo, hi = _fisher_ci(r, f["n"], var)
            rows.append(
                {
                    **base,
                    "metric": metric,
                    "n": f["n"],
                    "value": r,
                    "ci_low": lo,
                    "ci_high": hi,
                    "p_value": p,
                    "note": note,
                }
            )
        cut = f"{f['cutoff']:.4f}" if f["cutoff"] is not None else "none"
        rows.append(
            {
                **base,
                "metric": "rung_top_k_behind",
                "n": f["k"],
                "value": None if f["behind"] is None else float(f["behind"]),
                "note": f"cut-off {cut} = the {(1 - 1 / int(settings['reduction_factor'])) * 100:.0f}th "
                f"percentile of the rung metric over the {f['n_rung']} trials that reached epoch "
                f"{f['rung']}; behind: " + (", ".join(map(str, f["behind_ids"])) or "none"),
            }
        )
    return rows


def _num(x: float | None, fmt: str = "{:.2f}") -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def rung_markdown(trials: pd.DataFrame, epochs: pd.DataFrame, settings: dict[str, Any] | None) -> str:
    """The report section '## ASHA rungs' as markdown; '' when there are no ASHA settings to judge."""
    if settings is None or trials.empty or epochs.empty:
        return ""
    figures = rung_figures(trials, epochs, settings)
    if not figures:
        return ""
    g, rf, b = settings["grace_period"], settings["reduction_factor"], settings["brackets"]
    head = (
        f"## ASHA rungs\n\nSettings: grace period {g}, reduction factor {rf}, {b} bracket(s), compares "
        f"{settings.get('stop_on', 'last')} {METRIC}; rungs at epochs "
        f"{', '.join(str(f['rung']) for f in figures)}.\n"
    )
    if settings.get("kind") == "fifo":
        head += (
            "This run used FIFO (every trial ran its full budget), so the table says what ASHA at "
            "these settings would have judged, over every trial.\n"
        )
    else:
        head += (
            "Only ASHA's survivors reach the final epoch, so correlations here rest on a narrowed "
            "field and understate how well a rung sorts all trials.\n"
        )
    lines = [
        "| rung (epoch) | compared with epoch | trials | Spearman (95 % CI) | Kendall | "
        "final top-k behind cut-off | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        if f["final"] is None:
            lines.append(f"| {f['rung']} | | {f['n_rung']} | | | | no later epoch reached by enough trials |")
            continue
        lo, hi = _fisher_ci(f["spearman"], f["n"], 1.06 / max(f["n"] - 3, 1))
        ci = f" ({_num(lo)} to {_num(hi)})" if lo is not None else ""
        verdict = "**poor**" if f["warning"] else "too few trials" if f["n"] < MIN_PAIRS else "good"
        behind = "" if f.get("behind") is None else f"{f['behind']} of {f['k']}"
        lines.append(
            f"| {f['rung']} | {f['final']} | {f['n']} | {_num(f['spearman'])}{ci} | "
            f"{_num(f['kendall'])} | {behind} | {verdict} |"
        )
    warnings = [f"- {f['warning']}" for f in figures if f.get("warning")]
    return head + "\n" + "\n".join(lines) + "\n" + ("\n" + "\n".join(warnings) + "\n" if warnings else "")
