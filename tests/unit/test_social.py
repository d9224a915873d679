"""The social signal: strengths, fading, one vote per followee and movie, reasons."""

from __future__ import annotations

import numpy as np

from recsys_core.social import Inbox, social_reason, social_scores, social_sources

DAY = 86_400.0
NOW = 1_000 * DAY


def test_high_ratings_and_watches_count_low_ratings_do_not() -> None:
    inbox = Inbox.of([("a", 0, 5.0, None, NOW), ("b", 1, 4.0, None, NOW),
                      ("c", 2, 3.0, None, NOW), ("d", 3, None, 0.8, NOW)])
    scores = social_scores(inbox, 5, NOW)
    assert scores is not None
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.0, 0.4, 0.0])


def test_entries_fade_with_age_and_a_followee_counts_once_per_movie() -> None:
    inbox = Inbox.of([("a", 0, 5.0, None, NOW - 30 * DAY),  # one half-life old
                      ("b", 1, 3.0, None, NOW - 10 * DAY),  # b rated 1 low, then high
                      ("b", 1, 5.0, None, NOW)])
    scores = social_scores(inbox, 2, NOW, half_life_days=30.0)
    assert scores is not None
    np.testing.assert_allclose(scores, [0.5, 1.0])
    # newest wins the other way round too: a later low rating takes the vote away
    later_low = Inbox.of([("b", 1, 5.0, None, NOW - DAY), ("b", 1, 2.0, None, NOW)])
    assert social_scores(later_low, 2, NOW) is None


def test_three_friends_outweigh_one_and_the_reason_names_them() -> None:
    inbox = Inbox.of([("ana", 7, 5.0, None, NOW), ("bo", 7, 4.0, None, NOW),
                      ("cy", 7, 5.0, None, NOW - DAY), ("dee", 8, 5.0, None, NOW),
                      ("eve", 9, None, 1.0, NOW)])
    scores = social_scores(inbox, 10, NOW)
    assert scores is not None and scores[7] > scores[8] > scores[9] > 0
    sources = social_sources(inbox, np.array([7, 8, 9, 3]), NOW)
    assert set(sources) == {7, 8, 9}
    assert sources[7].followees[0] == "ana" and len(sources[7].followees) == 3
    assert social_reason(sources[7], {"ana": "Ana"}) == "Ana and 2 others you follow rated this 5★"
    assert social_reason(sources[8]) == "user dee you follow rated this 5★"
    assert social_reason(sources[9]) == "user eve you follow watched this"


def test_empty_inbox_has_no_signal() -> None:
    assert social_scores(Inbox.empty(), 3, NOW) is None
    assert social_sources(Inbox.empty(), np.array([1]), NOW) == {}
