"""Loaders: real ml-100k and ml-latest-small, small written files, bad files, `data info`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys_cli import data_cmd
from recsys_core.dataset import ATTRIBUTE_COLUMNS, ATTRIBUTE_KINDS, Dataset
from recsys_core.errors import DataFormatError, DatasetNotFound
from recsys_core.loaders import (
    describe_dataset,
    detect_format,
    load_dataset,
    load_grouplens_csv,
    load_ml1m,
    load_ml100k,
    load_recbole,
)


def _shared_data() -> Path:
    env = os.environ.get("RECSYS_DATA_DIR", "").strip()
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


SHARED = _shared_data()
needs_shared = pytest.mark.skipif(
    not (SHARED / "ml-100k").is_dir() or not (SHARED / "ml-latest-small").is_dir(),
    reason=f"real MovieLens data not found under {SHARED}",
)


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    return load_dataset("ml-100k", SHARED)


@pytest.fixture(scope="module")
def latest_small() -> Dataset:
    return load_dataset("ml-latest-small", SHARED)


def _attrs(ds: Dataset, movie_id: str, kind: str) -> set[str]:
    a = ds.attributes
    return set(a.loc[(a["movie_id"] == movie_id) & (a["kind"] == kind), "value"])


def _title(ds: Dataset, movie_id: str) -> str:
    return str(ds.movies.set_index("movie_id").loc[movie_id, "title"])


def _year(ds: Dataset, movie_id: str) -> int | None:
    (year,) = ds.movies.loc[ds.movies["movie_id"] == movie_id, "year"].tolist()
    return None if year is pd.NA else int(year)


def _check_contract(ds: Dataset) -> None:
    inter = ds.interactions
    assert list(inter.columns) == ["user_id", "movie_id", "rating", "timestamp"]
    assert inter["rating"].dtype == "float32"
    assert inter["timestamp"].dtype == "int64"
    assert all(isinstance(v, str) for v in inter["user_id"].head(50))
    assert all(isinstance(v, str) for v in inter["movie_id"].head(50))
    assert list(ds.movies.columns) == ["movie_id", "title", "year"]
    assert ds.movies["year"].dtype == "Int64"
    assert ds.movies["movie_id"].is_unique
    assert list(ds.attributes.columns) == list(ATTRIBUTE_COLUMNS)
    assert set(ds.attributes["kind"]) <= set(ATTRIBUTE_KINDS)


# --- real data --------------------------------------------------------------------------


@needs_shared
def test_ml100k_recbole_has_known_counts_and_contract(ml100k: Dataset) -> None:
    assert (ml100k.n_users, ml100k.n_movies, len(ml100k.interactions)) == (943, 1682, 100000)
    assert detect_format(SHARED / "ml-100k") == "recbole"
    _check_contract(ml100k)
    assert ml100k.users is not None and len(ml100k.users) == 943


@needs_shared
def test_ml100k_toy_story_has_genres_actors_and_director(ml100k: Dataset) -> None:
    assert _title(ml100k, "1") == "Toy Story (1995)"
    assert _year(ml100k, "1") == 1995
    assert _attrs(ml100k, "1", "genre") == {"Animation", "Children's", "Comedy"}
    assert len(_attrs(ml100k, "1", "actor")) > 5
    assert len(_attrs(ml100k, "1", "director")) >= 1
    assert all(v.startswith("m.") for v in _attrs(ml100k, "1", "actor"))


@needs_shared
def test_ml100k_single_token_genres_are_not_split(ml100k: Dataset) -> None:
    genres = set(ml100k.attributes.loc[ml100k.attributes["kind"] == "genre", "value"])
    assert {"Film-Noir", "Sci-Fi", "Children's"} <= genres
    assert "unknown" not in genres and "Children" not in genres and len(genres) == 18


@needs_shared
def test_ml100k_garbled_release_year_falls_back_to_title(ml100k: Dataset) -> None:
    # movie 1412 has release_year "V" and its title already ends with "(1995)"
    assert _year(ml100k, "1412") == 1995
    assert _title(ml100k, "1412").endswith("Great Giving (1995)")
    assert _year(ml100k, "267") is None


@needs_shared
def test_ml100k_with_knowledge_graph_loads_under_two_seconds() -> None:
    start = time.perf_counter()
    ds = load_recbole(SHARED / "ml-100k")
    assert time.perf_counter() - start < 2.0
    assert {"actor", "director", "writer", "producer", "language", "country"} <= set(
        ds.attributes["kind"]
    )


@needs_shared
def test_ml_latest_small_has_known_counts_and_contract(latest_small: Dataset) -> None:
    ds = latest_small
    assert (ds.n_users, ds.n_movies, len(ds.interactions)) == (610, 9742, 100836)
    _check_contract(ds)
    assert float(ds.interactions["rating"].min()) == 0.5


@needs_shared
def test_ml_latest_small_tags_are_lowercased_and_deduplicated(latest_small: Dataset) -> None:
    tags = latest_small.attributes[latest_small.attributes["kind"] == "tag"]
    assert _attrs(latest_small, "1", "tag") == {"pixar", "fun"}
    assert not tags.duplicated(["movie_id", "value"]).any()
    assert (tags["value"] == tags["value"].str.lower().str.strip()).all()


@needs_shared
def test_ml_latest_small_links_genres_and_years(latest_small: Dataset) -> None:
    links = latest_small.links
    assert links is not None
    row = links.set_index("movie_id").loc["1"]
    assert (row["imdb_id"], row["tmdb_id"]) == ("114709", "862")
    assert links["tmdb_id"].isna().sum() == 8
    assert _attrs(latest_small, "1", "genre") == {
        "Adventure",
        "Animation",
        "Children",
        "Comedy",
        "Fantasy",
    }
    assert "(no genres listed)" not in set(latest_small.attributes["value"])
    assert _title(latest_small, "40697") == "Babylon 5"
    assert _year(latest_small, "40697") is None


@needs_shared
def test_load_dataset_by_name_uses_recsys_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_DATA_DIR", str(SHARED))
    assert load_dataset("ml-latest-small").name == "ml-latest-small"


def test_load_dataset_unknown_name_lists_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("ml-1m", tmp_path)
    assert str(tmp_path / "ml-1m") in str(info.value)
    assert "recsys data fetch ml-1m" in str(info.value)
    with pytest.raises(DatasetNotFound, match="known names: ml-100k"):
        load_dataset("no-such-set", tmp_path)


def test_load_dataset_directory_without_dataset_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound, match=r"ratings\.csv"):
        load_dataset(str(tmp_path))


# --- small written files ----------------------------------------------------------------


def _write(directory: Path, name: str, content: str | bytes, encoding: str = "utf-8") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def _ml1m(directory: Path, ratings: str | None = None) -> Path:
    _write(
        directory,
        "ratings.dat",
        ratings or "1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n",
    )
    _write(
        directory,
        "movies.dat",
        "10::Misérables, Les (1995)::Drama|Musical\n"
        "20::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n",
        "latin-1",
    )
    _write(directory, "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return directory


def test_ml1m_dat_files_load_with_latin1_titles(tmp_path: Path) -> None:
    ds = load_dataset(str(_ml1m(tmp_path / "ml-1m")))
    _check_contract(ds)
    assert (ds.n_users, ds.n_movies, len(ds.interactions)) == (2, 2, 3)
    assert _title(ds, "10") == "Les Misérables (1995)" and _year(ds, "10") == 1995
    assert _title(ds, "20").startswith("Star Wars: Episode IV")
    assert _attrs(ds, "20", "genre") == {"Action", "Sci-Fi"}
    assert ds.users is not None and list(ds.users["user_id"]) == ["1", "2"]


def _ml100k_original(directory: Path, item_flags: str = "0|0|0|1|1|1" + "|0" * 13) -> Path:
    _write(directory, "u.data", "1\t1\t5\t874965758\n1\t2\t3\t876893171\n2\t1\t4\t888550871\n")
    _write(
        directory,
        "u.item",
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{item_flags}\n"
        "2|Cérémonie, La|01-Jan-1996||http://y|0" + "|0" * 7 + "|1" + "|0" * 10 + "\n",
        "latin-1",
    )
    _write(directory, "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n")
    return directory


def test_original_ml100k_files_load_genres_from_flags(tmp_path: Path) -> None:
    ds = load_ml100k(_ml100k_original(tmp_path / "ml-100k"))
    _check_contract(ds)
    assert (ds.n_users, ds.n_movies, len(ds.interactions)) == (2, 2, 3)
    assert _title(ds, "1") == "Toy Story (1995)"
    assert _attrs(ds, "1", "genre") == {"Animation", "Children's", "Comedy"}
    assert _title(ds, "2") == "La Cérémonie (1996)" and _year(ds, "2") == 1996
    assert _attrs(ds, "2", "genre") == {"Drama"}
    assert detect_format(tmp_path / "ml-100k") == "ml-100k-original"


def _grouplens(directory: Path, ratings: str | bytes | None = None) -> Path:
    _write(
        directory,
        "ratings.csv",
        ratings
        if ratings is not None
        else "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,2,3.5,964981247\n"
        "2,1,5.0,964982224\n",
    )
    _write(
        directory,
        "movies.csv",
        "movieId,title,genres\n1,Toy Story (1995),Comedy\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n',
    )
    return directory


def test_grouplens_csv_quoted_titles_and_optional_files(tmp_path: Path) -> None:
    ds = load_grouplens_csv(_grouplens(tmp_path / "set"))
    _check_contract(ds)
    assert _title(ds, "2") == "The American President (1995)"  # as people write it
    assert ds.links is None and set(ds.attributes["kind"]) == {"genre"}


def test_describe_dataset_counts_attributes_by_kind(tmp_path: Path) -> None:
    stats = describe_dataset(load_ml1m(_ml1m(tmp_path / "d")))
    assert (stats.users, stats.movies, stats.interactions) == (2, 2, 3)
    assert (stats.rating_min, stats.rating_max) == (3.0, 5.0)
    assert stats.attributes == {"genre": 4} and stats.movies_with == {"genre": 2}


# --- bad files: each names the file and the line ---------------------------------------


def _error(directory: Path) -> DataFormatError:
    with pytest.raises(DataFormatError) as info:
        load_dataset(str(directory))
    return info.value


def _bad_ratings(tmp_path: Path, text: str | bytes) -> DataFormatError:
    return _error(_grouplens(tmp_path / "bad", text))


HEAD = "userId,movieId,rating,timestamp\n"


def test_missing_required_column_is_reported_on_header(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, "userId,movieId,timestamp\n1,1,964982703\n")
    assert err.path.endswith("ratings.csv") and err.line == 1
    assert "rating" in err.message and "ratings.csv, line 1" in str(err)


def test_non_numeric_rating_reports_first_bad_line(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, HEAD + "1,1,4.0,1\n1,2,good,2\n1,3,bad,3\n")
    assert err.path.endswith("ratings.csv") and err.line == 3 and "'good'" in err.message


def test_non_numeric_timestamp_reports_first_bad_line(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, HEAD + "1,1,4.0,1\n1,2,3.0,2\n1,3,3.0,yesterday\n")
    assert err.line == 4 and "timestamp" in err.message and "ratings.csv, line 4" in str(err)


def test_empty_rating_field_is_reported_as_missing(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, HEAD + "1,1,,1\n")
    assert err.line == 2 and "missing rating" in err.message


@pytest.mark.parametrize("rating", ["-1", "10.5"])
def test_rating_out_of_range_reports_line(tmp_path: Path, rating: str) -> None:
    err = _bad_ratings(tmp_path, HEAD + f"1,1,4,1\n1,2,3,2\n1,3,{rating},3\n")
    assert err.path.endswith("ratings.csv") and err.line == 4 and "out of range" in err.message


def test_duplicate_rating_reports_line_of_repeat_and_first(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, HEAD + "1,1,4,100\n2,1,3,100\n1,1,5,100\n")
    assert err.line == 4 and "first on line 2" in err.message


def test_undecodable_bytes_report_the_line(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, (HEAD + "1,1,4,1\n").encode() + b"1,\xff\xfe,4,2\n")
    assert err.path.endswith("ratings.csv") and err.line == 3 and "utf-8" in err.message


def test_empty_file_is_reported(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, b"")
    assert err.path.endswith("ratings.csv") and "empty" in err.message


def test_header_only_file_is_reported(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, HEAD)
    assert err.path.endswith("ratings.csv") and "no ratings" in err.message


def test_extra_field_reports_pandas_line(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, HEAD + "1,1,4,1\n1,2,3,2,9\n")
    assert err.line == 3 and err.message == "wrong number of fields: expected 4, found 5"


def test_binary_garbage_never_escapes_as_raw_error(tmp_path: Path) -> None:
    err = _bad_ratings(tmp_path, bytes(range(256)) * 4)
    assert err.path.endswith("ratings.csv")


def test_duplicate_movie_id_in_movies_file(tmp_path: Path) -> None:
    directory = _grouplens(tmp_path / "d")
    _write(directory, "movies.csv", "movieId,title,genres\n1,A (1990),Drama\n1,B (1991),Drama\n")
    err = _error(directory)
    assert err.path.endswith("movies.csv") and err.line == 3


def test_missing_movies_file_is_not_found(tmp_path: Path) -> None:
    directory = _grouplens(tmp_path / "d")
    (directory / "movies.csv").unlink()
    with pytest.raises(DatasetNotFound, match=r"movies\.csv"):
        load_dataset(str(directory))


def test_ml1m_bad_rating_line_is_counted_without_header(tmp_path: Path) -> None:
    directory = _ml1m(tmp_path / "m", "1::10::5::978300760\n1::20::x::978302109\n")
    err = _error(directory)
    assert err.path.endswith("ratings.dat") and err.line == 2


def test_original_ml100k_bad_genre_flag_reports_line(tmp_path: Path) -> None:
    err = _error(_ml100k_original(tmp_path / "o", item_flags="0|0|0|1|1|2" + "|0" * 13))
    assert err.path.endswith("u.item") and err.line == 1


def test_recbole_missing_column_names_the_inter_file(tmp_path: Path) -> None:
    directory = tmp_path / "rb"
    _write(directory, "rb.inter", "user_id:token\titem_id:token\trating:float\n1\t1\t3\n")
    _write(directory, "rb.item", "item_id:token\tmovie_title:token_seq\n1\tX\n")
    err = _error(directory)
    assert err.path.endswith("rb.inter") and err.line == 1 and "timestamp" in err.message


def test_recbole_undecodable_title_names_the_item_file(tmp_path: Path) -> None:
    directory = tmp_path / "rb"
    _write(
        directory,
        "rb.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t3\t10\n",
    )
    _write(directory, "rb.item", b"item_id:token\tmovie_title:token_seq\n1\tX\n2\tCaf\xe9\n")
    err = _error(directory)
    assert err.path.endswith("rb.item") and err.line == 3


# --- recsys data info -------------------------------------------------------------------


@needs_shared
def test_info_prints_summary_table() -> None:
    result = CliRunner().invoke(data_cmd.app, ["info", "ml-100k", "--data-dir", str(SHARED)])
    assert result.exit_code == 0, result.output
    for text in ("943", "1,682", "100,000", "1 - 5", "1997-09-20", "actor attributes"):
        assert text in result.output


def test_info_bad_file_prints_one_red_line_and_exits_1(tmp_path: Path) -> None:
    directory = _grouplens(tmp_path / "bad", HEAD + "1,1,x,1\n")
    result = CliRunner().invoke(data_cmd.app, ["info", str(directory)])
    assert result.exit_code == 1
    assert "ratings.csv, line 2" in result.output and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_info_unknown_dataset_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(data_cmd.app, ["info", "ml-32m", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1 and "not found" in result.output
