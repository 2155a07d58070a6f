"""evaluate: score a trained model on prepared data in a NEW run linked to its training run.

Parameters: model_uri (runs:/<train_run>/model, models:/<id>, models:/<name>@<alias>), data (default:
the data URI the training run recorded), split (test | val), k (e.g. 5,10,20), protocol (full |
sampled | both; implicit only), eval_users (implicit: rank for a seeded sample of this many users, the
same sample for every model on the same data; 0 = all; recorded in the protocol tag, so the report
never mixes it with full evaluations).
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

import mlflow

from recsys import evaluation, metrics, plots, tracking
from recsys.data import prepare as prep
from recsys.errors import RecsysError
from recsys.schema import TASKS
from steps import ArgParser, choice, given, integer

p = ArgParser(prog="evaluate", description=__doc__.splitlines()[0])
p.add_argument("--model-uri", "--model_uri", dest="model_uri", required=True)
p.add_argument("--data", default="auto")
p.add_argument("--split", default="test")
p.add_argument("--k", default="5,10,20")
p.add_argument("--protocol", default="both")
p.add_argument("--eval-users", "--eval_users", dest="eval_users", default="0")


def main(argv=None):
    with tracking.step_run("evaluate") as run, tempfile.TemporaryDirectory(prefix="recsys-evaluate-") as tmp:
        tmp = Path(tmp)
        a = p.parse_args(argv)
        ks = metrics.parse_ks(a.k)
        choice("split", a.split, ("test", "val"))
        choice("protocol", a.protocol, ("full", "sampled", "both"))
        a.eval_users = integer("eval_users", a.eval_users)
        train_run, ttags = tracking.trained_by(a.model_uri)
        mlflow.set_tag("mlflow.runName", f"evaluate {ttags.get('model', 'model')} {a.split}")
        data_uri = given(a.data) or ttags.get("data_uri")
        if not data_uri:
            raise RecsysError(f"training run {train_run} recorded no data URI; pass data=runs:/<prepare_run>/data")
        data = prep.load(tracking.download(data_uri, "data", tmp / "data"))
        tracking.check_scorable(ttags, data, data_uri, max(ks))
        module = tracking.load_bundle(a.model_uri, tmp / "model").module
        # a sample as large as the split is every user: the full protocol, tagged as such
        users = evaluation.sample_size(data, a.split, a.eval_users) if data.meta["task"] == "implicit" else a.eval_users
        tracking.log_params({**vars(a), "data": data_uri, "data_uri": data_uri})
        tracking.log_context({"train_run_id": train_run, "model_uri": a.model_uri, "data_uri": data_uri,
                              "model": ttags.get("model", ""), "step": "evaluate",
                              "seed": ttags.get("seed", data.meta.get("seed", "")),
                              **evaluation.setup_tags(data.meta, a.split, a.protocol, users)})
        ds = tracking.log_data_input(data, data_uri, "evaluation")
        t0 = time.perf_counter()
        ev = evaluation.evaluate(module, data, a.split, ks, a.protocol, users)
        tracking.log_model_metrics({**ev.metrics, "evaluate_seconds": time.perf_counter() - t0}, a.model_uri, ds)
        out = tmp / "out"
        out.mkdir()
        (out / "metrics.json").write_text(json.dumps(ev.metrics, indent=2))
        ev.per_user.to_parquet(out / "per_user.parquet", index=False)
        (out / "examples.md").write_text(evaluation.examples_markdown(module, data))
        for f in ("metrics.json", "per_user.parquet", "examples.md"):
            mlflow.log_artifact(out / f)
        for png in plots.evaluation_plots(ev, data, a.split, out):
            mlflow.log_artifact(png, "plots")
        key = TASKS[data.meta["task"]].key(a.split)
        value = ev.metrics.get(key, float("nan"))
        registered = tracking.registered_version(a.model_uri, train_run)
        if registered:  # decided on validation, whichever split this run reports
            print(tracking.promote(*registered, module, data, a.protocol, users, tmp))
        mlflow.set_tag("mlflow.note.content", f"{ttags.get('model', 'model')} on {data.meta.get('name')} {a.split} "
                       f"({data.meta['task']}, {data.meta['split']}): {key} = {value:.4f}; trained in run {train_run}")
        print(f"evaluated {a.model_uri} on {data.meta.get('name')} {a.split}: {key}={value:.4f} (run {run.info.run_id})")
    return run.info.run_id


if __name__ == "__main__":
    main()
