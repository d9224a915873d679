"""Implicit ALS (``implicit``) over confidences from :mod:`recsys_core.confidence`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits


@dataclass
class AlsModel:
    user_factors: npt.NDArray[np.float32]
    item_factors: npt.NDArray[np.float32]
    regularization: float


def fit_als(
    confidence: sp.csr_matrix,
    factors: int = 64,
    regularization: float = 0.5,
    iterations: int = 15,
    seed: int = 0,
    cg_steps: int = 3,
) -> AlsModel:
    """Fit on a users × items CSR matrix whose values are the confidences ``c_ui``.

    ``implicit``'s own ``alpha`` stays 1.0 so that the confidence rule lives in one place;
    ``use_gpu`` is set explicitly because its default depends on the machine. Each half-step
    takes ``cg_steps`` conjugate-gradient steps from the previous solution (``implicit``'s
    default 3; 0: exact Cholesky solves).
    """
    from implicit.als import AlternatingLeastSquares

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=1.0,
            iterations=iterations,
            use_gpu=False,
            use_cg=cg_steps > 0,
            random_state=seed,
            calculate_training_loss=False,
        )
        if cg_steps > 0:
            model.cg_steps = cg_steps  # not a constructor argument in implicit 0.7
        model.fit(confidence.astype(np.float32).tocsr(), show_progress=False)
    return AlsModel(
        np.asarray(model.user_factors, dtype=np.float32),
        np.asarray(model.item_factors, dtype=np.float32),
        regularization,
    )
