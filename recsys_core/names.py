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
