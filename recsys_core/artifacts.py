"""The model bundle: what the trainer publishes and every role loads.

A bundle is a directory ``v{version}/`` holding ``arrays.npz`` (numpy arrays only, loaded
with ``allow_pickle=False``; stored uncompressed and memory-mapped on load, see
:func:`read_arrays`) and ``manifest.json`` (version, parameters, data window, metrics, blend
weights, each surface's weights (:mod:`recsys_core.surfaces`), code version).
:func:`load_bundle` checks the format version, every array's shape against the vocabulary
and the surfaces, and fails with :class:`ArtifactError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from recsys_core.errors import ArtifactError
from recsys_core.vocab import Vocabulary

FORMAT_VERSION = 1
ARRAYS_FILE = "arrays.npz"
MANIFEST_FILE = "manifest.json"

F32 = npt.NDArray[np.float32]

#: arrays every bundle has, with the first dimension each must match ("items" or None)
REQUIRED_ARRAYS: dict[str, str | None] = {
    "movie_ids": "items",
    "titles": "items",
    "years": "items",
    "genres": "items",
    "item_factors": "items",
    "yty": None,
    "popularity": "items",
    "content_vectors": "items",
    "neighbor_indptr": None,
    "neighbor_indices": None,
    "neighbor_scores": None,
    "session_indptr": None,
    "session_indices": None,
    "session_scores": None,
    "rating_item_bias": "items",
    "rating_item_factors": "items",
}
#: item-to-item models a bundle may hold in ``extra`` as ``{name}_indptr/_indices/_scores``
OPTIONAL_ITEM_MODELS = ("sequence",)
#: ``extra`` array of the stage popularity: one row per stage of a user's history
#: (:func:`recsys_core.scoring.stage_of`), one column per movie
STAGE_POPULARITY = "stage_popularity"
#: ``extra`` arrays of the peer sequences (:mod:`recsys_core.peers`): by peer (movies,
#: positions) and by movie (peers, positions), both CSR
#: ``extra`` arrays of the reranker's trees (:mod:`recsys_core.rerank`), one row per node,
#: besides ``rerank_roots``
RERANK_NODE_ARRAYS = ("rerank_feature", "rerank_threshold", "rerank_left", "rerank_right",
                      "rerank_value", "rerank_missing_left")
PEER_ARRAYS = (
    "peers_user_indptr", "peers_user_items", "peers_user_positions",
    "peers_item_indptr", "peers_item_users", "peers_item_positions",
)


@dataclass
class ModelBundle:
    """Every array and parameter needed to score, rank, explain and predict ratings."""

    version: int
    movies: Vocabulary
    titles: npt.NDArray[np.str_]
    years: npt.NDArray[np.int32]  # 0 where unknown
    genres: npt.NDArray[np.str_]  # '|'-joined per movie
    item_factors: F32  # ALS item factors, (n_items, k)
    yty: npt.NDArray[np.float64]  # item_factors.T @ item_factors, (k, k)
    popularity: F32  # in [0, 1], (n_items,)
    content_vectors: F32  # unit rows, (n_items, d); zero rows for movies without metadata
    neighbor_indptr: npt.NDArray[np.int64]  # CSR of the item-to-item model, (n_items + 1,)
    neighbor_indices: npt.NDArray[np.int32]
    neighbor_scores: F32
    session_indptr: npt.NDArray[np.int64]  # CSR of the co-watched-in-one-sitting model
    session_indices: npt.NDArray[np.int32]
    session_scores: F32
    rating_item_bias: F32
    rating_item_factors: F32
    manifest: dict[str, Any] = field(default_factory=dict)
    #: optional arrays such as ``attr_*`` used for explanations
    extra: dict[str, npt.NDArray[Any]] = field(default_factory=dict)
    #: dense copies of item-to-item models small and full enough to score faster dense
    _dense: dict[str, F32 | None] = field(default_factory=dict, init=False, repr=False,
                                          compare=False)

    @property
    def n_items(self) -> int:
        return len(self.movies)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.manifest.get("params", {}))

    def csr(
        self, name: str
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], F32]:
        """``(indptr, indices, scores)`` of an item-to-item model: ``neighbor``, ``session``,
        or an optional one kept in :attr:`extra` (:data:`OPTIONAL_ITEM_MODELS`)."""
        if name == "neighbor":
            return self.neighbor_indptr, self.neighbor_indices, self.neighbor_scores
        if name == "session":
            return self.session_indptr, self.session_indices, self.session_scores
        if name in OPTIONAL_ITEM_MODELS and self.has_model(name):
            return (self.extra[f"{name}_indptr"], self.extra[f"{name}_indices"],
                    self.extra[f"{name}_scores"])
        raise KeyError(name)

    def has_model(self, name: str) -> bool:
        """Whether the bundle holds the item-to-item model ``name`` (older bundles lack the
        optional ones)."""
        if name in ("neighbor", "session"):
            return True
        return all(f"{name}_{part}" in self.extra for part in ("indptr", "indices", "scores"))

    def dense(self, name: str, max_cells: int = 40_000_000,
              min_fill: float = 0.05) -> F32 | None:
        """An item-to-item model (:meth:`csr`) as a dense (n, n) matrix when it has at most
        ``max_cells`` cells and at least ``min_fill`` of them set (gathering a few dense
        rows beats walking long sparse ones); None otherwise. Built once per bundle."""
        if name not in self._dense:
            indptr, indices, scores = self.csr(name)
            n = self.n_items
            nnz = int(indptr[-1]) if n else 0
            out: F32 | None = None
            if 0 < n * n <= max_cells and nnz >= min_fill * n * n:
                out = np.zeros((n, n), dtype=np.float32)
                rows = np.repeat(np.arange(n), np.diff(indptr))
                out[rows, indices] = scores
            self._dense[name] = out
        return self._dense[name]

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        out: dict[str, npt.NDArray[Any]] = {
            "movie_ids": self.movies.to_array(),
            "titles": self.titles,
            "years": self.years,
            "genres": self.genres,
            "item_factors": self.item_factors,
            "yty": self.yty,
            "popularity": self.popularity,
            "content_vectors": self.content_vectors,
            "neighbor_indptr": self.neighbor_indptr,
            "neighbor_indices": self.neighbor_indices,
            "neighbor_scores": self.neighbor_scores,
            "session_indptr": self.session_indptr,
            "session_indices": self.session_indices,
            "session_scores": self.session_scores,
            "rating_item_bias": self.rating_item_bias,
            "rating_item_factors": self.rating_item_factors,
        }
        out.update({f"extra__{k}": v for k, v in self.extra.items()})
        return out


def _check(cond: bool, path: Path, message: str) -> None:
    if not cond:
        raise ArtifactError(f"{path}: {message}")


def validate(bundle: ModelBundle, where: Path | str = "<memory>") -> None:
    """Shapes and internal consistency; raises :class:`ArtifactError`."""
    p = Path(where)
    n = bundle.n_items
    for name, dim in REQUIRED_ARRAYS.items():
        arr = bundle.arrays()[name]
        if dim == "items":
            _check(arr.shape[0] == n, p, f"{name} has {arr.shape[0]} rows, expected {n}")
    k = bundle.item_factors.shape[1]
    _check(bundle.yty.shape == (k, k), p, f"yty has shape {bundle.yty.shape}, expected {(k, k)}")
    models = ["neighbor", "session"] + [m for m in OPTIONAL_ITEM_MODELS if bundle.has_model(m)]
    for name in models:
        indptr, indices, scores = bundle.csr(name)
        _check(indptr.shape == (n + 1,), p, f"{name}_indptr does not match items")
        nnz = int(indptr[-1]) if n else 0
        _check(
            indices.shape == (nnz,) and scores.shape == (nnz,),
            p,
            f"{name} arrays do not match {name}_indptr",
        )
        if nnz:
            _check(
                int(indices.min()) >= 0 and int(indices.max()) < n,
                p,
                f"{name} index out of range",
            )
    for name in ("item_factors", "content_vectors", "rating_item_factors", "popularity"):
        _check(bool(np.isfinite(bundle.arrays()[name]).all()), p, f"{name} has NaN or inf")
    stage = bundle.extra.get(STAGE_POPULARITY)
    if stage is not None:
        _check(stage.ndim == 2 and stage.shape[0] >= 1 and stage.shape[1] == n, p,
               f"{STAGE_POPULARITY} has shape {stage.shape}, expected (stages, {n})")
        _check(bool(np.isfinite(stage).all()), p, f"{STAGE_POPULARITY} has NaN or inf")
    if all(name in bundle.extra for name in PEER_ARRAYS):
        _check_peers(bundle, p)
    _check_rerank(bundle, p)
    _check_surfaces(bundle, p)


def _check_surfaces(bundle: ModelBundle, p: Path) -> None:
    """Each surface's blend weights (``manifest["surfaces"]``) and the default surface are
    readable; a bundle without them (older) serves its ``blend_weights`` on every surface."""
    from recsys_core.surfaces import default_surface, surfaces_of  # scoring imports us

    try:
        surfaces_of(bundle.manifest)
        default_surface(bundle.manifest)
    except ArtifactError as exc:
        raise ArtifactError(f"{p}: {exc}") from None


def _check_rerank(bundle: ModelBundle, p: Path) -> None:
    x = bundle.extra
    nodes = [x[k] for k in RERANK_NODE_ARRAYS if k in x]
    if not nodes:
        return
    _check(len(nodes) == len(RERANK_NODE_ARRAYS) and "rerank_roots" in x, p,
           "rerank arrays are incomplete")
    m = nodes[0].shape[0]
    _check(all(a.shape == (m,) for a in nodes), p, "rerank node arrays differ in length")
    links = np.concatenate([x["rerank_left"], x["rerank_right"], x["rerank_roots"]])
    _check(m > 0 and int(links.min()) >= 0 and int(links.max()) < m, p,
           "rerank node index out of range")
    n_features = len(bundle.params.get("rerank_features", []))
    _check(int(x["rerank_feature"].min()) >= 0 and int(x["rerank_feature"].max()) < n_features,
           p, "rerank feature index out of range")


def _check_peers(bundle: ModelBundle, p: Path) -> None:
    x = bundle.extra
    user_ptr, items, upos = (x[k] for k in PEER_ARRAYS[:3])
    item_ptr, users, ipos = (x[k] for k in PEER_ARRAYS[3:])
    nnz = int(user_ptr[-1]) if user_ptr.size else -1
    _check(item_ptr.shape == (bundle.n_items + 1,), p, "peers_item_indptr does not match items")
    _check(items.shape == upos.shape == users.shape == ipos.shape == (nnz,)
           and int(item_ptr[-1]) == nnz, p, "peer arrays do not match their indptr")
    if nnz > 0:
        _check(int(items.min()) >= 0 and int(items.max()) < bundle.n_items
               and int(users.min()) >= 0 and int(users.max()) < user_ptr.size - 1, p,
               "peer index out of range")


def save_bundle(bundle: ModelBundle, directory: Path) -> Path:
    """Write ``directory`` atomically (temp dir + rename); returns the final path."""
    validate(bundle)
    directory = Path(directory)
    if directory.exists():
        raise ArtifactError(f"{directory} already exists; versions are never overwritten")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        np.savez(tmp / ARRAYS_FILE, **bundle.arrays())  # type: ignore[arg-type]
        manifest = dict(bundle.manifest)
        manifest["format_version"] = FORMAT_VERSION
        manifest["version"] = bundle.version
        manifest["n_items"] = bundle.n_items
        manifest["factors"] = int(bundle.item_factors.shape[1])
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_manifest(directory: Path) -> dict[str, Any]:
    path = Path(directory) / MANIFEST_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no manifest") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: manifest is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: manifest is not a JSON object")
    return data


def _mapped(path: Path, info: zipfile.ZipInfo) -> npt.NDArray[Any] | None:
    """The array of a stored (uncompressed) ``.npy`` member, memory-mapped copy-on-write
    from the bundle file; None when it cannot be (compressed, empty, object dtype)."""
    if info.compress_type != zipfile.ZIP_STORED or info.file_size == 0:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            return None
        name_len = int.from_bytes(local[26:28], "little")
        extra_len = int.from_bytes(local[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        f.seek(start)
        crc, left = 0, info.file_size
        while left > 0:  # what the zip reader checks: a damaged file fails to load
            chunk = f.read(min(left, 1 << 22))
            if not chunk:
                break
            crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        if left or crc != info.CRC:
            raise zipfile.BadZipFile(f"bad CRC-32 for {info.filename}")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject or 0 in shape or not shape:
        return None
    mapped = np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape,
                       order="F" if fortran else "C")
    return np.asarray(mapped)


def read_arrays(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every array of an ``arrays.npz``. ``np.savez`` stores its members uncompressed, so each
    is memory-mapped (copy-on-write) from the file instead of read: the API's processes on one
    machine share one copy of the model's pages (the page cache), and a write, if any code
    made one, stays private to its process. Members that cannot be mapped (compressed,
    empty, 0-d) are read as before, so bundles of every age load."""
    arrays: dict[str, npt.NDArray[Any]] = {}
    with np.load(path, allow_pickle=False) as npz, zipfile.ZipFile(path) as zf:
        for name in npz.files:
            member = zf.getinfo(f"{name}.npy")
            mapped = _mapped(Path(path), member)
            arrays[name] = mapped if mapped is not None else npz[name]
    return arrays


def load_bundle(directory: Path) -> ModelBundle:
    """Load and validate a bundle written by :func:`save_bundle`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        raise ArtifactError(
            f"{directory}: bundle format {fmt!r} is not supported (expected {FORMAT_VERSION})"
        )
    try:
        arrays = read_arrays(directory / ARRAYS_FILE)
    except FileNotFoundError:
        raise ArtifactError(f"{directory}: no {ARRAYS_FILE}") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise ArtifactError(f"{directory}: cannot read {ARRAYS_FILE} ({exc})") from None
    version = manifest.get("version")
    if not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{directory}: manifest has no valid version ({version!r})")
    missing = [name for name in REQUIRED_ARRAYS if name not in arrays]
    if missing:
        raise ArtifactError(f"{directory}: missing arrays {', '.join(missing)}")
    bundle = ModelBundle(
        version=version,
        movies=Vocabulary.from_array(arrays["movie_ids"], kind="movie"),
        titles=arrays["titles"],
        years=arrays["years"],
        genres=arrays["genres"],
        item_factors=arrays["item_factors"],
        yty=arrays["yty"],
        popularity=arrays["popularity"],
        content_vectors=arrays["content_vectors"],
        neighbor_indptr=arrays["neighbor_indptr"],
        neighbor_indices=arrays["neighbor_indices"],
        neighbor_scores=arrays["neighbor_scores"],
        session_indptr=arrays["session_indptr"],
        session_indices=arrays["session_indices"],
        session_scores=arrays["session_scores"],
        rating_item_bias=arrays["rating_item_bias"],
        rating_item_factors=arrays["rating_item_factors"],
        manifest=manifest,
        extra={k[len("extra__"):]: v for k, v in arrays.items() if k.startswith("extra__")},
    )
    validate(bundle, directory)
    return bundle
