"""Per-user statistics of evaluations: what the report and the registry decide with.

The headline metric's per-user quantity (NDCG@10 per user, or a user's squared-error sum for ratings),
a run's 95% interval over users, and the paired per-user difference between two runs on the same
users with its standard error (ddof=1): the report's significance test and the registry's promotion rule.
"""

from __future__ import annotations

import math

import pandas as pd

from recsys.schema import TASKS, USER


def t95(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom (paired seed-level test)."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def has_unit(per_user: pd.DataFrame, task: str) -> bool:
    """Whether a per-user table holds the headline's per-user figures (a sampled-only evaluation does not)."""
    return {"rmse", "n"} <= set(per_user.columns) if task == "rating" else TASKS[task].metric in per_user.columns


def per_user_unit(per_user: pd.DataFrame, task: str) -> pd.Series:
    """Per user, the quantity the headline metric averages (the ranking headline), or the squared-error sum (rating)."""
    if task == "rating":
        return pd.Series((per_user["rmse"] ** 2 * per_user["n"]).to_numpy(), index=per_user[USER].to_numpy())
    return pd.Series(per_user[TASKS[task].metric].to_numpy(), index=per_user[USER].to_numpy())


def metric(per_user: pd.DataFrame, task: str) -> float:
    """The headline metric of a per-user table: RMSE over all its rows (ratings), or the mean per user."""
    if task == "rating":
        return math.sqrt(float((per_user["rmse"] ** 2 * per_user["n"]).sum() / per_user["n"].sum()))
    return float(per_user[TASKS[task].metric].mean())


def interval(per_user: pd.DataFrame, task: str) -> tuple[float, float]:
    """95% interval over users of the headline metric of one run."""
    if task == "rating":  # RMSE = sqrt(sum s_u / sum n_u): a ratio estimator over users
        s, n = (per_user["rmse"] ** 2 * per_user["n"]).to_numpy(), per_user["n"].to_numpy(float)
        mse = s.sum() / n.sum()
        se = math.sqrt(((s - mse * n) ** 2).sum() / (len(s) * (len(s) - 1))) / n.mean() if len(s) > 1 else float("nan")
        return math.sqrt(max(mse - 1.96 * se, 0)), math.sqrt(mse + 1.96 * se)
    x = per_user[TASKS[task].metric].to_numpy(float)
    se = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else float("nan")
    return x.mean() - 1.96 * se, x.mean() + 1.96 * se


def paired(a: list[pd.Series], b: list[pd.Series], task: str) -> tuple[float, float, int]:
    """Per-user paired difference a - b in the headline metric's units, averaged over shared seeds.

    For ratings the per-user squared-error sums are divided by the mean rows per user, so the mean
    difference is the difference in MSE."""
    d = pd.concat([x.sub(y).dropna() for x, y in zip(a, b)], axis=1).mean(axis=1).dropna()
    if len(d) < 2:
        return float("nan"), float("nan"), len(d)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d)


def paired_test(candidate: pd.DataFrame, reference: pd.DataFrame, task: str) -> dict:
    """Is `candidate` significantly better than `reference` on the same users? Both are per-user tables
    of one evaluation each (`Evaluation.per_user`). The paired per-user difference in the headline
    metric's units (schema.TASKS: MSE for ratings), its standard error (ddof=1), the users, and
    `better`: the difference favours the candidate and its 95% interval excludes 0 (the report's test)."""
    mean, se, n = paired([per_user_unit(candidate, task)], [per_user_unit(reference, task)], task)
    if task == "rating":  # per-user squared-error sums over mean rows per user: a difference of MSE
        mean, se = mean / float(candidate["n"].mean()), se / float(candidate["n"].mean())
    favours = mean < 0 if TASKS[task].mode == "min" else mean > 0
    better = bool(n > 1 and se == se and favours and abs(mean) > 1.96 * se)
    return {"delta": mean, "se": se, "n": n, "better": better}
