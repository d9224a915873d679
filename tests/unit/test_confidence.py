"""recsys_core.confidence: the one rule turning ratings and watches into c = 1 + alpha * s."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsys_core.confidence import ConfidenceRule


@pytest.fixture
def rule() -> ConfidenceRule:
    return ConfidenceRule(alpha=10.0, max_rating=5.0, min_completion=0.05)


def test_default_rule_is_alpha_10_over_five_stars() -> None:
    assert ConfidenceRule() == ConfidenceRule(alpha=10.0, max_rating=5.0, min_completion=0.05)


@pytest.mark.parametrize(
    ("rating", "expected"),
    [
        (5.0, 11.0),  # 1 + 10 * 5/5
        (2.5, 6.0),  # 1 + 10 * 2.5/5
        (4.0, 9.0),  # 1 + 10 * 0.8
        (0.5, 2.0),  # 1 + 10 * 0.1
        (0.0, 1.0),
        (7.0, 11.0),  # above the range: strength clipped to 1
        (-1.0, 1.0),  # below the range: strength clipped to 0
    ],
)
def test_from_ratings_known_values(rule: ConfidenceRule, rating: float, expected: float) -> None:
    assert float(rule.from_ratings(rating)) == pytest.approx(expected)


def test_from_ratings_is_vectorised(rule: ConfidenceRule) -> None:
    out = rule.from_ratings(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [3.0, 5.0, 7.0, 9.0, 11.0])


def test_rating_strength_scales_by_max_rating() -> None:
    ten_stars = ConfidenceRule(max_rating=10.0)
    np.testing.assert_allclose(ten_stars.rating_strength(np.array([5.0, 10.0, 12.0])),
                               [0.5, 1.0, 1.0])


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        (0.04, 0.0),  # below min_completion: no preference at all
        (0.05, 0.05),  # at the threshold: kept
        (0.5, 0.5),
        (1.0, 1.0),
        (1.3, 1.0),  # clipped
        (-0.2, 0.0),  # clipped
    ],
)
def test_completion_strength_known_values(
    rule: ConfidenceRule, completion: float, expected: float
) -> None:
    assert float(rule.completion_strength(completion)) == pytest.approx(expected)


def test_min_completion_is_configurable() -> None:
    strict = ConfidenceRule(min_completion=0.5)
    np.testing.assert_allclose(strict.completion_strength(np.array([0.4, 0.5, 0.9])),
                               [0.0, 0.5, 0.9])
    lenient = ConfidenceRule(min_completion=0.0)
    assert float(lenient.completion_strength(0.01)) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("watched", "duration", "expected"),
    [
        (3600.0, 7200.0, 6.0),  # half watched: 1 + 10 * 0.5
        (7200.0, 7200.0, 11.0),
        (9000.0, 7200.0, 11.0),  # more than the duration: completion clipped to 1
        (60.0, 7200.0, 1.0),  # 0.83 % watched is below min_completion
        (600.0, 0.0, 1.0),  # unknown duration: no completion
    ],
)
def test_from_watch_known_values(
    rule: ConfidenceRule, watched: float, duration: float, expected: float
) -> None:
    assert float(rule.from_watch(watched, duration)) == pytest.approx(expected)


def test_from_watch_is_vectorised_and_handles_zero_durations(rule: ConfidenceRule) -> None:
    out = rule.from_watch(np.array([3600.0, 100.0, 50.0]), np.array([7200.0, 0.0, 100.0]))
    np.testing.assert_allclose(out, [6.0, 1.0, 6.0])


@pytest.mark.parametrize(
    ("rating", "completion", "expected"),
    [
        (4.0, 0.9, 10.0),  # max(0.8, 0.9) = 0.9
        (4.0, 0.3, 9.0),  # max(0.8, 0.3) = 0.8
        (None, 0.3, 4.0),  # completion only
        (2.5, None, 6.0),  # rating only
        (None, None, 1.0),  # nothing: the unobserved confidence
        (5.0, 0.01, 11.0),  # a short watch never lowers a rating
        (1.0, 0.02, 3.0),  # below min_completion the watch adds nothing: 0.2 from the rating
    ],
)
def test_combine_takes_the_larger_of_rating_and_completion(
    rule: ConfidenceRule, rating: float | None, completion: float | None, expected: float
) -> None:
    out = rule.combine(rating, completion)
    assert isinstance(out, float)
    assert out == pytest.approx(expected)


def test_combine_agrees_with_the_vectorised_functions(rule: ConfidenceRule) -> None:
    assert rule.combine(3.0, None) == pytest.approx(float(rule.from_ratings(3.0)))
    assert rule.combine(None, 0.7) == pytest.approx(float(rule.from_watch(70.0, 100.0)))


def test_confidence_is_linear_in_alpha() -> None:
    assert float(ConfidenceRule(alpha=40.0).confidence(0.25)) == pytest.approx(11.0)
    assert float(ConfidenceRule(alpha=1.0).from_ratings(5.0)) == pytest.approx(2.0)


def test_to_dict_from_dict_round_trip() -> None:
    rule = ConfidenceRule(alpha=3.5, max_rating=10.0, min_completion=0.2)
    data = rule.to_dict()
    assert data == {"alpha": 3.5, "max_rating": 10.0, "min_completion": 0.2}
    assert ConfidenceRule.from_dict(data) == rule


def test_from_dict_ignores_unknown_keys_and_coerces_numbers() -> None:
    data = {"alpha": "20", "max_rating": 5, "unknown": "x"}
    rule = ConfidenceRule.from_dict(data)
    assert rule == ConfidenceRule(alpha=20.0, max_rating=5.0)
    assert isinstance(rule.alpha, float)
    # missing keys keep their defaults
    assert ConfidenceRule.from_dict({}) == ConfidenceRule()


def test_rule_is_immutable(rule: ConfidenceRule) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.alpha = 1.0  # type: ignore[misc]
