"""Pair states parsed many at once equal the one-by-one parse, and bad values are refused."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_core.userstate import PairState, PairTable

STATES = {
    "50": PairState(880_000_000.0, 4.5, None, 880_000_100.0),
    "181": PairState(None, None, 0.75, 880_000_050.0),
    "7": PairState(870_000_000.0, 1.0, 1.0, 890_000_000.123456),
    "x-1": PairState(None, None, None, 0.0),
}


def test_table_from_packed_bytes_round_trips_every_field() -> None:
    packed = {m.encode(): p.pack().encode() for m, p in STATES.items()}
    table = PairTable.from_packed(packed)
    assert table.movie_ids == list(STATES)
    assert table.pairs() == STATES
    assert {m: PairState.unpack(v) for m, v in packed.items()} == {
        m.encode(): p for m, p in STATES.items()}
    assert np.isnan(table.values[1, 1]) and table.values[1, 2] == 0.75


def test_table_from_str_and_from_pairs_agree() -> None:
    a = PairTable.from_packed({m: p.pack() for m, p in STATES.items()})
    b = PairTable.from_pairs(STATES)
    np.testing.assert_array_equal(a.values, b.values)
    assert len(PairTable.from_packed({})) == 0


def test_a_malformed_value_is_refused() -> None:
    with pytest.raises(ValueError, match="not a packed pair state"):
        PairTable.from_packed({b"1": b"1|2|3", b"2": b"1|2|3|4|5"})
