"""One thin script per MLflow entry point; run as `python -m steps.<name>` from the project root."""

import logging
import os
import warnings

# Keep step output to what a person needs: no per-file download bars, no library tips and deprecations.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
warnings.filterwarnings("ignore", category=UserWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
for name in ("pytorch_lightning", "lightning_fabric", "mlflow.pyfunc", "mlflow.models.model"):
    logging.getLogger(name).setLevel(logging.ERROR)
