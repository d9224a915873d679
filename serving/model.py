"""The model the API serves: one published version with everything a request needs built
once at load time (genre masks, the title index, the rating model's parameters), and the
holder that swaps in a newly published version without stopping requests."""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from rapidfuzz import fuzz, process

from recsys_core.artifacts import ModelBundle
from recsys_core.candidates import CandidateIndex
from recsys_core.confidence import ConfidenceRule
from recsys_core.errors import ArtifactError, ModelNotLoaded
from recsys_core.names import is_opaque_id
from recsys_core.rerank import Trees
from recsys_core.scoring import BlendWeights
from recsys_core.surfaces import default_surface, surfaces_of
from recsys_core.userstate import AffinityIndex
from serving import metrics
from training.registry import ModelRegistry

log = logging.getLogger(__name__)

#: person kinds shown on a movie, in this order
PEOPLE_KINDS = ("director", "writer", "actor", "producer")
_ARTICLE = re.compile(r"^(?P<rest>.*), (?P<article>the|a|an|les|la|le|il|el|der|die|das)$")
_YEAR = re.compile(r"\s*\(\d{4}(?:[-–]\d{0,4})?\)\s*$")


def normalize_title(title: str) -> str:
    """Lower case, accents and punctuation dropped, the year removed, and a trailing article
    moved to the front (``Matrix, The (1999)`` → ``the matrix``)."""
    text = unicodedata.normalize("NFKD", title)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower().strip()
    text = _YEAR.sub("", text)
    m = _ARTICLE.match(text)
    if m:
        text = f"{m['article']} {m['rest']}"
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def strip_article(text: str) -> str:
    for article in ("the ", "a ", "an "):
        if text.startswith(article):
            return text[len(article):]
    return text


class TitleIndex:
    """Typo-tolerant title search over normalised titles without their leading article:
    the exact title first, then prefix matches, then matches at a word start, then anywhere
    (one regex pass over
    all titles joined), then fuzzy matches (rapidfuzz: the query aligned inside titles at
    least as long, or the whole title alike), popularity breaking ties."""

    def __init__(self, titles: npt.NDArray[np.str_], popularity: npt.NDArray[np.floating]):
        self.bare = [strip_article(normalize_title(str(t))) for t in titles]
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.joined = "\n".join(self.bare)
        self.starts = np.cumsum([0] + [len(t) + 1 for t in self.bare[:-1]]).astype(np.int64)
        self.by_length = sorted(range(len(self.bare)), key=lambda i: len(self.bare[i]))
        self.lengths = np.asarray([len(self.bare[i]) for i in self.by_length], dtype=np.int64)
        self.sorted_bare = [self.bare[i] for i in self.by_length]

    def search(self, query: str, limit: int = 10) -> list[tuple[int, float]]:
        """``(movie index, score in [0, 1])``, best first."""
        q = strip_article(normalize_title(query))
        if not q or not self.bare:
            return []
        scores: dict[int, float] = {}
        for m in re.finditer(re.escape(q), self.joined):
            pos = m.start()
            i = int(np.searchsorted(self.starts, pos, side="right")) - 1
            score = (1.0 if pos == self.starts[i] and self.bare[i] == q  # the whole title
                     else 0.98 if pos == self.starts[i]
                     else 0.95 if self.joined[pos - 1] == " " else 0.9)
            scores[i] = max(scores.get(i, 0.0), score)
        if len(scores) < limit:
            cutoff = 75.0 if len(q) > 3 else 90.0
            first = int(np.searchsorted(self.lengths, len(q)))
            for _, score, j in process.extract(q, self.sorted_bare[first:],
                                               scorer=fuzz.partial_ratio, limit=limit * 3,
                                               score_cutoff=cutoff):
                i = self.by_length[first + int(j)]
                scores.setdefault(i, 0.85 * float(score) / 100.0)
            for _, score, i in process.extract(q, self.bare, scorer=fuzz.QRatio,
                                               limit=limit * 3, score_cutoff=cutoff):
                fuzzy = 0.85 * float(score) / 100.0
                if fuzzy > scores.get(int(i), 0.0):
                    scores[int(i)] = fuzzy
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], -self.popularity[kv[0]], kv[0]))
        return ranked[:limit]


@dataclass
class ServingModel:
    """One loaded model version and what requests derive from it."""

    bundle: ModelBundle
    #: catalogues with more movies are scored over candidates (:mod:`recsys_core.candidates`)
    candidate_threshold: int = 20_000
    loaded_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        b = self.bundle
        self.version = b.version
        #: each surface's weights (recsys_core/surfaces.py); ``weights`` are the default's
        self.surfaces = surfaces_of(b.manifest)
        self.default_surface = default_surface(b.manifest)
        self.weights = self.surfaces[self.default_surface].weights
        self.rule = ConfidenceRule.from_dict(b.manifest.get("confidence_rule", {}))
        params = b.params
        self.regularization = float(params.get("als_regularization", 0.1))
        self.factors = int(b.item_factors.shape[1])
        self.rating_mean = float(params.get("rating_global_mean", 3.5))
        self.rating_reg = float(params.get("rating_regularization", 0.1))
        self.rating_bias_reg = float(params.get("rating_bias_regularization", 1.0))
        self.affinity = AffinityIndex.from_bundle(b)
        self.genre_masks: dict[str, npt.NDArray[np.bool_]] = {}
        for i, joined in enumerate(b.genres.tolist()):
            for g in str(joined).split("|"):
                if g:
                    self.genre_masks.setdefault(g.lower(), np.zeros(b.n_items, bool))[i] = True
        self.genre_names = sorted({g for j in b.genres.tolist() for g in str(j).split("|") if g})
        self.titles = TitleIndex(b.titles, b.popularity)
        #: the reranker's trees (None: the blend's order is final)
        self.trees = Trees.from_bundle(b)
        self.candidates: CandidateIndex | None = (
            CandidateIndex.build(b) if b.n_items > self.candidate_threshold else None)

    @property
    def n_items(self) -> int:
        return self.bundle.n_items

    def surface(self, name: str | None) -> tuple[str, BlendWeights, Trees | None]:
        """A surface's name, weights and the trees that reorder it (None: the blend's order
        is final); the default surface when ``name`` is None."""
        found = self.surfaces[name or self.default_surface]
        return found.name, found.weights, self.trees if found.rerank else None

    def people(self, idx: int) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """The movie's people by kind: those known by name, and those the data knows only by
        an opaque id (``m.02gf_l``), kept apart so an id is never shown as a name."""
        ptr = self.bundle.extra.get("attr_indptr")
        values = self.bundle.extra.get("attr_values")
        names: dict[str, list[str]] = {}
        ids: dict[str, list[str]] = {}
        if ptr is None or values is None:
            return names, ids
        for v in values[int(ptr[idx]) : int(ptr[idx + 1])].tolist():
            kind, _, name = str(v).partition("=")
            if kind in PEOPLE_KINDS:
                (ids if is_opaque_id(name) else names).setdefault(kind, []).append(name)
        return ({k: names[k] for k in PEOPLE_KINDS if k in names},
                {k: ids[k] for k in PEOPLE_KINDS if k in ids})

    def brief(self, idx: int) -> dict[str, Any]:
        """Id, title, year and genres: what a list of movies shows."""
        b = self.bundle
        year = int(b.years[idx])
        return {
            "movie_id": b.movies.raw(idx),
            "title": str(b.titles[idx]),
            "year": year or None,
            "genres": [g for g in str(b.genres[idx]).split("|") if g],
        }

    def movie(self, idx: int) -> dict[str, Any]:
        names, ids = self.people(idx)
        return {**self.brief(idx), "people": names, "person_ids": ids,
                "popularity": round(float(self.bundle.popularity[idx]), 6)}

    def allowed(
        self, genres: list[str], year_min: int | None, year_max: int | None
    ) -> npt.NDArray[np.bool_] | None:
        """Movies that pass the filters (None: no filter). Unknown genres raise KeyError."""
        mask: npt.NDArray[np.bool_] | None = None
        if genres:
            mask = np.zeros(self.n_items, bool)
            for g in genres:
                mask |= self.genre_masks[g.lower()]
        years = self.bundle.years
        if year_min is not None:
            m = years >= year_min
            mask = m if mask is None else mask & m
        if year_max is not None:
            m = (years <= year_max) & (years > 0)
            mask = m if mask is None else mask & m
        return mask


class ModelHolder:
    """The current :class:`ServingModel`; :meth:`refresh` loads a newly published version in
    the caller's thread and swaps it in with one assignment, so a request always scores
    against one version from start to end."""

    def __init__(self, model_dir: Path, candidate_threshold: int = 20_000) -> None:
        self.registry = ModelRegistry(model_dir)
        self.candidate_threshold = candidate_threshold
        self._model: ServingModel | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def model(self) -> ServingModel | None:
        return self._model

    def require(self) -> ServingModel:
        model = self._model
        if model is None:
            raise ModelNotLoaded(self.last_error or
                                 f"no model published under {self.registry.root} yet")
        return model

    def refresh(self) -> bool:
        """Load the current version if it is not the one served; True when it swapped."""
        with self._lock:
            try:
                version = self.registry.current_version()
                if version is None or (self._model and self._model.version == version):
                    return False
                started = time.perf_counter()
                model = ServingModel(self.registry.load(version), self.candidate_threshold)
            except (ArtifactError, OSError) as exc:
                self.last_error = f"model not loaded: {exc}"
                log.warning("%s", self.last_error)
                return False
            old = self._model
            self._model = model
            self.last_error = None
            metrics.MODEL_VERSION.set(model.version)
            metrics.MODEL_LOADED_AT.set(model.loaded_at)
            log.info("serving model version %d (was %s), loaded in %.2fs", model.version,
                     old.version if old else None, time.perf_counter() - started)
            return True
