"""The one place that talks to MLflow: runs, URIs, run context, reuse lookup, the served model."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pandas as pd

from recsys.errors import Interrupted, RecsysError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


COMPLETE_TAG = "recsys.complete"  # written last: a run without it never counts as done, whatever its status


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def ignore_signals() -> None:
    """While a step winds down after an interrupt, a second Ctrl-C must not cut its bookkeeping short."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def step_run(name: str):
    """Resume the run `mlflow run` started (MLFLOW_RUN_ID), or start one, and end it truthfully.

    - success: the `recsys.complete` tag is written last, then the run ends FINISHED;
    - a RecsysError: one line on stderr, exit 2, run FAILED with the message as the `error` tag;
    - SIGINT / SIGTERM (Lightning would turn SIGTERM into a clean exit): run KILLED with an `error`
      tag, one line, exit 128 + signal;
    - anything else is a bug: run FAILED with the exception's first line as `error`, traceback kept.
    """
    try:
        run = mlflow.start_run(run_name=None if os.environ.get("MLFLOW_RUN_ID") else name)
        mlflow.set_tag("mlflow.runName", name)  # `mlflow run` names runs at random
    except Exception as e:
        print(f"error: could not start an MLflow run ({str(e).splitlines()[0]})", file=sys.stderr)
        sys.exit(2)
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield run
        mlflow.set_tag(COMPLETE_TAG, "true")
    except RecsysError as e:
        ignore_signals()
        _end(run, "FAILED", str(e))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as e:
        ignore_signals()
        msg = f"interrupted by {e}; what was logged is kept" + (
            f" (continue with -P resume_from={run.info.run_id})" if name == "train" else "")
        _end(run, "KILLED", msg)
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except BaseException as e:
        ignore_signals()
        _end(run, "FAILED", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    mlflow.end_run()


def _end(run, status: str, error: str) -> None:
    try:
        mlflow.set_tag("error", error[:5000])
    except Exception:
        pass
    mlflow.end_run(status)


def git_info(root: Path = PROJECT_ROOT) -> dict:
    """Commit, dirty flag and a hash of the uncommitted diff (MLflow records only HEAD)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout

    commit = git("rev-parse", "HEAD").strip()
    if not commit:
        return {"git_commit": "none", "git_dirty": "unknown", "git_diff_hash": ""}
    status = git("status", "--porcelain")
    diff = git("diff", "HEAD") + status
    return {"git_commit": commit, "git_dirty": str(bool(status.strip())).lower(),
            "git_diff_hash": hashlib.sha256(diff.encode()).hexdigest()[:16] if status.strip() else ""}


def environment_info() -> dict:
    """Versions from package metadata (importing Lightning just to read its version costs seconds). The
    device and thread count only where torch is in use: prepare never imports it."""
    from importlib.metadata import version

    info = {"python_version": platform.python_version(), "torch_version": version("torch"),
            "lightning_version": version("pytorch-lightning"), "mlflow_version": version("mlflow"),
            "numpy_version": version("numpy"), "pandas_version": version("pandas")}
    torch = sys.modules.get("torch")
    if torch is not None:
        info.update(cuda_version=str(torch.version.cuda), torch_threads=str(torch.get_num_threads()),
                    device="cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available()
                    else f"cpu:{platform.processor() or platform.machine()}")
    else:
        info["device"] = f"cpu:{platform.processor() or platform.machine()}"
    return info


def log_context(extra_tags: dict | None = None) -> None:
    """Tags every run carries: git commit + dirty flag + diff hash, library versions, device."""
    tags = {**git_info(), **environment_info(), **(extra_tags or {})}
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_params(params: dict) -> None:
    """Log params not already on the run (`mlflow run` logs the entry point's own; re-logging a key
    with a differently spelt value, e.g. '.1' vs '0.1', would be an error)."""
    have = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    new = {k: str(v) for k, v in params.items() if k not in have}
    if new:
        mlflow.log_params(new)


def download(uri: str, what: str, dst: Path | None = None) -> Path:
    """Local copy of an artifact URI (under `dst`, a folder the caller removes), or a one-line error."""
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst) if dst else None))
    except Exception as e:
        raise RecsysError(f"{what} URI {uri!r} could not be read ({str(e).splitlines()[0][:200]}); "
                          "pass an existing runs:/<run_id>/<path> URI") from None


def log_dir(local: Path, artifact_path: str) -> None:
    mlflow.log_artifacts(str(local), artifact_path)


def run_tags(run_id: str) -> dict:
    try:
        return mlflow.get_run(run_id).data.tags
    except Exception:
        raise RecsysError(f"run {run_id!r} does not exist in {mlflow.get_tracking_uri()}; pass the URI a train "
                          "run printed (runs:/<train_run_id>/model)") from None


def run_id_of_model(model_uri: str) -> str:
    """The training run behind a runs:/ or models:/ URI."""
    if model_uri.startswith("runs:/"):
        parts = model_uri.split("/")
        if len(parts) < 3 or not parts[1]:
            raise RecsysError(f"model URI {model_uri!r} is malformed; use runs:/<train_run_id>/model")
        return parts[1]
    try:
        info = mlflow.models.get_model_info(model_uri)
        return info.run_id
    except Exception as e:
        raise RecsysError(f"model URI {model_uri!r} could not be resolved ({str(e).splitlines()[0][:200]})") from None


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    client = mlflow.MlflowClient()
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: input rows with `user` (raw id, string or integer) and optionally `item`.

    Without `item`: the top-`k` (param, default 10) unseen items per user with rank, score, title,
    year, genres and `fallback`; with `item`: one score per row (predicted rating, or P(positive) for
    implicit). A bad request raises MLflow's exception with INVALID_PARAMETER_VALUE, which the scoring
    server answers with HTTP 400 and the one-line message.
    """

    def load_context(self, context):
        from recsys.serving import load_bundle

        self.bundle = load_bundle(context.artifacts["checkpoint"], context.artifacts["serving"])

    # a DataFrame type hint: MLflow validates nothing from it (the logged signature is the contract)
    # and stops warning that the hints are missing
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            return self.bundle.predict(model_input, (params or {}).get("k", 10))
        except RecsysError as e:
            raise MlflowException(str(e), error_code=INVALID_PARAMETER_VALUE) from None


def log_model(checkpoint: Path, serving_dir: Path, register_as: str = "") -> str:
    """Log the pyfunc model (checkpoint + the serving tables) under `model`; return its URI. With
    `register_as`, the model is registered as a new version of that name."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType

    signature = ModelSignature(  # ids as strings or integers; `user` checked by the model (one-line 400s)
        inputs=Schema([ColSpec(AnyType(), "user", required=False), ColSpec(AnyType(), "item", required=False)]),
        params=ParamSchema([ParamSpec("k", "long", 10)]),
    )
    users = pd.read_parquet(Path(serving_dir) / "users.parquet")["raw_id"].head(2).tolist()
    info = mlflow.pyfunc.log_model(
        name="model", python_model=RecommenderModel(),
        artifacts={"checkpoint": str(checkpoint), "serving": str(serving_dir)},
        code_paths=[str(PROJECT_ROOT / "recsys")],
        pip_requirements=_requirements(), signature=signature, input_example=(pd.DataFrame({"user": users}), {"k": 10}),
        registered_model_name=register_as or None,
    )
    return info.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"torch=={version('torch').split('+')[0]}"] + [
        f"{p}=={version(p)}" for p in ("pytorch-lightning", "mlflow", "pandas", "pyarrow", "numpy", "pyyaml")]


def load_model(model_uri: str, dst: Path | None = None):
    if dst is not None:
        Path(dst).mkdir(parents=True, exist_ok=True)
    try:
        return mlflow.pyfunc.load_model(model_uri, dst_path=str(dst) if dst else None)
    except RecsysError:
        raise
    except Exception as e:
        raise RecsysError(f"model URI {model_uri!r} could not be loaded ({str(e).splitlines()[0][:200]}); "
                          "pass runs:/<train_run_id>/model or models:/<id>") from None


def log_json(obj, name: str) -> None:
    mlflow.log_dict(obj, name)


def lightning_logger(run_id: str):
    """Lightning's MLFlowLogger bound to the current run and store (its defaults start a new run in ./mlruns)."""
    from pytorch_lightning.loggers import MLFlowLogger

    class RunLogger(MLFlowLogger):
        def log_hyperparams(self, params, *args, **kwargs):
            """The step logs the resolved config itself; Lightning's names (lr, ...) would clash
            with the entry point's own params."""

    return RunLogger(run_id=run_id, tracking_uri=mlflow.get_tracking_uri(), log_model=False)


def epoch_history(run_id: str, keys: list[str]) -> dict[str, list[float]]:
    return {k: [v for _, v in sorted(metric_history(run_id, k))] for k in keys}


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    mlflow.log_artifact(str(path), artifact_path)


def _is_count(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("n_")


def log_metrics(values: dict, model_id: str | None = None, dataset=None) -> None:
    """Scores as metrics (attached to a LoggedModel and a dataset when given); counts (`.../n_rows`,
    `.../n_users`) as `count.` tags, out of the metric charts."""
    mlflow.log_metrics({k: float(v) for k, v in values.items() if v == v and not _is_count(k)},
                       model_id=model_id, dataset=dataset)
    counts = {f"count.{k}": str(int(v)) for k, v in values.items() if _is_count(k)}
    if counts:
        mlflow.set_tags(counts)


def set_tags(tags: dict) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


# --- chaining steps (main) -------------------------------------------------------------------------
def canonical(value) -> str:
    """A parameter as reuse compares it: numbers as numbers (`4`, `4.0` and `4.00` are one value)."""
    text = str(value).strip()
    try:
        f = float(text)
    except ValueError:
        return text
    if f != f or f in (float("inf"), float("-inf")):
        return text
    return repr(int(f)) if f.is_integer() else repr(f)


def find_reusable_run(entry: str, params: dict[str, str], experiment_id: str) -> str | None:
    """A complete FINISHED run of `entry` with equal params (compared canonically), the same commit and
    the same diff hash; for train, its model must be logged.

    Upstream runs are covered by the params: they carry the upstream data / model URIs. A run without
    the completion tag (interrupted, or from before it existed) is never reused.
    """
    git = git_info()
    if git["git_commit"] == "none":
        return None
    query = (f"tags.`mlflow.project.entryPoint` = '{entry}' and attributes.status = 'FINISHED' "
             f"and tags.git_commit = '{git['git_commit']}' and tags.`{COMPLETE_TAG}` = 'true'")
    for run in mlflow.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], output_format="list"):
        tags, stored = run.data.tags, run.data.params
        if tags.get("git_diff_hash", "") != git["git_diff_hash"]:
            continue
        if all(k in stored and canonical(stored[k]) == canonical(v) for k, v in params.items()):
            if entry == "train" and not _has_model(run.info.run_id):
                continue
            return run.info.run_id
    return None


def _has_model(run_id: str) -> bool:
    try:
        return any(a.path == "model" for a in mlflow.MlflowClient().list_artifacts(run_id)) or \
            bool(mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'", output_format="list"))
    except Exception:
        return False


def launch(entry: str, params: dict[str, str], env_manager: str, experiment_id: str) -> str:
    """Run an entry point of this project as a child of the active run; return its run id.

    A failed child raises RecsysError naming the step, its run id and its own one-line error. On
    SIGINT/SIGTERM the child's whole process group (`mlflow run` starts it in its own session) is
    stopped, its run marked KILLED, and the interrupt goes on to end this run too.
    """
    if env_manager not in ("local", "virtualenv", "uv", "conda"):
        raise RecsysError(f"env_manager={env_manager!r} is not one of local, virtualenv, uv, conda")
    try:
        sub = mlflow.projects.run(str(PROJECT_ROOT), entry_point=entry, parameters=params, env_manager=env_manager,
                                  experiment_id=experiment_id, synchronous=False)
    except Exception as e:
        raise RecsysError(f"step {entry} could not start ({str(e).splitlines()[0][:300]})") from None
    try:
        ok = sub.wait()
    except Interrupted:
        ignore_signals()
        _stop(sub)
        raise
    if not ok:
        err = mlflow.get_run(sub.run_id).data.tags.get("error", "see the run's output")
        raise RecsysError(f"step {entry} failed (run {sub.run_id}): {err}")
    return sub.run_id


def _stop(sub, grace_s: float = 30) -> None:
    """SIGTERM to the child's process group; wait until every process in it is gone (SIGKILL after
    `grace_s`): the step inside gets the time to mark its own run KILLED."""
    import time

    proc = getattr(sub, "command_proc", None)
    if proc is not None:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                proc.poll()  # reap the group leader, or it lingers as a zombie in the group
                try:
                    os.killpg(proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break
    client = mlflow.MlflowClient()
    if client.get_run(sub.run_id).info.status not in ("KILLED", "FAILED"):
        client.set_tag(sub.run_id, "error", "interrupted: its parent main run was stopped")
        client.set_terminated(sub.run_id, "KILLED")


def run_metrics(run_id: str) -> dict[str, float]:
    return mlflow.get_run(run_id).data.metrics


def log_text(text: str, name: str) -> None:
    mlflow.log_text(text, name)


def use_experiment(name: str) -> str:
    return mlflow.set_experiment(name).experiment_id


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
                monitor = "val/rmse" if tags.get("task") == "rating" else "val/ndcg_at_10"
                rec["history"] = epoch_history(rec["train_run"], ["train/loss", "val/loss", monitor])
        out.append(rec)
    return out


def download_file(run_id: str, path: str, dst: Path) -> Path | None:
    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=str(dst)))
    except Exception:
        return None


def name_run(name: str) -> None:
    """Runs are named after what they are (`train mf`, `evaluate mf test`), not at random."""
    mlflow.set_tag("mlflow.runName", name)


def resumable(run_id: str) -> dict:
    """data, model and overrides of a train run whose interrupted training can be continued."""
    import ast

    try:
        run = mlflow.get_run(run_id)
    except Exception:
        raise RecsysError(f"resume_from={run_id!r}: no such run; pass the id of an interrupted train run") from None
    tags, params = run.data.tags, run.data.params
    if tags.get("step") != "train" or "data" not in params:
        raise RecsysError(f"resume_from={run_id!r} is not a train run; pass the id of an interrupted train run")
    if not any(a.path == "checkpoint/last.ckpt" for a in mlflow.MlflowClient().list_artifacts(run_id, "checkpoint")):
        raise RecsysError(f"train run {run_id} logged no checkpoint/last.ckpt (it stopped before its first epoch "
                          "ended); start the training again instead")
    try:
        overrides = ast.literal_eval(tags.get("overrides", "{}"))
    except (ValueError, SyntaxError):
        overrides = {}
    return {"data": params["data"], "model": params.get("model", tags.get("model", "mf")), "overrides": overrides}


def default_data(task: str) -> str:
    """The data URI for a train run given no data: a complete prepare run of ml-100k for `task` with the
    default parameters on this commit, or a new one run as a child of the active run."""
    from recsys.schema import TASKS

    if task not in TASKS:
        raise RecsysError(f"task={task!r} is not one of {', '.join(TASKS)}")
    params = {"dataset": "ml-100k", "task": task, "split": "random" if task == "rating" else "leave_last_out",
              "positive_threshold": "4", "tie_break": "random", "seed": "42"}
    exp = mlflow.active_run().info.experiment_id
    rid = find_reusable_run("prepare", params, exp)
    if rid:
        print(f"data: reusing prepare run {rid}", flush=True)
    else:
        print("data: none given; preparing ml-100k for the " + task + " task", flush=True)
        rid = launch("prepare", params, "local", exp)
    mlflow.set_tag("data_prepare_run", rid)
    return f"runs:/{rid}/data"


def log_data_input(data, data_uri: str, context: str) -> None:
    """The data as a run input (Datasets in the UI): the model's page then links to what it was fitted
    or scored on. Schema and digest only; the rows stay in the prepare run's artifact."""
    m = data.meta
    kw = {"name": m.get("name", "data"), "digest": m["content_hash"][:16]}
    try:  # the artifact's own location where MLflow can resolve it (file://, s3://, ...)
        from mlflow.tracking.artifact_utils import get_artifact_uri

        run_id, path = data_uri.removeprefix("runs:/").split("/", 1)
        ds = mlflow.data.from_pandas(data.train.head(0), source=get_artifact_uri(run_id, path), **kw)
    except Exception:
        ds = mlflow.data.from_pandas(data.train.head(0), **kw)
    mlflow.log_input(ds, context=context)
    return ds


def log_model_metrics(metrics: dict, model_uri: str, dataset=None) -> None:
    """Metrics on the run, attached to the LoggedModel behind `model_uri` and the dataset (the model's page
    shows them)."""
    try:
        model_id = mlflow.models.get_model_info(model_uri).model_id
    except Exception:
        model_id = None
    log_metrics(metrics, model_id=model_id, dataset=dataset)


def describe(text: str) -> None:
    """The run's one-line description (shown at the top of its page in the UI)."""
    mlflow.set_tag("mlflow.note.content", text)


# --- registry ----------------------------------------------------------------------------------------
CHAMPION = "champion"


def registered_version(model_uri: str, train_run: str):
    """(name, version) of the registered model version behind a URI or a train run, or None."""
    client = mlflow.MlflowClient()
    try:
        ref = model_uri.removeprefix("models:/")
        if model_uri.startswith("models:/") and ("@" in ref or "/" in ref):  # models:/m-<id> is a LoggedModel
            if "@" in ref:
                name, alias = ref.split("@", 1)
                v = client.get_model_version_by_alias(name, alias)
            else:
                name, version = ref.split("/", 1)
                v = client.get_model_version(name, version)
            return v.name, str(v.version)
        found = client.search_model_versions(f"run_id = '{train_run}'")
    except Exception:
        return None
    return (found[0].name, str(found[0].version)) if found else None


def champion_version(name: str):
    """(version, its tags) holding the champion alias, or None."""
    client = mlflow.MlflowClient()
    try:
        v = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:
        return None
    return str(v.version), dict(v.tags), v.run_id


def set_champion(name: str, version: str) -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)


def tag_version(name: str, version: str, tags: dict) -> None:
    client = mlflow.MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, str(v))


@contextlib.contextmanager
def child_run(name: str, pruned_exc: type[BaseException] | None = None):
    """A nested run under the active one (a tune trial): FINISHED on success, KILLED when pruned (tag
    `optuna.state`) or interrupted, FAILED otherwise."""
    run = mlflow.start_run(run_name=name, nested=True)
    try:
        yield run
    except BaseException as e:
        pruned = pruned_exc is not None and isinstance(e, pruned_exc)
        mlflow.set_tags({"optuna.state": "PRUNED" if pruned else "FAILED",
                         "mlflow.runName": f"{name} (pruned)" if pruned else name,
                         **({} if pruned else {"error": f"{type(e).__name__}: {str(e)[:300]}"})})
        mlflow.end_run("KILLED" if pruned or isinstance(e, Interrupted) else "FAILED")
        raise
    mlflow.set_tag("optuna.state", "COMPLETE")
    mlflow.end_run()


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()
