"""Reading an experiment back: its finished evaluations (the report), the prepare runs peers still need.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from recsys.errors import RecsysError
from recsys.schema import TASKS
from recsys.tracking.lineage import COMPLETE_TAG, run_tags
from recsys.tracking.runs import epoch_history

def experiment_id(name: str) -> str:
    """The id of an existing experiment, or a one-line error listing the ones there are."""
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        names = [e.name for e in mlflow.search_experiments()][:10]
        raise RecsysError(f"experiment {name!r} does not exist; existing: {', '.join(names) or 'none'}")
    return exp.experiment_id


def prepare_runs_without_peers(experiment: str) -> list[str]:
    """Data URIs of the experiment's finished prepare runs that no peer run has used yet."""
    exp = experiment_id(experiment)
    done = {r.data.tags.get("data_uri") for r in mlflow.search_runs([exp], "tags.peer != ''", output_format="list")}
    preps = mlflow.search_runs([exp], "tags.step = 'prepare' and attributes.status = 'FINISHED'", output_format="list")
    return [u for u in (f"runs:/{r.info.run_id}/data" for r in preps) if u not in done]


def past_seconds(prepare_run: str, models: list[str], experiment: str) -> dict[str, float]:
    """Each model's latest finished train run on the same data (the prepare run's content hash): the
    seconds it took, with its evaluation on the same prepare run where there is one (main's scheduling:
    the longest first)."""
    digest = mlflow.MlflowClient().get_run(prepare_run).data.tags.get("content_hash", "")
    same_uri = f"tags.data_uri = 'runs:/{prepare_run}/data'"
    out: dict[str, float] = {}
    for step, on in (("train", f"tags.content_hash = '{digest}'" if digest else same_uri), ("evaluate", same_uri)):
        runs = mlflow.search_runs([experiment], f"tags.step = '{step}' and attributes.status = 'FINISHED' and {on}",
                                  order_by=["attributes.start_time DESC"], output_format="list", max_results=1000)
        latest: dict[str, float] = {}
        for r in runs:
            m = r.data.tags.get("model")
            if m in models and m not in latest and r.info.end_time:
                latest[m] = (r.info.end_time - r.info.start_time) / 1000
        for m, sec in latest.items():
            out[m] = out.get(m, 0.0) + sec
    return out


def _set_by_hand(tags: dict) -> list[str]:
    """What a train run's `-P key=value` overrides (its `overrides` tag) changed of its shipped config."""
    from recsys.config_fields import set_by_hand  # here: the served model's code ships without config

    try:
        found = json.loads(tags.get("overrides", "{}"))
    except ValueError:
        return []
    return set_by_hand(found) if isinstance(found, dict) else []


def finished_evaluations(experiment: str) -> list[dict]:
    """Every finished evaluate run (the project's and peers') of an experiment, as plain dicts with
    its tags, metrics, the training run's time and learning curve, newest first."""
    exp = experiment_id(experiment)
    runs = mlflow.search_runs([exp], "tags.step = 'evaluate' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], output_format="list")
    out = []
    for r in runs:
        tags, metrics = r.data.tags, dict(r.data.metrics)
        rec = {"run_id": r.info.run_id, "tags": tags, "metrics": metrics, "train_run": tags.get("train_run_id", ""),
               "train_seconds": metrics.get("train_seconds", float("nan")), "history": {}}
        if rec["train_run"]:
            try:
                train = mlflow.get_run(rec["train_run"])
            except Exception:
                train = None
            if train is not None:
                rec["train_seconds"] = train.data.metrics.get("train_seconds", float("nan"))
                rec["config"] = {k: v for k, v in train.data.params.items()
                                 if k.startswith(("model.", "training.")) and k != "training.seed"}
                rec["set_by_hand"] = _set_by_hand(train.data.tags)
                if train.data.tags.get("step") == "blend":  # what the blend found on validation
                    rec["blend_weights"] = train.data.tags.get("blend.weights", "")
                    rec["blend_verdict"] = train.data.tags.get("blend.verdict", "")
                monitor = TASKS[tags.get("task") or "rating"].key("val")
                rec["history"] = epoch_history(rec["train_run"], ["train/loss", "val/loss", monitor])
        out.append(rec)
    return out


def download_file(run_id: str, path: str, dst: Path) -> Path | None:
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except Exception:
        return None


def blend_members(runs: str) -> list[dict]:
    """The finished train runs a blend is asked for: ids separated by commas, or a main run id (its
    train runs, ran or reused); each a FINISHED train run with its completion tag, or a one-line error."""
    ids = [r.strip() for r in runs.split(",") if r.strip()]
    if len(ids) == 1 and run_tags(ids[0]).get("mlflow.project.entryPoint") == "main":
        tags = run_tags(ids[0])
        ids = [v for k, v in sorted(tags.items()) if k.startswith(("ran.train.", "reused.train."))]
    out = []
    for rid in ids:
        try:
            run = mlflow.get_run(rid)
        except Exception:
            raise RecsysError(f"runs: no run {rid!r}; pass finished train run ids (or a main run id)") from None
        tags = run.data.tags
        if tags.get("step") != "train" or run.info.status != "FINISHED" or tags.get(COMPLETE_TAG) != "true":
            raise RecsysError(f"run {rid} is not a finished train run (step {tags.get('step')!r}, status "
                              f"{run.info.status}); pass finished train run ids (or a main run id)")
        out.append({"run_id": rid, "model": tags.get("model", ""), "task": tags.get("task", ""),
                    "content_hash": tags.get("content_hash", ""), "ids_hash": tags.get("ids_hash", ""),
                    "data_uri": tags.get("data_uri", ""), "seed": tags.get("seed", "")})
    return out


def leaderboard(models: list[str], results: dict[str, tuple[str, str]], task: str) -> str:
    """main's markdown table: each model's test metrics (schema.TASKS' columns), train seconds, what its
    `-P` overrides changed of its shipped config (a shortened schedule shows) and its (train run,
    evaluate run) from `results`."""
    rows, keys = [], [f"test/{c}" for c in TASKS[task].columns]
    for m in models:
        tr, ev = results[m]
        train, me = mlflow.get_run(tr).data, mlflow.get_run(ev).data.metrics
        mt, hand = train.metrics, _set_by_hand(train.tags)  # a shortened or changed run says so
        rows.append([m, *[f"{me.get(k, float('nan')):.4f}" for k in keys], f"{mt.get('train_seconds', float('nan')):.1f}",
                     ", ".join(hand), tr, ev])
    header = ["model", *keys, "train s", "changed by -P", "train run", "eval run"]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])
