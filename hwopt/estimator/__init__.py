"""Stage 7, estimator: the learned cost model: per-kernel XGBoost latency (and off-chip traffic) regressors per target.

Modules, one idea each:

- ``features``: a kernel's feature vector (geometry, FLOPs/bytes, P-aware staircase and array folds);
- ``regressor``: per-kind boosted regressors on log latency over a log-linear base (fit, save, load);
- ``train``: a measurements table -> a trained estimator folder (model files + card);
- ``memory``: exact parameter and peak live activation bytes in the target's layout;
- ``fallback``: the explicit, flagged roofline for kernels the estimator cannot score;
- ``estimator``: the batch API the search uses (``load_estimator``, ``Estimator``, ``ModelEstimate``);
- ``profile``: the kernel sweep (which kernels to measure on a target, measured resumably).

The per-kernel table and totals the CLI prints are in ``hwopt.report.estimate``.
"""

from hwopt.estimator.estimator import Estimator, ModelEstimate, load_estimator

__all__ = ["Estimator", "ModelEstimate", "load_estimator"]
