"""Tune every model for both tasks on ML-100K (validation only) and, with --apply, write the winners
into configs/ as the new defaults.

    python bench/tune_all.py [--experiment tuning] [--trials 30] [--timeout 240] [--parallel 2] [--repeats 1] [--apply]

Runs `mlflow run . -e tune` for each model x task that has a search space (global_mean has none;
popularity only rating's damping), from a clean clone of HEAD so the runs record a clean commit,
`--parallel` sweeps at a time (each one torch thread). The implicit task is leave_last_out with every
rating a positive and the default tie rule. Each sweep stops at `--trials` or after `--timeout`
(`--implicit-timeout`) seconds, whichever comes first. Prints a table: trials (pruned), sweep seconds, best validation
score and the best config's test score (looked at once, after the sweep). `--apply` merges each sweep's best
values into configs/<model>.yaml: a rating sweep's into the model:/training: sections, an implicit
sweep's into implicit:, comments kept.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
p = argparse.ArgumentParser()
p.add_argument("--experiment", default="tuning")
p.add_argument("--models", default="mf,ncf,fm,wide_deep,dcn,dcnv2,autoint,popularity")
p.add_argument("--tasks", default="rating,implicit")
p.add_argument("--trials", type=int, default=30)
p.add_argument("--timeout", type=int, default=240, help="seconds per rating sweep")
p.add_argument("--implicit-timeout", type=int, default=360, help="seconds per implicit sweep (slower trials)")
p.add_argument("--jobs", default="", help="model:task,... instead of every model x task")
p.add_argument("--parallel", type=int, default=2)
p.add_argument("--repeats", type=int, default=1, help="training seeds per trial (tune's repeats)")
p.add_argument("--apply", action="store_true")
p.add_argument("--apply-only", action="store_true", help="no sweeps: apply the latest finished sweep of each "
               "model x task in the experiment")
a = p.parse_args()

from recsys import config, search  # noqa: E402

env = {**os.environ}
env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def mlflow_run(clone, entry, params, log):
    cmd = [sys.executable, "-m", "mlflow", "run", str(clone), "-e", entry, "--env-manager", "local",
           "--experiment-name", a.experiment] + [x for kv in params for x in ("-P", kv)]
    with open(log, "w") as f:
        # from the working directory: a new experiment's artifacts (best_config.yaml, plots) land in
        # ./mlruns beside ./mlflow.db, not in the temporary clone's folder that is deleted at the end
        subprocess.run(cmd, env=env, check=True, stdout=f, stderr=subprocess.STDOUT)


def sweep(clone, model, task, data, tmp):
    import mlflow

    log = tmp / f"{model}-{task}.log"
    timeout = a.implicit_timeout if task == "implicit" else a.timeout
    mlflow_run(clone, "tune", [f"model={model}", f"data=runs:/{data[task]}/data", f"trials={a.trials}",
                               f"timeout={timeout}", f"repeats={a.repeats}", "test=true"], log)
    run = re.findall(r"runs:/([0-9a-f]{32})/best_config.yaml", log.read_text())[-1]
    r = mlflow.get_run(run)
    best_yaml = Path(mlflow.artifacts.download_artifacts(run_id=run, artifact_path="best_config.yaml",
                                                         dst_path=str(tmp / f"{model}-{task}")))
    return r, best_yaml


def _short(v):
    """Two significant digits: what one seed's noise supports (docs/tuning.md)."""
    return float(f"{v:.2g}") if isinstance(v, float) else v


def _yaml(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _implicit_block(text: str, values: dict) -> str:
    """`text` with its implicit: section replaced by `values` (placed before search:; none when empty)."""
    text = re.sub(r"^implicit:.*?(?=^search:|\Z)", "", text, flags=re.S | re.M)
    if not values:
        return text
    block = "implicit:                   # task=implicit\n" + "".join(f"  {k}: {_yaml(v)}\n" for k, v in values.items())
    return text.replace("search:", block + "search:", 1) if "\nsearch:" in text else text.rstrip("\n") + "\n" + block


def _set(text: str, section: str, key: str, value, drop: bool = False) -> str:
    """`text` with `key: value` in its top-level `section:` block, comments kept: replaced where the key
    is, added at the block's end where it is not, removed when `drop` (the value is the default)."""
    m = re.search(rf"^{section}:[^\n]*\n((?:  [^\n]*\n)*)", text, re.M)
    if m is None:  # no such section yet: a new one before implicit: / search:
        if drop:
            return text
        at = min([i for i in (text.find("\nimplicit:"), text.find("\nsearch:")) if i >= 0] or [len(text)])
        return text[:at].rstrip("\n") + f"\n{section}:\n  {key}: {_yaml(value)}\n" + text[at:].lstrip("\n")
    block = m.group(1)
    line = re.search(rf"^  {key}:[^\n]*\n", block, re.M)
    if drop:
        block = block.replace(line.group(0), "") if line else block
    elif line:
        block = re.sub(rf"^(  {key}: *)([^#\n]*?)( *#.*)?$", lambda x: x.group(1) + _yaml(value) + (x.group(3) or ""),
                       block, count=1, flags=re.M)
    else:
        block += f"  {key}: {_yaml(value)}\n"
    return text[:m.start(1)] + block + text[m.end(1):]


def apply(model: str, task: str, best_yaml: Path) -> dict:
    """Merge the swept task's values into configs/<model>.yaml (comments kept), so that the file still
    holds only what differs: training values equal to configs/defaults.yaml are dropped, implicit:
    keeps only what differs from the rating task, and a rating sweep that moves a value the implicit
    task inherits pins the old value in implicit:."""
    path = config.CONFIG_DIR / f"{model}.yaml"
    text = path.read_text()
    implicit = dict(yaml.safe_load(text).get("implicit") or {})
    defaults = yaml.safe_load(config.DEFAULTS.read_text())["training"]
    best = yaml.safe_load(best_yaml.read_text())
    space = search.search_space(model, path, task)
    before = config.load(model, path, task="implicit")
    hp, cfg = config.load(model, path, task="rating")
    rating = {**hp, **cfg.model_dump(exclude={"runtime"})}
    model_keys = config.model_schema(model).model_fields
    if task == "implicit":
        values = {k: _short(best["implicit"][k]) for k in space}
        merged = {**implicit, **values}
        text = _implicit_block(text, {k: v for k, v in merged.items() if rating.get(k) != v})
    else:
        values = {k: _short((best["model"] if k in model_keys else best["training"])[k]) for k in space}
        for k, v in values.items():
            if k not in implicit and rating[k] != v:
                implicit[k] = rating[k]  # the implicit task keeps what it had
            section = "model" if k in model_keys else "training"
            text = _set(text, section, k, v, drop=section == "training" and defaults.get(k) == v)
        text = _implicit_block(text, {k: v for k, v in implicit.items() if values.get(k, rating.get(k)) != v})
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    config.load(model, tmp, task=task)  # still a valid config
    if task == "rating":
        assert config.load(model, tmp, task="implicit") == before, "the implicit task's values moved"
    tmp.replace(path)
    return values


def latest_sweeps(jobs, tmp):
    """The newest finished tune run of each model x task in the experiment, with its best_config.yaml."""
    import mlflow

    out = []
    for model, task in jobs:
        runs = mlflow.search_runs(experiment_names=[a.experiment], output_format="list", max_results=1,
                                  filter_string=f"tags.step = 'tune' and params.model = '{model}' and "
                                                f"tags.task = '{task}' and attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"])
        if runs:
            best = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path="best_config.yaml",
                                                       dst_path=str(tmp / f"{model}-{task}"))
            out.append(((model, task), (runs[0], Path(best))))
    return out


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    jobs = []
    for model in a.models.split(","):
        for task in a.tasks.split(","):
            try:
                search.search_space(model, None, task)
            except Exception:
                continue
            jobs.append((model, task))
    if a.jobs:
        jobs = [tuple(j.split(":")) for j in a.jobs.split(",")]
    if a.apply_only:
        results = latest_sweeps(jobs, tmp)
    else:
        clone = tmp / "recsys"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        # the prepare runs first (once each), so parallel sweeps reuse them instead of racing to create them
        data = {}
        for task in sorted({t for _, t in jobs}):
            log = tmp / f"prepare-{task}.log"
            extra = ["split=leave_last_out", "positive_threshold=1"] if task == "implicit" else []
            mlflow_run(clone, "prepare", [f"task={task}"] + extra, log)
            data[task] = re.findall(r"Run \(ID '([0-9a-f]{32})'\) succeeded", log.read_text())[-1]
        with ThreadPoolExecutor(a.parallel) as pool:
            results = list(pool.map(lambda j: (j, sweep(clone, *j, data, tmp)), jobs))
    print("| model | task | trials (pruned) | sweep s | best val | best config's test | best values |")
    print("|---|---|---|---|---|---|---|")
    for (model, task), (run, best_yaml) in results:
        m = run.data.metrics
        key = "rmse" if task == "rating" else "ndcg_at_10"
        values = apply(model, task, best_yaml) if a.apply or a.apply_only else {}
        print(f"| {model} | {task} | {m['trials_finished']:.0f} ({m['trials_pruned']:.0f}) | {m['sweep_seconds']:.0f} | "
              f"{m[f'best/val/{key}']:.4f} | {m[f'best/test/{key}']:.4f} | {values or ''} |", flush=True)
