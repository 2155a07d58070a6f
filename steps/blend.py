"""blend: combine finished train runs into one model, with weights fitted on validation only.

Parameters (docs/reference.md#blend): runs (train run ids separated by commas, or a main run id: its
train runs), method (linear: ridge regression of the ratings; for implicit data a weighted sum of each
member's per-user standardised scores, the weights searched on validation's ranking headline), register_as.
Logs the members and weights (params, tags blend.*), the blend's cross-fitted (out-of-fold) validation
metric as best_val_* (its in-sample one as insample_val_*: a training score of its weights), each member's,
train_seconds (the weights' fit, as a train run's),
blend.verdict (degenerate, or not better than its best member out of fold), oof_per_user.parquet (what
the registry judges it by), and the `model` as a train run logs it: `evaluate`, `report`, the registry and serving take it.
"""

import tempfile
import time
from pathlib import Path

import mlflow
import torch

from recsys import blend, tracking
from recsys.data import prepare as prep
from recsys.schema import TASKS
from steps import ArgParser, choice, given

p = ArgParser(prog="blend", description=__doc__.splitlines()[0])
p.add_argument("--runs", required=True)
p.add_argument("--method", default="linear")
p.add_argument("--register-as", "--register_as", dest="register_as", default="")


def main(argv=None):
    with tracking.step_run("blend") as run, tempfile.TemporaryDirectory(prefix="recsys-blend-") as tmp:
        tmp = Path(tmp)
        a = p.parse_args(argv)
        choice("method", a.method, ("linear",))
        a.register_as = given(a.register_as)
        if a.register_as:
            tracking.check_name(a.register_as)
        members = tracking.blend_members(a.runs)
        blend.check_members(members)
        name = f"blend({'+'.join(m['model'] for m in members)})"
        mlflow.set_tag("mlflow.runName", name)
        data_uri, task = members[0]["data_uri"], members[0]["task"]
        data = prep.load(tracking.download(data_uri, "data", tmp / "data"))
        tracking.check_data(data_uri, data.meta["content_hash"])
        scorers = [tracking.load_bundle(f"runs:/{m['run_id']}/model", tmp / m["run_id"]).module for m in members]
        started = time.perf_counter()
        fitted, found = blend.fit(scorers, data)
        fit_seconds = time.perf_counter() - started
        ckpt = tmp / "model.ckpt"
        torch.save(blend.checkpoint(fitted.model, data.n_users, data.n_items), ckpt)
        weights = ", ".join(f"{m['model']} {w:.4f}" for m, w in zip(members, found["weights"]))
        tracking.log_params({"runs": ",".join(m["run_id"] for m in members), "method": a.method,
                             "data_uri": data_uri, "task": task})
        key, mode = TASKS[task].key("val"), TASKS[task].mode
        short = key.replace("/", "_")
        verdict = blend.verdict(found, mode)
        tracking.log_context({"step": "blend", "model": name, "task": task, "data_uri": data_uri,
                              "dataset": data.meta.get("name"), "content_hash": data.meta["content_hash"],
                              "ids_hash": data.meta["ids_hash"], "seed": members[0]["seed"],
                              "blend.members": ",".join(m["run_id"] for m in members), "blend.weights": weights,
                              "blend.bias": f"{found['bias']:.6f}", "blend.alpha": str(found["alpha"]),
                              "blend.verdict": verdict or "earns its row"})
        # the evidence is out of fold (weights chosen without the user's fold); in-sample is a training score
        tracking.log_metrics({"train_seconds": fit_seconds, f"best_{short}": found["out_of_fold"],
                              f"insample_{short}": found["in_sample"],
                              **{f"member_{short}.{suffix}": v
                                 for suffix, v in zip(blend.member_keys(members), found["members"])}})
        found["per_user"].to_parquet(tmp / blend.OOF_FILE, index=False)
        mlflow.log_artifact(tmp / blend.OOF_FILE)  # what the registry judges the blend by
        model_uri = tracking.log_served(ckpt, data, tmp, a.register_as,
                                        {"model": name, "dataset": data.meta.get("name", ""), "task": task})
        said = (f"weights {weights}; {key} out of fold {found['out_of_fold']:.4f} (in-sample {found['in_sample']:.4f})"
                + (f"; {verdict}" if verdict else ""))
        mlflow.set_tags({"model_uri": model_uri,
                         "mlflow.note.content": f"{name} on {data.meta.get('name')} ({task}): {said}"})
        members_line = ", ".join(f"{m['model']} {v:.4f}" for m, v in zip(members, found["members"]))
        print(f"{name}: {said} (members: {members_line})")
        print(f"model URI: runs:/{run.info.run_id}/model ({model_uri})")
    return run.info.run_id


if __name__ == "__main__":
    main()
