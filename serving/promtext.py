"""A fast reader of the Prometheus text format, for ``/v1/admin/metrics``.

``prometheus_client.parser`` reads about 50,000 lines a second in pure Python, character by
character; the operator page polls the merged samples of every role every two seconds, so
that parser alone took tens of milliseconds a poll. This reader handles what
``prometheus_client`` writes (``# TYPE`` before each family's samples, label values escaped
as ``\\\\``, ``\\"`` and ``\\n``) with two compiled regular expressions, and gives the same
samples (tested against ``prometheus_client``'s parser on a real registry).
"""

from __future__ import annotations

import math
import re

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"'}


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return _UNESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), "\\" + m.group(1)), value)


def read_samples(text: str) -> list[tuple[str, str, dict[str, str], float]]:
    """``(family type, sample name, labels, value)`` of each sample; NaN values and
    ``_created`` samples left out. Lines that are not samples are skipped."""
    out: list[tuple[str, str, dict[str, str], float]] = []
    kind = "unknown"
    for line in text.splitlines():
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) == 4 and parts[1] == "TYPE":
                kind = parts[3].strip()
            continue
        m = _SAMPLE.match(line)
        if m is None:
            continue
        name, labels, raw = m.groups()
        if name.endswith("_created"):
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isnan(value):
            continue
        out.append((kind, name, {k: _unescape(v) for k, v in _LABEL.findall(labels)}
                    if labels else {}, value))
    return out
