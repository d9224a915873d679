"""recsys_core.vocab: raw string ids <-> dense indexes, and what a miss does."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_core.errors import RecsysError, UnknownMovie, UnknownUser
from recsys_core.vocab import Vocabulary


@pytest.fixture
def movies() -> Vocabulary:
    return Vocabulary(["m10", "m20", "m30"], kind="movie")


def test_index_and_raw_round_trip(movies: Vocabulary) -> None:
    for idx, raw in enumerate(["m10", "m20", "m30"]):
        assert movies.index(raw) == idx
        assert movies.raw(idx) == raw
    assert movies.raws(movies.indices(["m30", "m10"])) == ["m30", "m10"]
    assert len(movies) == 3
    assert movies.ids == ("m10", "m20", "m30")


def test_ids_are_stored_as_strings() -> None:
    vocab = Vocabulary([1, 2, 3])  # type: ignore[list-item]
    assert vocab.ids == ("1", "2", "3")
    assert vocab.index("2") == 1
    assert "2" in vocab and 2 not in vocab


def test_contains_and_get(movies: Vocabulary) -> None:
    assert "m20" in movies
    assert "m99" not in movies
    assert movies.get("m20") == 1
    assert movies.get("m99") is None


def test_indices_returns_int64_array(movies: Vocabulary) -> None:
    out = movies.indices(["m20", "m20", "m10"])
    assert out.dtype == np.int64
    assert out.tolist() == [1, 1, 0]
    empty = movies.indices([])
    assert empty.dtype == np.int64 and empty.shape == (0,)


def test_indices_on_missing_raise_is_the_default(movies: Vocabulary) -> None:
    with pytest.raises(UnknownMovie) as info:
        movies.indices(["m10", "m99"])
    assert info.value.movie_id == "m99"
    assert "m99" in str(info.value)


def test_indices_on_missing_drop_skips_unknown_ids(movies: Vocabulary) -> None:
    assert movies.indices(["m99", "m30", "m98", "m10"], on_missing="drop").tolist() == [2, 0]


def test_indices_on_missing_minus_one_keeps_positions(movies: Vocabulary) -> None:
    out = movies.indices(["m99", "m30", "m10"], on_missing="minus_one")
    assert out.tolist() == [-1, 2, 0]
    assert out.dtype == np.int64


def test_movie_vocabulary_raises_unknown_movie(movies: Vocabulary) -> None:
    with pytest.raises(UnknownMovie) as info:
        movies.index("nope")
    assert not isinstance(info.value, UnknownUser)
    assert isinstance(info.value, RecsysError)
    assert info.value.movie_id == "nope"


def test_user_vocabulary_raises_unknown_user() -> None:
    users = Vocabulary(["u1", "u2"], kind="user")
    with pytest.raises(UnknownUser) as info:
        users.index("u3")
    assert not isinstance(info.value, UnknownMovie)
    assert info.value.user_id == "u3"
    with pytest.raises(UnknownUser):
        users.indices(["u1", "u3"])


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate ids in user vocabulary"):
        Vocabulary(["a", "b", "a"], kind="user")
    # ids are compared after conversion to str
    with pytest.raises(ValueError, match="duplicate"):
        Vocabulary(["1", 1])  # type: ignore[list-item]


@pytest.mark.parametrize("bad", [-1, 3, 100])
def test_raw_refuses_out_of_range_indexes(movies: Vocabulary, bad: int) -> None:
    # -1 in particular must not silently read the last id
    with pytest.raises(IndexError, match="out of range"):
        movies.raw(bad)
    with pytest.raises(IndexError):
        movies.raws([0, bad])


def test_to_array_from_array_round_trip(movies: Vocabulary) -> None:
    arr = movies.to_array()
    assert arr.dtype.kind == "U"
    assert arr.tolist() == ["m10", "m20", "m30"]
    back = Vocabulary.from_array(arr, kind="movie")
    assert back == movies
    assert back.ids == movies.ids
    assert back.kind == "movie"


def test_from_array_keeps_the_kind_and_unicode() -> None:
    users = Vocabulary(["zoë", "ümit", "42"], kind="user")
    back = Vocabulary.from_array(users.to_array(), kind="user")
    assert back.ids == ("zoë", "ümit", "42")
    with pytest.raises(UnknownUser):
        back.index("nobody")


def test_empty_vocabulary_round_trips() -> None:
    empty = Vocabulary([])
    assert len(empty) == 0
    assert Vocabulary.from_array(empty.to_array()) == empty
    with pytest.raises(IndexError):
        empty.raw(0)


def test_equality_and_hash_follow_ids_and_order() -> None:
    a = Vocabulary(["x", "y"])
    assert a == Vocabulary(["x", "y"])
    assert hash(a) == hash(Vocabulary(["x", "y"]))
    assert a != Vocabulary(["y", "x"])
    assert a != ("x", "y")


@pytest.mark.parametrize("on_missing", ["drop", "minus_one"])
def test_bulk_indices_equal_one_by_one_lookups(on_missing: str) -> None:
    import pandas as pd

    from recsys_core.vocab import BULK_LOOKUP

    vocab = Vocabulary([str(i) for i in range(500)], kind="user")
    rng = np.random.default_rng(0)
    raw = [str(i) for i in rng.integers(0, 600, BULK_LOOKUP + 7)] + [7, None]
    one_by_one = [vocab.get(r) for r in raw]  # type: ignore[arg-type]
    expected = [i for i in one_by_one if i is not None] if on_missing == "drop" else [
        -1 if i is None else i for i in one_by_one]
    for given in (raw, np.asarray(raw, dtype=object), pd.Series(raw)):
        got = vocab.indices(given, on_missing=on_missing)  # type: ignore[arg-type]
        assert got.dtype == np.int64
        assert got.tolist() == expected


def test_bulk_indices_raise_on_the_first_unknown_id() -> None:
    from recsys_core.vocab import BULK_LOOKUP

    vocab = Vocabulary(["a", "b"], kind="user")
    with pytest.raises(UnknownUser, match="zz"):
        vocab.indices(["a"] * BULK_LOOKUP + ["zz", "yy"])
