"""Content-based item vectors: TF-IDF over metadata tokens (genres, people, tags, languages,
countries, decade), weighted by kind, reduced with truncated SVD and L2-normalised.

Movies without metadata get a zero vector (they score 0 on the content component).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from recsys_core.vocab import Vocabulary

KIND_WEIGHTS: dict[str, float] = {
    "genre": 1.0,
    "director": 1.0,
    "writer": 0.7,
    "actor": 0.6,
    "producer": 0.4,
    "tag": 0.8,
    "language": 0.3,
    "country": 0.3,
    "decade": 0.5,
}


def movie_tokens(
    movies: Vocabulary, attributes: pd.DataFrame, years: npt.NDArray[np.int32]
) -> list[list[str]]:
    """One token list per movie in vocabulary order: ``kind=value``."""
    tokens: list[list[str]] = [[] for _ in range(len(movies))]
    if len(attributes):
        idx = movies.indices(attributes["movie_id"].astype(str), on_missing="minus_one")
        keep = idx >= 0
        kinds = attributes["kind"].to_numpy()[keep]
        values = attributes["value"].astype(str).to_numpy()[keep]
        for i, kind, value in zip(idx[keep], kinds, values, strict=True):
            if kind in KIND_WEIGHTS:
                tokens[int(i)].append(f"{kind}={value}")
    for i, year in enumerate(years):
        if year > 0:
            tokens[i].append(f"decade={int(year) // 10 * 10}")
    return tokens


@dataclass
class ContentModel:
    vectors: npt.NDArray[np.float32]  # (movies, dim), unit or zero rows
    tokens: npt.NDArray[np.str_]  # the TF-IDF vocabulary
    idf: npt.NDArray[np.float32]  # per token
    token_weights: npt.NDArray[np.float32]  # kind weight per token
    components: npt.NDArray[np.float32]  # (dim, tokens); empty when not reduced


def fit_content_model(
    tokens: list[list[str]], dim: int = 64, min_df: int = 2, seed: int = 0
) -> ContentModel:
    """TF-IDF (sublinear tf) × kind weights, L2 rows, truncated SVD, L2 rows. Shipping the
    vocabulary, idf, weights and SVD components lets a new movie from a catalog event get
    its vector without retraining (:func:`recsys_core.content.content_vector`)."""
    n = len(tokens)
    empty = np.zeros(0, dtype=np.float32)
    if not any(tokens):
        return ContentModel(np.zeros((n, 1), np.float32), np.zeros(0, np.str_), empty, empty,
                            np.zeros((1, 0), np.float32))
    vectorizer = TfidfVectorizer(
        analyzer=lambda doc: doc, min_df=min(min_df, n), sublinear_tf=True, norm=None
    )
    try:
        x = vectorizer.fit_transform(tokens)
    except ValueError:  # every token below min_df
        vectorizer = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True, norm=None)
        x = vectorizer.fit_transform(tokens)
    vocab = vectorizer.get_feature_names_out()
    col_weights = np.array([KIND_WEIGHTS.get(t.split("=", 1)[0], 0.5) for t in vocab])
    x = normalize(x.multiply(col_weights).tocsr())
    k = min(dim, x.shape[1] - 1, n - 1)
    if k >= 2:
        svd = TruncatedSVD(n_components=k, random_state=seed)
        dense = svd.fit_transform(x)
        components = svd.components_.astype(np.float32)
    else:
        dense = x.toarray()
        components = np.eye(x.shape[1], dtype=np.float32)
    return ContentModel(
        np.asarray(normalize(dense), dtype=np.float32),
        np.asarray(vocab, dtype=np.str_),
        vectorizer.idf_.astype(np.float32),
        col_weights.astype(np.float32),
        components,
    )
