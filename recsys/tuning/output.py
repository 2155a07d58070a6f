"""What a sweep leaves: the best configuration as a config file, and Optuna's plots."""

from __future__ import annotations

from pathlib import Path

import yaml

from recsys import config


def best_config(name: str, path: Path, params: dict, task: str) -> str:
    """The model's config with the best values in place: a file `train -P config=` accepts.
    A rating sweep writes the base sections; an implicit sweep writes the `implicit:` overrides, so
    one task's tuning never moves the other's defaults."""
    doc = yaml.safe_load(Path(path).read_text())
    for key, value in params.items():
        if task == "implicit":
            doc["implicit"] = {**(doc.get("implicit") or {}), key: value}
        else:
            section = "model" if key in config.model_schema(name).model_fields else "training"
            doc[section] = {**(doc.get(section) or {}), key: value}
    header = (f"# {name}: best trial of a {task} tune sweep (values replace the defaults; search: kept for the "
              "next sweep)\n")
    return header + yaml.safe_dump(doc, sort_keys=False)


def plots(study, folder: Path) -> list[Path]:
    """Optimisation history and parameter importances (when there are enough finished trials)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    import warnings

    out = []
    for name, fn in (("optimization_history.png", ovm.plot_optimization_history),
                     ("param_importances.png", ovm.plot_param_importances)):
        try:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore")
                ax = fn(study)
        except (ValueError, RuntimeError, ZeroDivisionError):
            continue  # too few complete trials for importances
        fig = ax.figure if hasattr(ax, "figure") else ax[0].figure
        fig.set_size_inches(8, 4.5)
        fig.tight_layout()
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
        out.append(folder / name)
    return out
