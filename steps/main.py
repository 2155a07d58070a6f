"""main: prepare -> train -> evaluate, each its own MLflow run nested under this one.

Parameters: dataset, task, split, positive_threshold, tie_break, eval_negatives (passed on to prepare), models (comma-separated; `model` is an alias),
config, lr, epochs, embedding_dim, seed, k, env_manager (forwarded to every child), force (1 = re-run
even where a finished run could be reused), parallel (models trained and evaluated at once, each with its
share of the cores; auto = as many as there are models and cores), blend (1: also blend the models'
train runs, evaluate the blend and list it), eval_users (implicit: every model and the blend ranked for
the same seeded sample of this many test users; 0 = every user).
Steps pass URIs only (runs:/<prepare>/data, runs:/<train>/model). A FINISHED child with the same
params, commit and diff hash is reused (tags reused.<step>). Logs leaderboard.md and tags
<model>.train_run / <model>.eval_run; prints the leaderboard.
"""

import os
import time

import mlflow

from recsys import tracking
from recsys.errors import RecsysError
from recsys.metrics import parse_ks
from recsys.models import requested
from recsys.schema import prepare_param, task_of
from steps import ArgParser, flag, given, integer

p = ArgParser(prog="main", description=__doc__.splitlines()[0])
for name, default in [*((k, prepare_param(k)) for k in ("dataset", "task", "split", "positive_threshold", "tie_break")),
                      ("models", "mf"), ("model", ""), ("config", ""), ("lr", ""),
                      ("epochs", ""), ("embedding_dim", ""), ("seed", prepare_param("seed")), ("k", "5,10,20"), ("env_manager", "local"),
                      ("force", "0"), ("register_as", ""), ("parallel", "auto"), ("blend", "0"),
                      ("eval_negatives", "auto"), ("eval_users", "0")]:
    flags = {f"--{name.replace('_', '-')}", f"--{name}"}  # MLflow appends undeclared -P key=value as --key value
    p.add_argument(*sorted(flags), dest=name, default=default)



def main(argv=None):
    with tracking.step_run("main") as run:
        a = p.parse_args(argv)
        mlflow.set_tag("mlflow.runName", f"main {a.dataset} {a.task}")
        models, repeated = requested(a.model or a.models)
        if repeated:  # a model listed twice trains, and blends, once
            print(f"models: {', '.join(repeated)} listed more than once; each is trained once", flush=True)
        integer("seed", a.seed)
        eval_users = integer("eval_users", a.eval_users)
        sample = {"eval_users": eval_users} if eval_users else {}
        parse_ks(a.k)  # before anything trains: evaluate would refuse it last
        if a.register_as:
            tracking.check_name(a.register_as)
        split = given(a.split) or task_of(a.task).split
        force, blended = flag("force", a.force), flag("blend", a.blend)
        if blended and len(models) < 2:
            raise RecsysError("blend=1 needs two or more models to blend, e.g. models=mf,fm,ncf")
        cores = os.cpu_count() or 1
        parallel = min(len(models), cores if not given(a.parallel) else integer("parallel", a.parallel, 1))
        # side by side, each child gets its share of the cores (torch would start one thread per core in each)
        env = {"OMP_NUM_THREADS": str(max(1, cores // parallel))} if parallel > 1 else None
        exp, log, cost = run.info.experiment_id, [], {}

        def found(entry, params, label):
            rid = None if force else tracking.find_reusable_run(entry, params, exp)
            if rid:
                record(label, rid, True, 0.0)
            return rid

        def record(label, rid, reused, seconds, cpu_s=0.0, peak_gib=0.0):
            cost[label] = (seconds, cpu_s, peak_gib)
            log.append(f"{label}: {'reused' if reused else 'ran'} run {rid}"
                       + ("" if reused else f" in {seconds:.1f}s ({cpu_s:.1f}s CPU, {peak_gib:.2f} GiB peak)"))
            print(log[-1], flush=True)
            mlflow.set_tags({f"{'reused' if reused else 'ran'}.{label}": rid})

        prep_params = {"dataset": a.dataset, "task": a.task, "split": split, "positive_threshold": a.positive_threshold,
                       "tie_break": a.tie_break, "seed": a.seed}
        if given(a.eval_negatives):  # passed on to prepare (its default otherwise)
            prep_params["eval_negatives"] = integer("eval_negatives", a.eval_negatives)
        t0 = time.perf_counter()
        def prepare():
            return (yield "prepare", prep_params, "prepare")

        prep = tracking.run_pipelines({"prepare": prepare()}, 1, found, record, a.env_manager, exp,
                                      preload=True)["prepare"]

        order = tracking.longest_first(models, tracking.past_seconds(prep, models, exp))

        def pipeline(m):  # train, then evaluate: each a step, reused where a finished run matches
            tp = {"data": f"runs:/{prep}/data", "model": m, "task": a.task, "seed": a.seed,
                  **{k: getattr(a, k) for k in ("config", "lr", "epochs", "embedding_dim", "register_as") if getattr(a, k)}}
            tr = yield "train", tp, f"train.{m}"
            ev = yield "evaluate", {"model_uri": f"runs:/{tr}/model", "k": a.k, **sample}, f"evaluate.{m}"
            return tr, ev

        results = tracking.run_pipelines({m: pipeline(m) for m in order}, parallel, found, record, a.env_manager,
                                         exp, env)
        if blended:  # the models' train runs combined on validation, then evaluated like them
            def combine():
                bl = yield "blend", {"runs": ",".join(results[m][0] for m in models)}, "blend"
                return bl, (yield "evaluate", {"model_uri": f"runs:/{bl}/model", "k": a.k, **sample}, "evaluate.blend")

            results.update(tracking.run_pipelines({"blend": combine()}, 1, found, record, a.env_manager, exp))
            models = [*models, "blend"]
            verdict = mlflow.get_run(results["blend"][0]).data.tags.get("blend.verdict", "")
            if verdict and verdict != "earns its row":
                print(f"blend: does not earn its row ({verdict})", flush=True)
        table = tracking.leaderboard(models, results, a.task)
        mlflow.log_text(f"# Leaderboard: {a.dataset} {a.task} ({split})\n\n{table}\n\n" + "\n".join(log) + "\n",
                        "leaderboard.md")
        tracking.log_metrics({**{f"seconds.{k}": v[0] for k, v in cost.items()},
                              **{f"{m}.{k}": v[i] for k, v in cost.items() if v[0] > 0
                                 for i, m in ((1, "cpu_seconds"), (2, "peak_gib"))}})
        tracking.log_context({"dataset": a.dataset, "task": a.task, "step": "main", "models": ",".join(models),
                              "parallel": str(parallel)})
        print(table)
        print(tracking.summary(time.perf_counter() - t0, cost), flush=True)


if __name__ == "__main__":
    main()
