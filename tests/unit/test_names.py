"""People's names: IMDb's files joined through links.csv, and opaque ids never shown as names.

The IMDb files are written by the tests in IMDb's own format (gzipped TSV, ``\\N`` for none),
for movies of the real ml-latest-small; the README says where the real files come from.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from recsys_core.explain import content_reason
from recsys_core.loaders import load_dataset
from recsys_core.loaders.imdb import load_imdb_people, tconst
from recsys_core.names import is_opaque_id, mark_token, split_people
from tests.unit.test_explain import tiny_bundle

ALIEN, BLADE_RUNNER, ALIENS = "1214", "541", "1200"


def _tsv(path: Path, header: str, rows: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(header + "\n")
        for row in rows:
            out.write(row + "\n")


@pytest.fixture
def imdb_dir(tmp_path: Path) -> Path:
    d = tmp_path / "imdb"
    d.mkdir()
    _tsv(d / "title.crew.tsv.gz", "tconst\tdirectors\twriters",
         ["tt0078748\tnm0000631\tnm0619603,nm0785814",   # Alien
          "tt0083658\tnm0000631\tnm0276091",             # Blade Runner
          "tt0090605\tnm0000116\t\\N",                   # Aliens
          "tt9999999\tnm0000001\t\\N"])                  # not in MovieLens
    _tsv(d / "title.principals.tsv.gz", "tconst\tordering\tnconst\tcategory\tjob\tcharacters",
         ["tt0078748\t1\tnm0000244\tactress\t\\N\t[\"Ripley\"]",
          "tt0078748\t2\tnm0000432\tactor\t\\N\t[\"Dallas\"]",
          "tt0078748\t3\tnm0000631\tdirector\t\\N\t\\N",
          "tt0090605\t1\tnm0000244\tactress\t\\N\t[\"Ripley\"]",
          "tt0083658\t1\tnm0000148\tactor\t\\N\t[\"Deckard\"]",
          "tt0083658\t2\tnm9999998\tactor\t\\N\t\\N"])  # no name known: left out
    _tsv(d / "name.basics.tsv.gz", "nconst\tprimaryName\tbirthYear\tdeathYear",
         ["nm0000631\tRidley Scott\t1937\t\\N", "nm0000116\tJames Cameron\t1954\t\\N",
          "nm0000244\tSigourney Weaver\t1949\t\\N", "nm0000432\tTom Skerritt\t1933\t\\N",
          "nm0000148\tHarrison Ford\t1942\t\\N", "nm0619603\tDan O'Bannon\t1946\t2009",
          "nm0785814\tRonald Shusett\t1935\t\\N", "nm0276091\tHampton Fancher\t1938\t\\N"])
    return d


def test_opaque_ids_are_told_from_names() -> None:
    for opaque in ("m.02gf_l", "g.11b71tsxrv", "/m.07nznf", "nm0000631"):
        assert is_opaque_id(opaque), opaque
    for name in ("Ridley Scott", "Mel Gibson", "M. Night Shyamalan", "Q", "g.e. smith band"):
        assert not is_opaque_id(name), name
    assert mark_token("actor=m.02gf_l") == "actor_id=m.02gf_l"
    assert mark_token("director=Ridley Scott") == "director=Ridley Scott"
    assert mark_token("genre=Drama") == "genre=Drama"
    assert split_people({"actor": ["m.0htlr", "Harrison Ford"]}) == (
        {"actor": ["Harrison Ford"]}, {"actor": ["m.0htlr"]})


def test_imdb_ids_from_links() -> None:
    assert tconst("78748") == "tt0078748"
    assert tconst("tt0114709") == "tt0114709"
    with pytest.raises(ValueError):
        tconst("")


def test_imdb_people_are_joined_through_links_with_names(imdb_dir: Path, data_dir: Path) -> None:
    ds = load_dataset("ml-latest-small", data_dir)
    assert ds.links is not None
    people = load_imdb_people(imdb_dir, ds.links)
    of = {(m, k): sorted(people[(people.movie_id == m) & (people.kind == k)]["value"])
          for m in (ALIEN, BLADE_RUNNER, ALIENS) for k in ("director", "writer", "actor")}
    assert of[ALIEN, "director"] == ["Ridley Scott"]
    assert of[ALIEN, "writer"] == ["Dan O'Bannon", "Ronald Shusett"]
    assert of[ALIEN, "actor"] == ["Sigourney Weaver", "Tom Skerritt"]
    assert of[BLADE_RUNNER, "actor"] == ["Harrison Ford"]  # the unnamed one is left out
    assert of[ALIENS, "director"] == ["James Cameron"] and of[ALIENS, "writer"] == []
    assert not any(is_opaque_id(v) for v in people["value"])
    assert set(people["movie_id"]) == {ALIEN, BLADE_RUNNER, ALIENS}  # tt9999999 is not linked


def test_load_dataset_uses_imdb_names_when_the_files_are_there(
    imdb_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECSYS_IMDB_DIR", str(imdb_dir))
    ds = load_dataset("ml-latest-small", data_dir)
    alien = ds.attributes[ds.attributes.movie_id == ALIEN]
    assert ("director", "Ridley Scott") in set(zip(alien.kind, alien.value, strict=True))
    assert "tag" in set(ds.attributes.kind)  # the dataset's own attributes stay
    monkeypatch.setenv("RECSYS_IMDB_DIR", "")
    plain = load_dataset("ml-latest-small", data_dir)
    assert "director" not in set(plain.attributes.kind)


def test_a_reason_names_a_shared_director_but_never_an_id() -> None:
    bundle = tiny_bundle()
    values = ["director=Ridley Scott", "genre=Drama", "director=Ridley Scott", "genre=Drama",
              "actor=m.02gf_l", "actor=m.02gf_l"]
    bundle.extra["attr_indptr"] = np.asarray([0, 2, 4, 5, 6, 6, 6], dtype=np.int64)
    bundle.extra["attr_values"] = np.asarray(values, dtype=np.str_)
    assert content_reason(bundle, 0, 1) == "directed by Ridley Scott, like Movie 0"
    reason = content_reason(bundle, 2, 3)
    assert "m.02gf_l" not in reason and reason == "shares actors with Movie 2"


def test_titles_read_as_people_write_them() -> None:
    from recsys_core.names import display_title

    assert display_title("Empire Strikes Back, The (1980)") == "The Empire Strikes Back (1980)"
    assert display_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        "The City of Lost Children (La Cité des enfants perdus) (1995)")
    assert display_title("School of Flesh, The (École de la chair, L') (1998)") == (
        "The School of Flesh (L'École de la chair) (1998)")
    for unchanged in ("Star Wars (1977)", "Three Billboards Outside Ebbing, Missouri (2017)",
                      "Toy Story"):
        assert display_title(unchanged) == unchanged


def test_loaded_titles_are_display_titles(data_dir: Path) -> None:
    ds = load_dataset("ml-100k", data_dir)
    titles = set(ds.movies.title)
    assert "The Empire Strikes Back (1980)" in titles
    assert not any(t.endswith(", The") or ", The (" in t for t in titles)
