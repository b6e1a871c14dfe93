"""The ranking rule on hand-computed cases, ties included."""

import math

import pytest

from fewshot_bench.leaderboard.ranking import (Estimate, average_rank, positional_ranks, rank_source,
                                               significance_threshold, significantly_different,
                                               std_from_interval, tied_with_best)


def test_std_is_recovered_from_the_interval():
    # interval 1.0 over 100 episodes: s = 1.0 * 10 / 1.96
    assert std_from_interval(1.0, 100) == pytest.approx(5.1020408)
    # and it inverts the MD interval 1.96 * s / sqrt(n)
    assert std_from_interval(0.7, 600) == pytest.approx(0.7 * math.sqrt(600) / 1.96)  # = 8.7482


def test_threshold_by_hand():
    # n = 25, c = 2 -> s = 2 * 5 / 1.96 = 5.10204, s^2/n = 1.04123
    # n = 400, c = 1 -> s = 1 * 20 / 1.96 = 10.20408, s^2/n = 0.26031
    # 1.96 * sqrt(1.30154) = 2.23607 (= sqrt(2^2 + 1^2))
    a, b = Estimate(80.0, 2.0, 25), Estimate(77.0, 1.0, 400)
    assert significance_threshold(a, b) == pytest.approx(2.236068, abs=1e-6)
    assert significantly_different(a, b)                         # |80 - 77| = 3 > 2.236
    assert not significantly_different(a, Estimate(78.0, 1.0, 400))  # 2 <= 2.236


def test_gap_equal_to_threshold_is_a_tie():
    # c1 = 3, c2 = 4 -> threshold sqrt(9 + 16) = 5 exactly; |Δ| <= threshold ties
    assert not significantly_different(Estimate(55.0, 3.0, 100), Estimate(50.0, 4.0, 100))
    assert significantly_different(Estimate(55.01, 3.0, 100), Estimate(50.0, 4.0, 100))


def test_positional_ranks_share_exact_ties():
    assert positional_ranks([90.0, 80.0, 80.0, 70.0]) == [1.0, 2.5, 2.5, 4.0]
    assert positional_ranks([1.0, 3.0, 2.0]) == [3.0, 1.0, 2.0]


def test_no_tie_when_every_gap_is_significant():
    est = [Estimate(60.0, 0.5, 600), Estimate(70.0, 0.5, 600), Estimate(65.0, 0.5, 600)]
    assert rank_source(est) == [3.0, 1.0, 2.0]
    assert tied_with_best(est) == [False, True, False]


def test_two_methods_tie_with_the_best():
    # best 70 ± 1; 69 ± 1 is within sqrt(2) = 1.41 -> tie (ranks 1, 2 -> 1.5); 65 ± 1 is not
    est = [Estimate(70.0, 1.0, 100), Estimate(69.0, 1.0, 100), Estimate(65.0, 1.0, 100)]
    assert rank_source(est) == [1.5, 1.5, 3.0]


def test_three_way_tie_and_a_loser():
    # best 50 ± 2; 49 ± 2 (gap 1 <= 2.83) and 48 ± 2 (gap 2 <= 2.83) tie: mean of 1, 2, 3 = 2
    est = [Estimate(48.0, 2.0, 600), Estimate(50.0, 2.0, 600), Estimate(40.0, 2.0, 600), Estimate(49.0, 2.0, 600)]
    assert rank_source(est) == [2.0, 2.0, 4.0, 2.0]


def test_only_the_gap_to_the_best_is_tested():
    # best 71 ± 0.5; 70 ± 0.1 is significantly below it (1 > sqrt(0.26) = 0.51) while 69 ± 5 is not
    # (2 <= 5.02): the tied methods are positions 1 and 3 and share (1 + 3) / 2 = 2; 70 keeps rank 2
    est = [Estimate(71.0, 0.5, 600), Estimate(70.0, 0.1, 600), Estimate(69.0, 5.0, 600)]
    assert rank_source(est) == [2.0, 2.0, 2.0]
    assert tied_with_best(est) == [True, False, True]


def test_methods_below_the_best_do_not_tie_with_each_other():
    # 80 and 79.9 are within noise of each other but both significantly below 90: ranks 2 and 3 stay
    est = [Estimate(90.0, 0.1, 600), Estimate(80.0, 1.0, 600), Estimate(79.9, 1.0, 600)]
    assert rank_source(est) == [1.0, 2.0, 3.0]


def test_equal_best_accuracies_and_zero_intervals():
    est = [Estimate(50.0, 0.0, 10), Estimate(50.0, 0.0, 10), Estimate(40.0, 0.0, 10)]
    assert rank_source(est) == [1.5, 1.5, 3.0]


def test_single_and_empty():
    assert rank_source([Estimate(10.0, 1.0, 5)]) == [1.0]
    assert rank_source([]) == []


def test_ranks_keep_their_total():
    # sharing means never changes the sum 1 + 2 + ... + k
    est = [Estimate(71.0, 0.5, 600), Estimate(70.0, 0.1, 600), Estimate(69.0, 5.0, 600), Estimate(60.0, 1.0, 600)]
    assert sum(rank_source(est)) == pytest.approx(10.0)


def test_average_rank():
    assert average_rank([1.5, 3.0, 2.0]) == pytest.approx(6.5 / 3)
    assert average_rank([1.0, None]) is None
    assert average_rank([]) is None
