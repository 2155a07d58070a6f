"""blend: combine finished train runs into one model, with weights fitted on validation only.

Parameters (docs/reference.md#blend): runs (train run ids separated by commas, or a main run id: its
train runs), method (linear: ridge regression of the ratings; for implicit data a weighted sum of each
member's per-user standardised scores, the weights searched on validation's ranking headline), register_as.
Logs the members and weights (params, tags blend.*), the validation metric of the blend and of each
member, and the `model` as a train run logs it: `evaluate`, `report`, the registry and serving take it.
"""

import tempfile
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
        fitted, found = blend.fit(scorers, data)
        ckpt = tmp / "model.ckpt"
        torch.save(blend.checkpoint(fitted.model, data.n_users, data.n_items), ckpt)
        weights = ", ".join(f"{m['model']} {w:.4f}" for m, w in zip(members, found["weights"]))
        tracking.log_params({"runs": ",".join(m["run_id"] for m in members), "method": a.method,
                             "data_uri": data_uri, "task": task})
        key = TASKS[task].key("val")
        tracking.log_context({"step": "blend", "model": name, "task": task, "data_uri": data_uri,
                              "dataset": data.meta.get("name"), "content_hash": data.meta["content_hash"],
                              "ids_hash": data.meta["ids_hash"], "seed": members[0]["seed"],
                              "blend.members": ",".join(m["run_id"] for m in members), "blend.weights": weights,
                              "blend.bias": f"{found['bias']:.6f}", "blend.alpha": str(found["alpha"])})
        tracking.log_metrics({f"best_{key.replace('/', '_')}": found[key],
                              **{f"member_{key.replace('/', '_')}.{suffix}": v
                                 for suffix, v in zip(blend.member_keys(members), found["members"])}})
        model_uri = tracking.log_served(ckpt, data, tmp, a.register_as,
                                        {"model": name, "dataset": data.meta.get("name", ""), "task": task})
        mlflow.set_tags({"model_uri": model_uri, "mlflow.note.content": f"{name} on {data.meta.get('name')} ({task}): "
                         f"weights {weights}; {key} = {found[key]:.4f}"})
        members_line = ", ".join(f"{m['model']} {v:.4f}" for m, v in zip(members, found["members"]))
        print(f"{name}: weights {weights}; {key}={found[key]:.4f} (members: {members_line})")
        print(f"model URI: runs:/{run.info.run_id}/model ({model_uri})")
    return run.info.run_id


if __name__ == "__main__":
    main()
