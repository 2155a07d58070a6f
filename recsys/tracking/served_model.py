"""The code of every logged recsys model (MLflow's models-from-code): loading a model runs this file
and the `recsys` package logged beside it, never a pickle. The model's state is its checkpoint (tensors,
loaded `weights_only`) and its serving tables (parquet, npz without pickles)."""

import mlflow.models

from recsys.tracking.pyfunc import PyfuncModel

mlflow.models.set_model(PyfuncModel())
