"""Ranking methods on one Meta-Dataset source, with ties for insignificant gaps.

The rule (issue 8; the Meta-Dataset leaderboard's "average rank" with ties):

1. Each method reports a mean accuracy ``a``, a 95% interval half-width ``c``
   and its number of episodes ``n``. Its per-episode standard deviation is
   recovered from the interval, which the MD rule defines as
   ``c = 1.96 * s / sqrt(n)``:  ``s = c * sqrt(n) / 1.96``.
2. Two methods differ significantly when
   ``|a1 - a2| > 1.96 * sqrt(s1**2 / n1 + s2**2 / n2)``
   (equivalently ``|a1 - a2| > sqrt(c1**2 + c2**2)``).
3. Methods are ranked 1, 2, ... by decreasing accuracy; methods with exactly
   equal accuracy share the mean of the positions they occupy.
4. The *best* methods are those with the highest accuracy. Every method whose
   difference from a best method is not significant ties with it: the best
   methods and these share the mean of their step-3 ranks. All other methods
   keep their step-3 rank.

A method's average rank is the mean of its ranks over the sources of a table.
Only the gap to the best is tested, as the issue states: a method that is not
significantly below the best (a wide interval) ties with it even if a more
accurate method with a narrow interval is significantly below the best, so
tied methods need not be adjacent (see the tests).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

Z95 = 1.96


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A mean accuracy with its 95% interval half-width over ``episodes`` episodes (any one unit)."""

    accuracy: float
    interval: float
    episodes: int


def std_from_interval(interval: float, episodes: int) -> float:
    """``s = c * sqrt(n) / 1.96``: undoes the MD interval ``c = 1.96 * s / sqrt(n)``."""
    return interval * math.sqrt(episodes) / Z95


def significance_threshold(a: Estimate, b: Estimate) -> float:
    """``1.96 * sqrt(s_a²/n_a + s_b²/n_b)``: the largest gap that is not significant."""
    sa, sb = std_from_interval(a.interval, a.episodes), std_from_interval(b.interval, b.episodes)
    return Z95 * math.sqrt(sa ** 2 / a.episodes + sb ** 2 / b.episodes)


def significantly_different(a: Estimate, b: Estimate) -> bool:
    return abs(a.accuracy - b.accuracy) > significance_threshold(a, b)


def positional_ranks(accuracies: Sequence[float]) -> list[float]:
    """Ranks 1..k by decreasing accuracy; exactly equal accuracies share the mean of their positions."""
    order = sorted(range(len(accuracies)), key=lambda i: -accuracies[i])
    ranks = [0.0] * len(accuracies)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and accuracies[order[end + 1]] == accuracies[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def tied_with_best(estimates: Sequence[Estimate]) -> list[bool]:
    """Whether each method is a best one or not significantly different from a best one (step 4)."""
    if not estimates:
        return []
    top = max(e.accuracy for e in estimates)
    best = [e for e in estimates if e.accuracy == top]
    return [any(not significantly_different(e, b) for b in best) for e in estimates]


def rank_source(estimates: Sequence[Estimate]) -> list[float]:
    """The rank of each method on one source (see the module docstring for the rule)."""
    if not estimates:
        return []
    ranks = positional_ranks([e.accuracy for e in estimates])
    tied = [i for i, t in enumerate(tied_with_best(estimates)) if t]
    shared = sum(ranks[i] for i in tied) / len(tied)
    for i in tied:
        ranks[i] = shared
    return ranks


def average_rank(ranks: Sequence[Optional[float]]) -> Optional[float]:
    """Mean rank over a table's sources; ``None`` if the method lacks any of them."""
    if not ranks or any(r is None for r in ranks):
        return None
    return sum(ranks) / len(ranks)
