"""evaluate: score a trained model on prepared data in a NEW run linked to its training run.

Parameters: model_uri (runs:/<train_run>/model, models:/<id>, models:/<name>@<alias>), data (default:
the data URI the training run recorded), split (test | val), k (e.g. 5,10,20), protocol (full |
sampled | both; implicit only), batch_size (pairs per forward when scoring), eval_users (implicit: rank
for a seeded sample of this many users, the same sample for every model on the same data; 0 = all;
recorded in the protocol tag, so the report never mixes it with full evaluations).
Logs: metrics `<split>/...` (rmse, mae, r2, baseline_rmse, rmse_improvement; or hr/precision/recall/
ndcg/mrr/map_at_K, sampled_hr_at_10, auc, log_loss, coverage, novelty, popularity percentile, and
the popularity baseline's), segment metrics, metrics.json, per_user.parquet, plots/*.png,
examples.md; tags train_run_id, model_uri, data_uri. For a registered model version (models:/<name>/<v>, @alias, or
a train run that registered one), it is compared with the `champion` version on the validation split of
the same data and protocol, and the alias moves only when the paired per-user difference is significant
(tags registry.* on the run, promotion.* on the version).
"""

import json
import tempfile
import time
from pathlib import Path

import numpy as np

import mlflow

from recsys import evaluation, plots, ranking, tracking
from recsys.data import prepare as prep
from recsys.errors import RecsysError
from recsys.schema import ITEM, TASKS
from steps import ArgParser

p = ArgParser(prog="evaluate", description=__doc__.splitlines()[0])
p.add_argument("--model-uri", "--model_uri", dest="model_uri", required=True)
p.add_argument("--data", default="auto")
p.add_argument("--split", default="test")
p.add_argument("--k", default="5,10,20")
p.add_argument("--protocol", default="both")
p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=ranking.PAIR_CHUNK)
p.add_argument("--eval-users", "--eval_users", dest="eval_users", type=int, default=0)


def main(argv=None):
    with tracking.step_run("evaluate") as run, tempfile.TemporaryDirectory(prefix="recsys-evaluate-") as tmp:
        tmp = Path(tmp)
        a = p.parse_args(argv)
        ks = evaluation.parse_ks(a.k)
        if a.split not in ("test", "val"):
            raise RecsysError(f"split={a.split!r} must be test or val")
        if a.protocol not in ("full", "sampled", "both"):
            raise RecsysError(f"protocol={a.protocol!r} must be full, sampled or both")
        if a.eval_users < 0:
            raise RecsysError(f"eval_users={a.eval_users} must be >= 0 (0 = rank every user)")
        ranking.PAIR_CHUNK = max(1, a.batch_size)
        train_run = tracking.run_id_of_model(a.model_uri)
        ttags = tracking.run_tags(train_run)
        mlflow.set_tag("mlflow.runName", f"evaluate {ttags.get('model', 'model')} {a.split}")
        if ttags.get("step") != "train":  # the true reason first, before any advice about its data
            raise RecsysError(f"model URI {a.model_uri!r} is not a recsys model (its run {train_run} is not a train "
                              "run of this project); pass the model a train run logged, runs:/<train_run_id>/model")
        data_uri = a.data if a.data not in ("", "auto") else ttags.get("data_uri")
        if not data_uri:
            raise RecsysError(f"training run {train_run} recorded no data URI; pass data=runs:/<prepare_run>/data")
        data = prep.load(tracking.download(data_uri, "data", tmp / "data"))
        tracking.check_data(data_uri, data.meta["content_hash"])
        if ttags.get("task") and ttags["task"] != data.meta["task"]:
            raise RecsysError(f"the model was trained for the {ttags['task']} task but {data_uri} holds "
                              f"{data.meta['task']} data; evaluate it on data prepared with task={ttags['task']}")
        if ttags.get("ids_hash") and ttags["ids_hash"] != data.meta["ids_hash"]:
            raise RecsysError(f"{data_uri} is another dataset than the model was trained on (user/item ids differ); "
                              "pass data prepared from the same dataset and filters")
        if max(ks) > data.n_items:
            raise RecsysError(f"k={max(ks)} is more than the {data.n_items:,} items of {data_uri}; use k <= {data.n_items}")
        module = tracking.load_bundle(a.model_uri, tmp / "model").module
        tracking.log_params({**vars(a), "data": data_uri, "data_uri": data_uri})
        tracking.log_context({"train_run_id": train_run, "model_uri": a.model_uri, "data_uri": data_uri,
                              "model": ttags.get("model", ""), "step": "evaluate",
                              "seed": ttags.get("seed", data.meta.get("seed", "")),
                              **evaluation.setup_tags(data.meta, a.split, a.protocol, a.eval_users)})
        ds = tracking.log_data_input(data, data_uri, "evaluation")
        t0 = time.perf_counter()
        ev = evaluation.evaluate(module, data, a.split, ks, a.protocol, a.eval_users)
        tracking.log_model_metrics({**ev.metrics, "evaluate_seconds": time.perf_counter() - t0}, a.model_uri, ds)
        out = tmp / "out"
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))
        ev.per_user.to_parquet(out / "per_user.parquet", index=False)
        (out / "examples.md").write_text(evaluation.examples_markdown(module, data))
        for f in ("metrics.json", "per_user.parquet", "examples.md"):
            mlflow.log_artifact(out / f)
        for png in _plots(ev, data, a.split, out):
            mlflow.log_artifact(png, "plots")
        key = TASKS[data.meta["task"]].key(a.split)
        value = ev.metrics.get(key, float("nan"))
        registered = tracking.registered_version(a.model_uri, train_run)
        if registered:  # decided on validation, whichever split this run reports
            print(_promote(*registered, module, data, a, tmp))
        mlflow.set_tag("mlflow.note.content", f"{ttags.get('model', 'model')} on {data.meta.get('name')} {a.split} "
                          f"({data.meta['task']}, {data.meta['split']}): {key} = {value:.4f}; trained in run {train_run}")
        print(f"evaluated {a.model_uri} on {data.meta.get('name')} {a.split}: {key}={value:.4f} (run {run.info.run_id})")
    return run.info.run_id


def _promote(name, version, module, data, a, tmp) -> str:
    """Move `champion` to this version only when it is significantly better than the current champion on
    the validation split: both scored here on the same rows and protocol, the report's paired per-user
    test (the difference's 95% interval excludes 0). Test decides nothing. The evidence goes on the run
    and on the model version."""
    from recsys import report

    task = data.meta["task"]
    key = TASKS[task].key("val")
    setup = {k: v for k, v in evaluation.setup_tags(data.meta, "val", a.protocol).items()
             if k in ("dataset", "task", "data_split", "tie_break", "protocol")}
    mine = evaluation.evaluate(module, data, "val", [10], a.protocol, a.eval_users)
    value = mine.metrics[key]
    tracking.tag_version(name, version, {**setup, "metric_key": key, "metric": f"{value:.6f}"})
    champ = tracking.champion_version(name)
    evidence = {}
    if champ is None:
        decision, champ_value, champ_v = "promoted: first champion", float("nan"), ""
    elif champ[0] == version:
        decision, champ_value, champ_v = "is the champion", value, version
    else:
        champ_v, champ_tags, champ_run = champ
        other = {k: champ_tags.get(k) for k in setup}
        champ_ids = tracking.run_tags(champ_run).get("ids_hash") if champ_run else None
        if other != setup or champ_ids != data.meta["ids_hash"]:
            decision, champ_value = f"kept: the champion (version {champ_v}) is for another setup {other}", float("nan")
        else:  # score the champion here, on exactly these rows
            champ_module = tracking.load_bundle(f"models:/{name}/{champ_v}", tmp / "champion").module
            theirs = evaluation.evaluate(champ_module, data, "val", [10], a.protocol, a.eval_users)
            champ_value = theirs.metrics[key]
            test = report.paired_test(mine.per_user, theirs.per_user, task)
            unit = "MSE" if task == "rating" else "NDCG@10"
            evidence = {"registry.paired_delta": f"{test['delta']:.6f}", "registry.paired_se": f"{test['se']:.6f}",
                        "registry.paired_users": str(test["n"])}
            said = f"paired Δ{unit} {test['delta']:+.4f} ± {test['se']:.4f} over {test['n']} users on validation"
            decision = (f"promoted over version {champ_v} ({said})" if test["better"]
                        else f"kept version {champ_v}: not significantly better ({said})")
    if decision.startswith("promoted"):
        tracking.set_champion(name, version)
    record = {"registry.model": name, "registry.version": version, "registry.champion_before": champ_v,
              "registry.metric_key": key, "registry.champion_metric": f"{champ_value:.6f}",
              "registry.candidate_metric": f"{value:.6f}", "registry.decision": decision, **evidence}
    mlflow.set_tags(record)
    tracking.tag_version(name, version, {k.replace("registry.", "promotion."): v for k, v in record.items()
                                         if k not in ("registry.model", "registry.version")})
    return f"{name} version {version} ({key}={value:.4f}): {decision}"


def _plots(ev, data, split, tmp):
    if ev.predictions is not None:
        pr = ev.predictions
        yield plots.rating_histogram(pr["actual"].to_numpy(), pr["predicted"].to_numpy(), tmp / "predictions_histogram.png", split)
        yield plots.calibration(pr["actual"].to_numpy(), pr["predicted"].to_numpy(), tmp / "calibration.png", split)
        metric = "rmse"
    else:
        metric = "ndcg_at_10"
        if ev.top_items is not None:
            counts = np.bincount(data.train[ITEM], minlength=data.n_items)
            yield plots.popularity(counts, ev.top_items[:, :10], tmp / "popularity.png", split)
    vals = {b: ev.metrics[f"{split}/activity_{b}/{metric}"] for _, _, b in evaluation.ACTIVITY_BUCKETS
            if f"{split}/activity_{b}/{metric}" in ev.metrics}
    counts = {b: int(ev.metrics.get(f"{split}/activity_{b}/n_rows", ev.metrics.get(f"{split}/activity_{b}/n_users", 0)))
              for b in vals}
    if vals:
        yield plots.by_bucket(vals, counts, tmp / "by_activity.png", metric, split)


if __name__ == "__main__":
    main()
