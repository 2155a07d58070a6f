"""PNG plots people can read: learning curves, rating histograms, calibration, segments, popularity."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class _Pyplot:
    """matplotlib.pyplot, imported (headless) when the first plot is drawn: a step that draws none pays nothing."""

    def __getattr__(self, name):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot

        return getattr(matplotlib.pyplot, name)


plt = _Pyplot()


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curve(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """history: metric key -> per-epoch values (train/loss, val/loss, and the validation metric)."""
    losses = {k: v for k, v in history.items() if k.endswith("/loss") and v}
    others = {k: v for k, v in history.items() if not k.endswith("/loss") and v}
    fig, axes = plt.subplots(1, 1 + bool(others), figsize=(10 if others else 6, 4), squeeze=False)
    for k, v in losses.items():
        axes[0, 0].plot(range(1, len(v) + 1), v, marker="o", label=k)
    axes[0, 0].set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    axes[0, 0].legend()
    if others:
        for k, v in others.items():
            axes[0, 1].plot(range(1, len(v) + 1), v, marker="o", label=k)
        axes[0, 1].set(xlabel="epoch", title="validation metric")
        axes[0, 1].legend()
    return _save(fig, path)


def rating_histogram(actual: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(min(actual.min(), predicted.min()) - 0.25, max(actual.max(), predicted.max()) + 0.25, 41)
    ax.hist(actual, bins=bins, alpha=0.5, label="actual")
    ax.hist(predicted, bins=bins, alpha=0.5, label="predicted")
    ax.set(xlabel="rating", ylabel="rows", title=f"{title}: predicted vs actual")
    ax.legend()
    return _save(fig, path)


def calibration(actual: np.ndarray, predicted: np.ndarray, path: Path, title: str) -> Path:
    edges = np.quantile(predicted, np.linspace(0, 1, 11))
    idx = np.clip(np.searchsorted(edges, predicted, side="right") - 1, 0, 9)
    mp = [predicted[idx == b].mean() for b in range(10) if (idx == b).any()]
    ma = [actual[idx == b].mean() for b in range(10) if (idx == b).any()]
    fig, ax = plt.subplots(figsize=(5, 5))
    lo, hi = min(mp + ma), max(mp + ma)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="perfect")
    ax.plot(mp, ma, marker="o", label="model (prediction deciles)")
    ax.set(xlabel="mean predicted rating", ylabel="mean actual rating", title=f"{title}: calibration")
    ax.legend()
    return _save(fig, path)


def by_bucket(values: dict[str, float], counts: dict[str, int], path: Path, metric: str, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(values)
    ax.bar(names, [values[n] for n in names])
    for j, n in enumerate(names):
        ax.text(j, values[n], f"n={counts.get(n, 0)}", ha="center", va="bottom")
    ax.set(xlabel="user activity (training ratings)", ylabel=metric, title=f"{title}: {metric} by activity")
    return _save(fig, path)


def popularity(item_counts: np.ndarray, recommended: np.ndarray, path: Path, title: str) -> Path:
    """Share of recommendations per catalogue-popularity decile, against the catalogue's own share."""
    order = item_counts.argsort().argsort()
    decile = (10 * order / max(len(item_counts), 1)).astype(int).clip(0, 9)
    rec = np.bincount(decile[recommended.reshape(-1)], minlength=10) / max(recommended.size, 1)
    inter = np.bincount(decile, weights=item_counts, minlength=10) / max(item_counts.sum(), 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(10)
    ax.bar(x - 0.2, inter, 0.4, label="training interactions")
    ax.bar(x + 0.2, rec, 0.4, label="top-K recommendations")
    ax.set(xlabel="item popularity decile (9 = most popular)", ylabel="share", title=f"{title}: popularity")
    ax.legend()
    return _save(fig, path)


def training_plots(curves: dict[str, list[float]], module, data, ev, tmp: Path, title: str):
    """A train run's plots: its learning curve, and for ratings predicted vs actual on validation (on
    test, `ev`, only when the run was asked to score it)."""
    from recsys import evaluation

    yield learning_curve(curves, tmp / "learning_curve.png", title)
    if data.meta["task"] == "rating":
        pr = (ev or evaluation.evaluate(module, data, "val", [10], "both")).predictions
        yield rating_histogram(pr["actual"].to_numpy(), pr["predicted"].to_numpy(), tmp / "predictions_histogram.png",
                               title)


def evaluation_plots(ev, data, split: str, tmp: Path):
    """The plots an evaluate run logs: predictions and calibration (ratings) or the popularity of what is
    recommended (ranking), and the headline metric by user activity."""
    from recsys import evaluation
    from recsys.schema import ITEM, RANKING

    if ev.predictions is not None:
        pr = ev.predictions
        yield rating_histogram(pr["actual"].to_numpy(), pr["predicted"].to_numpy(), tmp / "predictions_histogram.png", split)
        yield calibration(pr["actual"].to_numpy(), pr["predicted"].to_numpy(), tmp / "calibration.png", split)
        metric = "rmse"
    else:
        metric = RANKING.metric
        if ev.top_items is not None:
            counts = np.bincount(data.train[ITEM], minlength=data.n_items)
            yield popularity(counts, ev.top_items[:, :10], tmp / "popularity.png", split)
    vals = {b: ev.metrics[f"{split}/activity_{b}/{metric}"] for _, _, b in evaluation.ACTIVITY_BUCKETS
            if f"{split}/activity_{b}/{metric}" in ev.metrics}
    counts = {b: int(ev.metrics.get(f"{split}/activity_{b}/n_rows", ev.metrics.get(f"{split}/activity_{b}/n_users", 0)))
              for b in vals}
    if vals:
        yield by_bucket(vals, counts, tmp / "by_activity.png", metric, split)
