"""report: the leaderboard of an experiment's finished evaluations, peers beside the project's models.

Parameters: experiment (name, required), output (file stem, default `report`).
Reads every FINISHED evaluate run of the experiment (steps/evaluate.py and bench/peers.py), groups them
by dataset x task x split x tie rule x threshold x protocol, and logs `report.md` (the markdown
leaderboard, also printed) and `headline.md` (the best rows and baselines of each table, for the README), `report.html` (self-contained: tables and inline PNGs of metric vs
training time and each model's learning curve). Metrics: `groups`, `runs`.
"""

import tempfile
from pathlib import Path

import pandas as pd

import mlflow

from recsys import report, report_page, tracking
from recsys.errors import RecsysError
from steps import ArgParser

p = ArgParser(prog="report", description=__doc__.splitlines()[0])
p.add_argument("--experiment", required=True)
p.add_argument("--output", default="report")


def main(argv=None):
    with tracking.step_run("report") as run:
        a = p.parse_args(argv)
        mlflow.set_tag("mlflow.runName", f"report {a.experiment}")
        if not a.output or Path(a.output).name != a.output or a.output in (".", ".."):
            raise RecsysError(f"output={a.output!r} must be a file name without folders (it names report.md and .html)")
        records = tracking.finished_evaluations(a.experiment)
        if not records:
            raise RecsysError(f"experiment {a.experiment!r} has no finished evaluate runs; run main or evaluate "
                              "(and bench/peers.py) into it first")
        per_user = {}
        with tempfile.TemporaryDirectory() as tmp:
            for r in records:
                f = tracking.download_file(r["run_id"], "per_user.parquet", Path(tmp) / r["run_id"])
                if f is not None:
                    per_user[r["run_id"]] = pd.read_parquet(f)
            groups = report.build(records, per_user)
            md = report.markdown(groups, a.experiment)
            page = report_page.html_page(groups, a.experiment)
            out = Path(tmp) / "out"
            out.mkdir()
            (out / f"{a.output}.md").write_text(md)
            (out / f"{a.output}.html").write_text(page)
            (out / "headline.md").write_text(report.headline(groups))
            tracking.log_context({"step": "report", "experiment": a.experiment})
            tracking.log_params({"experiment": a.experiment, "output": a.output})
            tracking.log_metrics({"groups": len(groups), "runs": sum(len(r.runs) for g in groups for r in g.rows)})
            mlflow.log_artifact(out / f"{a.output}.md")
            mlflow.log_artifact(out / f"{a.output}.html")
            mlflow.log_artifact(out / "headline.md")
        print(md)
        print(f"report: runs:/{run.info.run_id}/{a.output}.html")
    return run.info.run_id


if __name__ == "__main__":
    main()
