"""The only package of the library that talks to MLflow, one concern a module:

- runs:          a step's run and its lifecycle (KILLED / FAILED / FINISHED; signals: recsys/interrupts.py), trial runs, logging
- guard:         the program that keeps an interrupted step's run KILLED
- lineage:       git commit and diff, library versions and device, the data as an input, model -> run
- pyfunc:        the served model, logged and loaded
- registry:      registered versions and the `champion` alias
- orchestration: reuse of complete runs and launching child runs (main, and train's default data)
- queries:       reading an experiment back (the report, main's leaderboard, the peers bench)
- trials:        a tune sweep's nested trial runs and its summary
"""

from recsys.tracking.lineage import COMPLETE_TAG, canonical, check_data, check_scorable, trained_by, entry_params, git_info, log_context, log_data_input, request_fingerprint, run_id_of_model, run_tags
from recsys.tracking.orchestration import default_data, find_reusable_run, launch, longest_first, run_pipelines, summary
from recsys.tracking.pyfunc import load_bundle, load_model, log_model, log_served
from recsys.tracking.queries import blend_members, download_file, leaderboard, experiment_id, finished_evaluations, past_seconds, prepare_runs_without_peers
from recsys.tracking.registry import check_name, champion_version, promote, registered_version, set_champion, tag_version
from recsys.tracking.resume import resumable, resume_request
from recsys.tracking.trained import log_trained
from recsys.tracking.trials import log_sweep, trial_objective
from recsys.tracking.runs import (child_run, download, epoch_history, lightning_logger, log_metrics,
                                  log_model_metrics, log_params, step_run)

__all__ = ["COMPLETE_TAG", "blend_members", "canonical", "champion_version", "check_data", "check_name", "check_scorable", "promote", "trained_by", "child_run", "default_data", "download", "download_file", "entry_params",
           "epoch_history", "experiment_id", "find_reusable_run", "finished_evaluations", "git_info",
           "launch", "leaderboard", "run_pipelines", "lightning_logger", "load_bundle", "load_model", "log_model", "log_served", "log_context", "log_data_input", "log_metrics",
           "log_model_metrics", "log_params", "prepare_runs_without_peers", "request_fingerprint", "registered_version", "resumable", "resume_request", "log_sweep", "log_trained", "trial_objective",
           "run_id_of_model", "run_tags", "set_champion", "step_run", "tag_version"]
