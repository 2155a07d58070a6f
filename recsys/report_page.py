"""The report as a self-contained HTML page people open in a browser: the leaderboard's tables, and
inline PNGs of each table's metric against training time and each model's learning curve."""

from __future__ import annotations

import base64
import html
import io

from recsys.report import Group, ranked_by, table


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def figures(g: Group) -> list[tuple[str, str]]:
    """(caption, base64 PNG): headline metric against training time, and each model's learning curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = g.key["task"]
    metric, short, _ = ranked_by(task, g.key["protocol"])
    out = []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in g.rows:
        x = r.train_seconds if r.train_seconds == r.train_seconds and r.train_seconds > 0 else 0.01
        mean, sd, n = r.stats[metric]
        ax.errorbar([x], [mean], yerr=[0 if sd != sd else sd], fmt="s" if r.peer else "o", capsize=3)
        ax.annotate(r.model, (x, mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", xlabel="training seconds (log)", ylabel=metric, title=f"{metric} vs training time")
    out.append((f"{metric} against training time (peers as squares; bars: sd over seeds)", _png(fig)))
    for r in g.rows:
        hist = next((x["history"] for x in r.runs if any(x["history"].values())), None)
        if not hist:
            continue
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        for k, v in hist.items():
            if v:
                (axes[0] if k.endswith("loss") else axes[1]).plot(range(1, len(v) + 1), v, marker="o", ms=3, label=k)
        axes[0].set(xlabel="epoch", ylabel="loss", title=f"{r.model}: loss")
        axes[1].set(xlabel="epoch", title=f"{r.model}: validation")
        for a in axes:
            if a.lines:
                a.legend(fontsize=8)
        out.append((f"{r.model}: learning curve (first seed)", _png(fig)))
    return out


def html_page(groups: list[Group], experiment: str) -> str:
    esc = html.escape
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>recsys leaderboard: {esc(experiment)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;font-size:13px}th{background:#eee}"
             "tr.lead td{font-weight:bold}figure{display:inline-block;margin:8px}img{border:1px solid #ddd}"
             "figcaption{font-size:12px;color:#444}</style></head><body>",
             f"<h1>Leaderboard: experiment {esc(experiment)}</h1>",
             "<p>Mean ± sd over seeds (ddof=1); paired Δ to the best model of each table and to its strongest baseline, per user, ± standard "
             "error. Each table is one split and protocol; tables are not compared with each other.</p>"]
    for g in groups:
        header, body = table(g)
        parts.append(f"<h2>{esc(g.title)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        for i, row in enumerate(body):
            cells = "".join(f"<td>{esc(c.replace('**', ''))}</td>" for c in row)
            parts.append(f"<tr class='{'lead' if i == 0 else ''}'>{cells}</tr>")
        parts.append("</table>")
        for caption, png in figures(g):
            parts.append(f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{png}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
