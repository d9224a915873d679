"""recsys_core.artifacts: a bundle from the real training pipeline, saved, loaded and broken."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from recsys_core.artifacts import (
    ARRAYS_FILE,
    FORMAT_VERSION,
    MANIFEST_FILE,
    ModelBundle,
    load_bundle,
    read_manifest,
    save_bundle,
    validate,
)
from recsys_core.dataset import Dataset
from recsys_core.errors import ArtifactError
from training.pipeline import TrainParams, train_models

#: small but complete: every model of the pipeline runs, fast
FAST = TrainParams(
    als_factors=16, als_iterations=3, neighbors_top_n=20, content_dim=16,
    rating_factors=8, rating_iterations=3,
)


@pytest.fixture(scope="module")
def bundle(ml100k: Dataset) -> ModelBundle:
    # the ratings of the 400 most-rated movies (70 % of ml-100k) keep the EASE inverses small;
    # the bundle still covers the whole 1,682-movie catalogue
    inter = ml100k.interactions
    head = inter["movie_id"].value_counts().index[:400]
    with threadpool_limits(1, "blas"):
        return train_models(
            ml100k, FAST, version=7, interactions=inter[inter["movie_id"].isin(head)]
        ).bundle


@pytest.fixture(scope="module")
def saved(bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_bundle(bundle, tmp_path_factory.mktemp("bundles") / "v7")


@pytest.fixture
def copy(saved: Path, tmp_path: Path) -> Path:
    """A private copy of the saved bundle that a test may break."""
    return Path(shutil.copytree(saved, tmp_path / "v7"))


def _rewrite_arrays(directory: Path, change: Callable[[dict[str, np.ndarray]], object]) -> None:
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    (directory / ARRAYS_FILE).unlink()
    np.savez(directory / ARRAYS_FILE, **arrays)


def _rewrite_manifest(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    change(manifest)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))


# --- round trip -------------------------------------------------------------------------


def test_pipeline_bundle_is_valid_and_has_the_catalogue_shape(bundle: ModelBundle) -> None:
    validate(bundle)
    assert bundle.n_items == 1682
    assert bundle.item_factors.shape == (1682, 16)
    assert {"attr_indptr", "attr_values"} <= set(bundle.extra)
    # movies outside the training window have no neighbours
    lengths = np.diff(bundle.neighbor_indptr)
    assert (lengths > 0).sum() == 400 and (lengths == 0).sum() == 1682 - 400


def test_round_trip_preserves_every_array_exactly(bundle: ModelBundle, saved: Path) -> None:
    loaded = load_bundle(saved)
    before, after = bundle.arrays(), loaded.arrays()
    assert set(after) == set(before)
    for name, arr in before.items():
        assert after[name].dtype == arr.dtype, name
        assert after[name].shape == arr.shape, name
        np.testing.assert_array_equal(after[name], arr, err_msg=name)
    assert loaded.movies == bundle.movies
    assert loaded.movies.kind == "movie"
    assert loaded.version == 7
    assert set(loaded.extra) == set(bundle.extra)


def test_round_trip_preserves_the_manifest(bundle: ModelBundle, saved: Path) -> None:
    loaded = load_bundle(saved)
    for key, value in bundle.manifest.items():
        assert loaded.manifest[key] == json.loads(json.dumps(value)), key
    assert loaded.manifest["format_version"] == FORMAT_VERSION
    assert loaded.manifest["version"] == 7
    assert loaded.manifest["n_items"] == 1682
    assert loaded.manifest["factors"] == 16
    assert loaded.params["als_factors"] == 16
    assert read_manifest(saved) == loaded.manifest


def test_saving_leaves_only_the_bundle_directory(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([ARRAYS_FILE, MANIFEST_FILE])
    # no temporary directory left beside it
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError("pickle used while loading a bundle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert load_bundle(saved).n_items == 1682


def test_object_arrays_are_rejected(copy: Path) -> None:
    def to_object(arrays: dict[str, np.ndarray]) -> None:
        arrays["titles"] = arrays["titles"].astype(object)

    _rewrite_arrays(copy, to_object)
    with pytest.raises(ArtifactError, match="cannot read arrays.npz"):
        load_bundle(copy)


# --- refusing to save -------------------------------------------------------------------


def test_saving_into_an_existing_directory_refuses(bundle: ModelBundle, tmp_path: Path) -> None:
    target = tmp_path / "v1"
    target.mkdir()
    (target / "keep.txt").write_text("untouched")
    with pytest.raises(ArtifactError, match="already exists"):
        save_bundle(bundle, target)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_saving_an_invalid_bundle_writes_nothing(bundle: ModelBundle, tmp_path: Path) -> None:
    broken = dataclasses.replace(bundle, popularity=bundle.popularity[:-1])
    with pytest.raises(ArtifactError, match="popularity has 1681 rows, expected 1682"):
        save_bundle(broken, tmp_path / "v1")
    assert list(tmp_path.iterdir()) == []


# --- refusing to load -------------------------------------------------------------------


def test_missing_manifest_is_an_artifact_error(copy: Path) -> None:
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(ArtifactError, match="no manifest"):
        load_bundle(copy)


def test_missing_directory_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no manifest"):
        load_bundle(tmp_path / "v404")


def test_manifest_that_is_not_json_is_an_artifact_error(copy: Path) -> None:
    (copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_bundle(copy)
    (copy / MANIFEST_FILE).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="not a JSON object"):
        load_bundle(copy)


@pytest.mark.parametrize("fmt", [FORMAT_VERSION + 1, 0, None, "1"])
def test_wrong_format_version_is_an_artifact_error(copy: Path, fmt: object) -> None:
    _rewrite_manifest(copy, lambda m: m.__setitem__("format_version", fmt))
    with pytest.raises(ArtifactError, match=r"bundle format .* is not supported \(expected 1\)"):
        load_bundle(copy)


def test_manifest_without_version_is_an_artifact_error(copy: Path) -> None:
    _rewrite_manifest(copy, lambda m: m.pop("version"))
    with pytest.raises(ArtifactError):
        load_bundle(copy)


def test_missing_arrays_file_is_an_artifact_error(copy: Path) -> None:
    (copy / ARRAYS_FILE).unlink()
    with pytest.raises(ArtifactError, match="no arrays.npz"):
        load_bundle(copy)


def test_arrays_file_of_garbage_is_an_artifact_error(copy: Path) -> None:
    (copy / ARRAYS_FILE).write_bytes(b"this is not a numpy file at all" * 10)
    with pytest.raises(ArtifactError, match="cannot read arrays.npz"):
        load_bundle(copy)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes], ids=["truncated", "corrupted"])
def test_damaged_arrays_file_is_an_artifact_error(
    copy: Path, damage: Callable[[Path], None]
) -> None:
    damage(copy / ARRAYS_FILE)
    with pytest.raises(ArtifactError, match="arrays.npz"):
        load_bundle(copy)


def test_missing_array_is_an_artifact_error(copy: Path) -> None:
    _rewrite_arrays(copy, lambda a: a.pop("rating_item_bias"))
    with pytest.raises(ArtifactError, match="missing arrays rating_item_bias"):
        load_bundle(copy)


@pytest.mark.parametrize(
    "name", ["popularity", "item_factors", "content_vectors", "titles", "rating_item_bias"]
)
def test_array_with_the_wrong_number_of_rows_is_an_artifact_error(copy: Path, name: str) -> None:
    _rewrite_arrays(copy, lambda a: a.__setitem__(name, a[name][:-1]))
    with pytest.raises(ArtifactError, match=f"{name} has 1681 rows, expected 1682"):
        load_bundle(copy)


def test_yty_of_the_wrong_shape_is_an_artifact_error(copy: Path) -> None:
    _rewrite_arrays(copy, lambda a: a.__setitem__("yty", np.eye(8)))
    with pytest.raises(ArtifactError, match="yty has shape"):
        load_bundle(copy)


def test_neighbor_arrays_that_do_not_match_indptr_are_an_artifact_error(copy: Path) -> None:
    _rewrite_arrays(copy, lambda a: a.__setitem__("neighbor_scores", a["neighbor_scores"][:-1]))
    with pytest.raises(ArtifactError, match="neighbor arrays do not match neighbor_indptr"):
        load_bundle(copy)


def test_neighbor_index_out_of_range_is_an_artifact_error(copy: Path) -> None:
    def break_index(arrays: dict[str, np.ndarray]) -> None:
        arrays["session_indices"] = arrays["session_indices"].copy()
        arrays["session_indices"][3] = 1682

    _rewrite_arrays(copy, break_index)
    with pytest.raises(ArtifactError, match="session index out of range"):
        load_bundle(copy)


@pytest.mark.parametrize(
    "name", ["item_factors", "content_vectors", "rating_item_factors", "popularity"]
)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_factors_is_an_artifact_error(copy: Path, name: str, bad: float) -> None:
    def poison(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = arrays[name].copy()
        arrays[name].flat[5] = bad

    _rewrite_arrays(copy, poison)
    with pytest.raises(ArtifactError, match=f"{name} has NaN or inf"):
        load_bundle(copy)


# --- surfaces ---------------------------------------------------------------------------


def test_a_bundle_without_surfaces_serves_its_blend_weights_on_every_surface(
    copy: Path,
) -> None:
    from recsys_core.scoring import BlendWeights
    from recsys_core.surfaces import default_surface, surfaces_of

    def legacy(m: dict[str, Any]) -> None:
        m.pop("surfaces", None)
        m.pop("default_surface", None)
        m["blend_weights"] = {"cf": 0.3, "item": 0.7, "session_length": 20.0}

    _rewrite_manifest(copy, legacy)
    loaded = load_bundle(copy)
    found = surfaces_of(loaded.manifest)
    expected = BlendWeights(cf=0.3, item=0.7, session_length=20)
    assert {n: s.weights for n, s in found.items()} == {"for_you": expected,
                                                       "up_next": expected}
    # the reranker reorders the next-event surface only, the default of an old bundle
    assert {n: s.rerank for n, s in found.items()} == {"for_you": False, "up_next": True}
    assert default_surface(loaded.manifest) == "up_next"


def test_surface_weights_round_trip_and_malformed_ones_are_refused(copy: Path) -> None:
    from recsys_core.surfaces import surfaces_of

    def named(m: dict[str, Any]) -> None:
        m["surfaces"] = {"for_you": {"blend_weights": {"cf": 0.1, "item": 1.5}},
                         "up_next": {"blend_weights": {"peers": 2.0}}}
        m["default_surface"] = "for_you"

    _rewrite_manifest(copy, named)
    found = surfaces_of(load_bundle(copy).manifest)
    assert (found["for_you"].weights.item, found["up_next"].weights.peers) == (1.5, 2.0)
    _rewrite_manifest(copy, lambda m: m.update(default_surface="home"))
    with pytest.raises(ArtifactError, match="default_surface 'home'"):
        load_bundle(copy)
    _rewrite_manifest(copy, lambda m: m.update(
        default_surface="for_you", surfaces={"for_you": {"blend_weights": [1, 2]}}))
    with pytest.raises(ArtifactError, match="surface 'for_you' has no blend_weights"):
        load_bundle(copy)
    _rewrite_manifest(copy, lambda m: m.update(
        surfaces={"up_next": {"blend_weights": {"session_length": "many"}}}))
    with pytest.raises(ArtifactError, match="bad blend weights"):
        load_bundle(copy)
