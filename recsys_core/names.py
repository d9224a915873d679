"""Telling a person's name from an opaque id.

Some metadata names people only by an id: ml-100k's knowledge graph uses Freebase ids
(``m.02gf_l``, ``g.11b71tsxrv``), and IMDb's files use ``nm0000631`` until joined with
``name.basics``. Such an id is never shown or returned as if it were a name.
"""

from __future__ import annotations

import re

_OPAQUE = re.compile(r"^/?(?:[mg]\.[0-9a-z_]+|nm\d{5,}|tt\d{5,}|Q\d+)$", re.IGNORECASE)


def is_opaque_id(value: str) -> bool:
    """True for a Freebase, IMDb or Wikidata id, False for anything that reads as a name."""
    return bool(_OPAQUE.match(value.strip()))


def mark_token(token: str) -> str:
    """A content token (``actor=m.02gf_l``) with an opaque value marked as an id
    (``actor_id=m.02gf_l``); names and other tokens unchanged."""
    kind, sep, value = token.partition("=")
    return f"{kind}_id={value}" if sep and is_opaque_id(value) else token


def split_people(people: dict[str, list[str]]) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """People by kind → (those known by name, those known only by an opaque id)."""
    names: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    for kind, values in people.items():
        for v in values:
            (ids if is_opaque_id(str(v)) else names).setdefault(kind, []).append(str(v))
    return names, ids


_ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "El", "Los", "Las", "Il", "Lo", "Gli",
             "Die", "Der", "Das", "Den", "Det", "De", "Het", "Un", "Une", "Ein", "Eine", "O",
             "Os", "As", "I")
_TRAILING_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>" + "|".join(
    re.escape(a) for a in _ARTICLES) + r")$")
_TAIL = re.compile(r"^(?P<head>.*?)(?P<tail>(?: \([^()]*\))*)$")
_GROUP = re.compile(r" \(([^()]*)\)")


def _front_article(text: str) -> str:
    m = _TRAILING_ARTICLE.match(text)
    if m is None:
        return text
    article = m["article"]
    return f"{article}{m['rest']}" if article.endswith("'") else f"{article} {m['rest']}"


def display_title(title: str) -> str:
    """A title as people write it: MovieLens's ``Empire Strikes Back, The (1980)`` reads
    ``The Empire Strikes Back (1980)``, and ``City of Lost Children, The (Cité des enfants
    perdus, La) (1995)`` reads ``The City of Lost Children (La Cité des enfants perdus)
    (1995)``. Other titles are unchanged."""
    m = _TAIL.match(title.strip())
    if m is None:  # pragma: no cover - the pattern matches every string
        return title
    tail = _GROUP.sub(lambda g: f" ({_front_article(g.group(1))})", m["tail"])
    return _front_article(m["head"]) + tail
