"""The leaderboard: finished evaluations grouped by setup, with their noise stated.

A group is one dataset x task x data split x tie rule x positive threshold x protocol: only runs that
share all of them were scored on the same split by the same evaluator, and nothing is ranked across
groups. Within a group, per model:
- each metric as mean ± sd over seeds (ddof=1) with n; for a single run, a 95% interval over users;
- the paired difference to the group's leader, and to its strongest baseline (popularity or the global
  mean: the bar every model must clear), on the headline metric, per user (users matched on the
  same split, averaged over the seeds both have), with its standard error (ddof=1); a difference whose
  95% interval holds 0 is marked not significant, and so is one whose paired seed-level t-test is not
  significant where two or more seeds are shared.

Inputs are plain dicts (see `tracking.finished_evaluations`) and per-user tables; nothing here talks
to MLflow. Outputs are a markdown document and one self-contained HTML file (PNGs inlined).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys import paired
from recsys.schema import TASKS

GROUP_TAGS = ("dataset", "task", "data_split", "tie_break", "positive_threshold", "protocol")
COLUMNS = {name: [f"test/{c}" for c in t.columns] for name, t in TASKS.items()}  # schema.TASKS, on test
HEADLINE = {name: (t.key("test"), t.metric, t.mode) for name, t in TASKS.items()}  # schema.TASKS, on test


def ranked_by(task: str, protocol: str) -> tuple[str, str, str]:
    """(key, metric, mode) a group is ranked by: the task's headline, or under the sampled protocol
    (`<split>/sampled`) its sampled counterpart (a sampled evaluation ranks no full catalogue)."""
    t = TASKS[task]
    if protocol.split("@")[0].endswith("/sampled") and t.sampled:
        return f"test/{t.sampled}", t.sampled, t.mode
    return HEADLINE[task]
BASELINES = {"global_mean", "popularity", "peer:popularity"}


@dataclass
class Row:
    model: str
    peer: str
    runs: list[dict]
    variant: str = ""  # what this configuration changes against the model's most-run one, e.g. "lr=0.018"
    stats: dict = field(default_factory=dict)  # metric -> (mean, sd, n)
    interval: tuple | None = None  # single run: 95% over users on the headline metric
    diff: tuple | None = None  # (mean paired per-user difference to the leader, its se, n users, significant)
    seed_diff: tuple | None = None  # (mean over shared seeds, se, n seeds)
    vs_baseline: tuple | None = None  # as diff, against the group's strongest baseline
    train_seconds: float = float("nan")


@dataclass
class Group:
    key: dict
    rows: list[Row]
    # blends that do not earn a row (degenerate, or not better than their best member out of fold): kept
    # out of the ranking, listed under the table with their figure and the blend step's reason
    left_out: list[Row] = field(default_factory=list)

    @property
    def title(self) -> str:
        k = self.key
        parts = [k["dataset"], k["task"], f"split {k['data_split']}", f"protocol {k['protocol']}"]
        if k["tie_break"] not in ("-", ""):
            parts.append(f"ties {k['tie_break']}")
        if k["positive_threshold"] not in ("-", ""):
            parts.append(f"positives rating >= {k['positive_threshold']}")
        return ", ".join(parts)


def _variants(configs: list[dict]) -> list[str]:
    """Names for the configurations of one model: "" for the most-run one (the first of equals), the
    keys and values another one changes for each other."""
    if len(configs) < 2:
        return [""] * len(configs)
    base = configs[0]
    names = []
    for c in configs:
        diff = [f"{k.split('.', 1)[-1]}={c.get(k, '-')}" for k in sorted(set(c) | set(base)) if c.get(k) != base.get(k)]
        names.append(", ".join(diff))
    return names


def build(records: list[dict], per_user: dict[str, pd.DataFrame]) -> list[Group]:
    """records: newest first (the newest run of a model, configuration and seed in a group wins).
    A record's `config` (its training run's resolved hyper-parameters but the seed) tells the
    configurations of a model apart: each is a row of its own, named by what it changes."""
    groups: dict[tuple, dict[tuple, dict[str, dict]]] = {}
    for r in records:
        t = r["tags"]
        if t.get("eval_split", "test") != "test" or t.get("task") not in TASKS:
            continue
        key = tuple(t.get(k, "-") for k in GROUP_TAGS)
        config = tuple(sorted((r.get("config") or {}).items()))
        groups.setdefault(key, {}).setdefault((t.get("model", "?"), config), {}).setdefault(str(t.get("seed", "")), r)
    out = []
    for key, models in sorted(groups.items()):
        task = key[1]
        metric, _, mode = ranked_by(task, key[-1])
        rows, names = [], {}
        for model in dict.fromkeys(m for m, _ in models):
            configs = sorted((c for m, c in models if m == model), key=lambda c: -len(models[(model, c)]))
            names.update({(model, c): v for c, v in zip(configs, _variants([dict(c) for c in configs]))})
        for (model, config), by_seed in models.items():
            runs = [by_seed[s] for s in sorted(by_seed)]
            variant = names[(model, config)]
            # what its -P overrides changed of the shipped config (epochs=3 beside fully trained rows), unless
            # the variant name already says it
            hand = [h for h in runs[0].get("set_by_hand", []) if h.split("=", 1)[0] + "=" not in variant]
            variant = ", ".join(filter(None, [variant, *(f"-P {h}" for h in hand)]))
            row = Row(model, runs[0]["tags"].get("peer", ""), runs, variant)
            for m in COLUMNS[task]:
                v = np.array([x["metrics"][m] for x in runs if m in x["metrics"]], float)
                if len(v):
                    row.stats[m] = (v.mean(), v.std(ddof=1) if len(v) > 1 else float("nan"), len(v))
            secs = [x["train_seconds"] for x in runs if x["train_seconds"] == x["train_seconds"]]
            row.train_seconds = float(np.mean(secs)) if secs else float("nan")
            if len(runs) == 1 and runs[0]["run_id"] in per_user and paired.has_unit(per_user[runs[0]["run_id"]], task):
                row.interval = paired.interval(per_user[runs[0]["run_id"]], task)
            rows.append(row)
        rows = [r for r in rows if metric in r.stats]
        rows.sort(key=lambda r: r.stats[metric][0] * (1 if mode == "min" else -1))
        left_out = [r for r in rows if _not_earned(r)]
        rows = [r for r in rows if not _not_earned(r)]
        if rows:
            _compare(rows, per_user, task, metric)
        out.append(Group(dict(zip(GROUP_TAGS, key)), rows, left_out))
    return out


def _short_runs(row: Row) -> list[dict]:
    """The runs of a blend row whose blend step said it does not earn its row (blend.verdict)."""
    return [x for x in row.runs if x.get("blend_verdict") not in (None, "", "earns its row")]


def _not_earned(row: Row) -> list[str]:
    """The blend step's reasons a blend row does not earn its row, over its runs."""
    return sorted({x["blend_verdict"] for x in _short_runs(row)})


def _paired_vs(row: Row, ref: Row, per_user: dict[str, pd.DataFrame], task: str, metric: str) -> tuple:
    """(per-user paired difference row - ref: mean, se, n users, significant) or None, and
    (the difference over shared seeds: mean, se, n seeds) or None. Significant needs the per-user 95%
    interval to exclude 0 and, with two or more shared seeds, the paired seed-level t-test too."""
    lead = {r["tags"].get("seed", ""): r for r in ref.runs}
    shared = [(r, lead[r["tags"].get("seed", "")]) for r in row.runs if r["tags"].get("seed", "") in lead]
    both = [(x, y) for x, y in shared if x["run_id"] in per_user and y["run_id"] in per_user
            and paired.has_unit(per_user[x["run_id"]], task) and paired.has_unit(per_user[y["run_id"]], task)]
    diff = seed_diff = None
    if both:
        mean, se, n = paired.paired([paired.per_user_unit(per_user[x["run_id"]], task) for x, _ in both],
                                     [paired.per_user_unit(per_user[y["run_id"]], task) for _, y in both], task)
        if task == "rating":  # squared-error sums per user -> MSE units
            rows_per_user = np.mean([per_user[x["run_id"]]["n"].mean() for x, _ in both])
            mean, se = mean / rows_per_user, se / rows_per_user
        diff = (mean, se, n, bool(se == se and abs(mean) > 1.96 * se))
    if len(shared) >= 2:
        d = np.array([x["metrics"][metric] - y["metrics"][metric] for x, y in shared])
        se = d.std(ddof=1) / math.sqrt(len(d))
        seed_diff = (float(d.mean()), float(se), len(d))
        seed_sig = (se == 0 and d.mean() != 0) or (se > 0 and abs(d.mean()) > paired.t95(len(d) - 1) * se)
        if diff is not None:
            diff = (*diff[:3], diff[3] and bool(seed_sig))
    return diff, seed_diff


def _compare(rows: list[Row], per_user: dict[str, pd.DataFrame], task: str, metric: str) -> None:
    """Each row against the leader, and each non-baseline row against the strongest baseline (the
    bar every model must clear)."""
    for row in rows[1:]:
        row.diff, row.seed_diff = _paired_vs(row, rows[0], per_user, task, metric)
    base = next((r for r in rows if r.model in BASELINES), None)
    if base is not None:
        for row in rows:
            if row.model not in BASELINES:
                row.vs_baseline, _ = _paired_vs(row, base, per_user, task, metric)


def _fmt_stat(s: tuple | None) -> str:
    if s is None:
        return ""
    mean, sd, n = s
    return f"{mean:.4f} ± {sd:.4f} (n={n})" if n > 1 else f"{mean:.4f}"


def table(g: Group) -> tuple[list[str], list[list[str]]]:
    task = g.key["task"]
    metric, short, _ = ranked_by(task, g.key["protocol"])
    cols = COLUMNS[task]
    unit = TASKS[task].unit
    header = ["model", *[c.removeprefix("test/") for c in cols], "95% over users (1 run)",
              f"paired Δ{unit} vs best ± se", "significant", f"paired Δ{unit} vs baseline ± se", "train s", "runs"]
    body = []
    for i, r in enumerate(g.rows):
        name = f"{r.model} (peer)" if r.peer else r.model + (f" ({r.variant})" if r.variant else "")
        if r.model in BASELINES:
            name += " [baseline]"
        if i == 0:
            name = f"**{name}**"
        diff = "best" if i == 0 else (f"{r.diff[0]:+.4f} ± {r.diff[1]:.4f} ({r.diff[2]} users)" if r.diff else "")
        if i and r.seed_diff:
            diff += f"; over {r.seed_diff[2]} seeds Δ{short} {r.seed_diff[0]:+.4f} ± {r.seed_diff[1]:.4f}"
        sig = "" if i == 0 or r.diff is None else ("yes" if r.diff[3] else "no (within noise)")
        ci = f"[{r.interval[0]:.4f}, {r.interval[1]:.4f}]" if r.interval else ""
        runs = " ".join(x["run_id"][:8] for x in r.runs)
        vb = r.vs_baseline
        vs_base = "" if vb is None else f"{vb[0]:+.4f} ± {vb[1]:.4f} ({'yes' if vb[3] else 'no (within noise)'})"
        body.append([name, *[_fmt_stat(r.stats.get(c)) for c in cols], ci, diff, sig, vs_base,
                     "" if r.train_seconds != r.train_seconds else f"{r.train_seconds:.1f}", runs])
    return header, body


def headline(groups: list[Group], top: int = 3) -> str:
    """The README's results: per table its best `top` rows and its baselines, the headline metric
    (mean ± sd over seeds) and the paired difference to the best."""
    return headline_of([(g.title, *table(g)) for g in groups], top)


def headline_of(tables: list[tuple[str, list[str], list[list[str]]]], top: int = 3) -> str:
    """The headline of tables given as (title, header, rows): what `headline` writes, and what a
    check regenerates from the report's markdown (docs/results.md) to compare with the README."""
    lines = []
    for title, header, body in tables:
        if "ties item_id" in title:  # a protocol whose id order a sequence model can learn: not a headline
            continue
        keep = [r for i, r in enumerate(body) if i < top or "[baseline]" in r[0]]
        lines += [f"**{title}**", "", f"| model | {header[1]} | paired Δ vs best ± se | significant |", "|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[1]} | {r[-5].split(';')[0]} | {r[-4]} |" for r in keep]
        lines.append("")
    lines.append("mean ± sd: over the seeds' runs (ddof=1; n runs); paired Δ: the per-user difference to the table's best "
                 "model on the same splits ± its standard error; significant: its 95% interval excludes 0 and the "
                 "paired test over seeds agrees; [baseline]: the bar every model must clear; (peer): another "
                 "library, fitted on the same splits and scored by the same evaluator.")
    return "\n".join(lines)


def markdown(groups: list[Group], experiment: str) -> str:
    lines = [f"# Leaderboard: experiment {experiment}", "",
             "Mean ± sd over seeds (ddof=1, n runs); for single runs a 95% interval over users. Paired Δ: the "
             "per-user difference to the best model of the table on the same split (averaged over shared seeds), "
             "± its standard error; 'no (within noise)' when its 95% interval holds 0 or the paired test over "
             "seeds is not significant. Δ vs baseline: the same against the strongest baseline of the table (popularity "
             "or the global mean), the bar every model must clear. Tables are never compared with each other: each is "
             "one split and protocol.",
             ""]
    for g in groups:
        header, body = table(g)
        lines += [f"## {g.title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines += ["", *blend_weights(g)] if blend_weights(g) else []
        lines.append("")
    return "\n".join(lines)


def blend_weights(g: Group) -> list[str]:
    """A line per blend of the table: its members' weights (fitted on validation), seed by seed; and a
    line per blend left out of the ranking, with its figure and why (the blend step's verdict)."""
    out = []
    for r in g.rows + g.left_out:
        by_seed = [(x["tags"].get("seed", "?"), x["blend_weights"]) for x in r.runs if x.get("blend_weights")]
        if by_seed:
            out.append(f"- {r.model} weights, fitted on validation: "
                       + "; ".join(f"seed {s}: {w}" for s, w in sorted(by_seed)))
    metric = ranked_by(g.key["task"], g.key["protocol"])[0]
    for r in g.left_out:
        out.append(f"- {r.model} ({_fmt_stat(r.stats.get(metric))} {metric.removeprefix('test/')}) is left out of "
                   f"the ranking: it does not earn its row on {len(_short_runs(r))} of its {len(r.runs)} seeds "
                   f"({'; '.join(_not_earned(r))})")
    return out
