"""Named surfaces: the rankings a model serves, each with its own fitted blend weights.

- ``for_you`` ("Top picks for you"): a person's long-term taste; weights fitted on movies
  held out at random from each user's history (protocol A's question); no reranker.
- ``up_next`` ("Up next"): the moment; weights fitted on next-event prediction over the
  newest events (protocol C's question), reordered by the reranker when the bundle has
  trees.

The trainer writes them into the manifest as ``surfaces: {name: {"blend_weights": {...},
...}}`` with ``default_surface``. A bundle written before surfaces existed serves its one
``blend_weights`` on both, with the reranker on ``up_next`` only, and ``up_next`` as the
default, which is what it served before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from recsys_core.errors import ArtifactError
from recsys_core.scoring import BlendWeights

FOR_YOU = "for_you"
UP_NEXT = "up_next"
SURFACES = (FOR_YOU, UP_NEXT)
#: surfaces the reranker's trees reorder (they are fitted on next-event cases)
RERANKED = frozenset({UP_NEXT})
#: the default of a bundle that names none
LEGACY_DEFAULT = UP_NEXT
#: what the trainer names as default (no single weighting serves both questions well:
#: docs/evaluation.md)
DEFAULT_SURFACE = UP_NEXT


@dataclass(frozen=True)
class Surface:
    name: str
    weights: BlendWeights
    #: whether the reranker (if the bundle has one) reorders this surface's blend
    rerank: bool


def surfaces_of(manifest: Mapping[str, Any]) -> dict[str, Surface]:
    """Every surface of a manifest; :class:`ArtifactError` for a malformed entry."""
    legacy = manifest.get("blend_weights", {})
    given = manifest.get("surfaces") or {}
    if not isinstance(given, Mapping):
        raise ArtifactError("manifest 'surfaces' is not an object")
    out = {}
    for name in SURFACES:
        entry = given.get(name, {"blend_weights": legacy})
        raw = entry.get("blend_weights") if isinstance(entry, Mapping) else None
        if not isinstance(raw, Mapping):
            raise ArtifactError(f"surface {name!r} has no blend_weights object")
        try:
            weights = BlendWeights.from_dict(dict(raw))
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"surface {name!r} has bad blend weights ({exc})") from None
        out[name] = Surface(name, weights, name in RERANKED)
    return out


def default_surface(manifest: Mapping[str, Any]) -> str:
    name = manifest.get("default_surface", LEGACY_DEFAULT)
    if name not in SURFACES:
        raise ArtifactError(f"default_surface {name!r} is not one of {', '.join(SURFACES)}")
    return str(name)
