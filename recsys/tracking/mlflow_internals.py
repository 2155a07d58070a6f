"""MLflow's non-public pieces this project relies on, in one place: an MLflow upgrade that moves one
breaks here (and in the tests that call these), not across the project.

- the MLproject file as MLflow reads it (entry points, the params `mlflow run` logs);
- starting an entry point the way `mlflow.projects.run(..., synchronous=True)` does (the local backend
  runs the entry point's command itself) without waiting for it, so the caller holds the process;
- the registry's rule for a model name;
- the SQL tracking store's sessions, each run inside a section the caller gives (`shield_store`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import mlflow


def load_project(root: Path):
    from mlflow.projects import _project_spec

    return _project_spec.load_project(str(root))


def entry_points(root: Path) -> dict:
    """name -> MLflow's EntryPoint (`.parameters`: name -> Parameter with `.type`, `.default`)."""
    return load_project(root)._entry_points


def entry_params(root: Path, entry: str, params: dict) -> dict[str, str]:
    """The params `mlflow run` logs for `entry` given `params`: every declared one (its default where not
    given) and every extra one."""
    spec = load_project(root).get_entry_point(entry)
    final, extra = spec.compute_parameters({k: str(v) for k, v in params.items()}, storage_dir=None)
    return {k: str(v) for k, v in {**final, **extra}.items()}


def start_entry_point(root: Path, entry: str, params: dict, env_manager: str, experiment_id: str):
    """Create the entry point's run (a child of the active run, its params and project tags as
    `mlflow run` writes them) and start its command in a process; return MLflow's LocalSubmittedRun
    (`.run_id`, `.command_proc`) without waiting. No second `mlflow run` CLI is started."""
    from mlflow.projects.backend.local import LocalBackend
    from mlflow.projects.utils import (PROJECT_BUILD_IMAGE, PROJECT_DOCKER_ARGS, PROJECT_DOCKER_AUTH,
                                       PROJECT_ENV_MANAGER, PROJECT_STORAGE_DIR, PROJECT_SYNCHRONOUS)
    from mlflow.utils.mlflow_tags import MLFLOW_PROJECT_BACKEND

    # MLflow announces "=== Created directory ... for downloading remote URIs" (a temporary folder this
    # project's parameters never use: it passes run and model URIs, not `path` parameters) at INFO for
    # every step: noise in a step's output
    logging.getLogger("mlflow.projects.utils").setLevel(logging.WARNING)
    config = {PROJECT_ENV_MANAGER: env_manager, PROJECT_SYNCHRONOUS: True, PROJECT_DOCKER_ARGS: {},
              PROJECT_STORAGE_DIR: None, PROJECT_BUILD_IMAGE: False, PROJECT_DOCKER_AUTH: None}
    from mlflow.projects.backend import local

    launch = local._run_entry_point
    if env_manager == "local":  # the step forked from a preloaded interpreter (tracking/prefork.py)
        local._run_entry_point = functools.partial(_forked_entry_point, launch)
    try:
        sub = LocalBackend().run(str(root), entry, {k: str(v) for k, v in params.items()}, None, config,
                                 mlflow.get_tracking_uri(), experiment_id)
    finally:
        local._run_entry_point = launch
    mlflow.MlflowClient().set_tag(sub.run_id, MLFLOW_PROJECT_BACKEND, "local")
    return sub


def _forked_entry_point(started, command: str, work_dir: str, experiment_id: str, run_id: str):
    """MLflow's local backend's `_run_entry_point`, the command forked rather than started by bash: the
    same environment (this one's and the run's variables), working directory and log line; any other
    command is `started` as MLflow starts it."""
    import os

    from mlflow.projects.submitted_run import LocalSubmittedRun
    from mlflow.projects.utils import get_run_env_vars

    from recsys.tracking import prefork

    env = {**os.environ, **get_run_env_vars(run_id, experiment_id)}
    proc = prefork.start(command, work_dir, env)
    if proc is None:
        return started(command, work_dir, experiment_id, run_id=run_id)
    logging.getLogger("mlflow.projects.backend.local").info(
        "=== Running command '%s' in run with ID '%s' (forked from a preloaded interpreter) === ", command, run_id)
    return LocalSubmittedRun(run_id, proc)


def validate_model_name(name: str) -> None:
    """Raises MlflowException when the registry would refuse `name`."""
    from mlflow.utils.validation import _validate_model_name

    _validate_model_name(name)


def shield_store(section) -> None:
    """Every session of this process's tracking store, where it is an SQL database (SQLite, PostgreSQL,
    MySQL), runs inside `section()` (recsys/interrupts.py: no signal cuts one in its middle). Once per store."""
    from mlflow.tracking._tracking_service.utils import _get_store

    store = _get_store()
    sessions = getattr(store, "ManagedSessionMaker", None)
    if sessions is None or getattr(sessions, "shielded", False):  # a server's REST store: nothing held here
        return

    @contextlib.contextmanager
    def shielded(*args, **kwargs):
        with section(), sessions(*args, **kwargs) as session:
            yield session

    shielded.shielded = True
    store.ManagedSessionMaker = shielded


def installed_packages() -> None:
    """MLflow's map of the installed distributions' modules, read once for this process (it checks a
    model's pip requirements against it when the model is logged and when it is loaded)."""
    from mlflow.utils import requirements_utils

    requirements_utils._init_modules_to_packages_map()
