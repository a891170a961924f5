"""Scoring large sets of sequences with one ``.elstm`` model: in this process, on Dask or on Ray.

    from edgelstm import scale
    scale.score("model.elstm", "history.parquet", "scores", engine="dask", window=50, stride=10)
    y = scale.predict_dask("model.elstm", x)                    # x: a dask array; y: lazy
    ds.map_batches(scale.RayPredictor, fn_constructor_args=("model.elstm",), concurrency=4)

We schedule nothing ourselves: parts of the input go to the engine's workers, each loads the
model once and writes its part atomically; a rerun resumes. See `data` for the inputs and
outputs, `engines` for the engines.
"""

from .engines import ENGINES, RayPredictor, Summary, predict_dask, score
from .worker import ModelRef

__all__ = ["score", "predict_dask", "RayPredictor", "ModelRef", "Summary", "ENGINES"]
