"""How the article's sections are grouped into weeks: tiny lessons merged away, or N lessons of similar length.

Groups are runs of consecutive sections, so lessons always follow the article's order. A group is a list of
unit indices; a unit is a run of sections that belong together (a major section and what follows it).
"""

from __future__ import annotations

from collections.abc import Sequence

# A lesson shorter than this (about a minute of reading) is a fragment, not a week's reading.
MIN_LESSON_WORDS = 120


def merge_tiny(words: Sequence[int], minimum: int = MIN_LESSON_WORDS) -> list[list[int]]:
    """Group units so that none has fewer than `minimum` words: each tiny one joins its shorter neighbour."""
    groups = [[index] for index in range(len(words))]
    sizes = list(words)
    while len(groups) > 1 and min(sizes) < minimum:
        tiny = min(range(len(groups)), key=lambda index: (sizes[index], index))
        if tiny == 0:
            other = 1
        elif tiny == len(groups) - 1:
            other = tiny - 1
        else:
            other = tiny - 1 if sizes[tiny - 1] <= sizes[tiny + 1] else tiny + 1
        first, second = sorted((tiny, other))
        groups[first] += groups.pop(second)
        sizes[first] += sizes.pop(second)
    return groups


def balance(words: Sequence[int], weeks: int) -> list[list[int]]:
    """Cut the units into `weeks` consecutive groups whose word counts are as even as possible.

    Minimises the sum of squared differences from the mean length (dynamic programming over cut points),
    which keeps both the longest and the shortest lesson close to the mean.
    """
    count = len(words)
    if not 1 <= weeks <= count:
        raise ValueError(f"cannot make {weeks} groups of {count} units")
    prefix = [0]
    for size in words:
        prefix.append(prefix[-1] + size)
    mean = prefix[-1] / weeks
    infinity = float("inf")
    # cost[k][i]: the best cost of cutting the first i units into k groups; cut[k][i]: where the last one starts.
    cost = [[infinity] * (count + 1) for _ in range(weeks + 1)]
    cut = [[0] * (count + 1) for _ in range(weeks + 1)]
    cost[0][0] = 0.0
    for groups in range(1, weeks + 1):
        for end in range(groups, count - (weeks - groups) + 1):
            for start in range(groups - 1, end):
                candidate = cost[groups - 1][start] + (prefix[end] - prefix[start] - mean) ** 2
                if candidate < cost[groups][end]:
                    cost[groups][end], cut[groups][end] = candidate, start
    bounds, end = [], count
    for groups in range(weeks, 0, -1):
        start = cut[groups][end]
        bounds.append((start, end))
        end = start
    return [list(range(start, end)) for start, end in reversed(bounds)]
