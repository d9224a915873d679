"""Title search: exact prefixes first, then word starts, then typos; articles and years
ignored; nonsense finds nothing."""

from __future__ import annotations

import numpy as np

from serving.model import TitleIndex, normalize_title

TITLES = np.array([
    "Godfather, The (1972)", "Godfather: Part II, The (1974)", "Go (1999)", "O (2001)",
    "Star Wars (1977)", "Solo: A Star Wars Story (2018)", "Star Maps (1997)",
    "Usual Suspects, The (1995)", "Shawshank Redemption, The (1994)", "Z (1969)",
    "Amélie (2001)", "Alien (1979)", "Aliens (1986)",
])
POPULARITY = np.array([0.9, 0.8, 0.1, 0.1, 1.0, 0.3, 0.05, 0.7, 0.95, 0.01, 0.4, 0.5, 0.6])


def titles(query: str, limit: int = 3) -> list[str]:
    index = TitleIndex(TITLES, POPULARITY)
    return [str(TITLES[i]) for i, _ in index.search(query, limit)]


def test_normalize_moves_the_article_and_drops_year_accents_and_punctuation() -> None:
    assert normalize_title("Godfather: Part II, The (1974)") == "the godfather part ii"
    assert normalize_title("Amélie (2001)") == "amelie"


def test_prefix_beats_word_start_beats_popularity() -> None:
    assert titles("star wars", 2) == ["Star Wars (1977)", "Solo: A Star Wars Story (2018)"]
    assert titles("the godfather", 2) == ["Godfather, The (1972)",
                                          "Godfather: Part II, The (1974)"]


def test_typos_find_the_title_and_short_titles_do_not_win_by_accident() -> None:
    assert titles("godfathr", 1) == ["Godfather, The (1972)"]
    assert titles("shawshenk", 1) == ["Shawshank Redemption, The (1994)"]
    assert titles("the usual suspcts", 1) == ["Usual Suspects, The (1995)"]
    assert titles("amelie", 1) == ["Amélie (2001)"]
    assert "O (2001)" not in titles("godfathr")


def test_the_exact_title_ranks_first_whatever_the_popularity() -> None:
    assert titles("alien", 2) == ["Alien (1979)", "Aliens (1986)"]
    assert titles("aliens", 1) == ["Aliens (1986)"]


def test_nonsense_finds_nothing() -> None:
    assert titles("xqzt") == []
