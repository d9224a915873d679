"""A content vector for a movie the model has not seen, from its metadata tokens.

Repeats the trainer's transform with the arrays it ships in the bundle: sublinear TF-IDF
over ``kind=value`` tokens, kind weights, L2 norm, projection on the SVD components, L2 norm.
Tokens outside the trained vocabulary are ignored; no known token gives the zero vector.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from recsys_core.artifacts import ModelBundle


def content_vector(bundle: ModelBundle, tokens: Iterable[str]) -> npt.NDArray[np.float32]:
    dim = bundle.content_vectors.shape[1]
    vocab = bundle.extra.get("content_tokens")
    if vocab is None or vocab.size == 0:
        return np.zeros(dim, dtype=np.float32)
    index = {str(t): i for i, t in enumerate(vocab.tolist())}
    counts = Counter(t for t in tokens if t in index)
    if not counts:
        return np.zeros(dim, dtype=np.float32)
    cols = np.fromiter((index[t] for t in counts), dtype=np.int64)
    tf = 1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64))
    vals = tf * bundle.extra["content_idf"][cols] * bundle.extra["content_token_weights"][cols]
    vals = vals / np.linalg.norm(vals)
    comps = bundle.extra["content_components"]
    vec: npt.NDArray[np.float64] = np.asarray(comps[:, cols] @ vals, dtype=np.float64)
    norm = float(np.linalg.norm(vec))
    out: npt.NDArray[np.float32] = (vec / norm if norm > 0 else vec).astype(np.float32)
    return out
