"""The last module the preloaded interpreter imports (tracking/prefork.py): what every step forked from it
would otherwise compute again for itself, computed once there.

- MLflow's map of installed packages (read from every distribution's metadata, about a second on two
  CPU cores): it checks a model's requirements against it when train logs the model and when evaluate
  loads it;
- matplotlib's fonts and renderer, which train's plots would load on their first figure.
"""

import io

from recsys.tracking import mlflow_internals


def _draw() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], label="warm")
    ax.set_xlabel("epoch")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)


for _warm in (mlflow_internals.installed_packages, _draw):
    try:  # a warm-up that fails leaves the step to do it (an exception here would stop the server)
        _warm()
    except Exception:
        pass
