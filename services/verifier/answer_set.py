"""Answers made of several items: lists, sets and tuples, compared item by item.

``1, 4, 9``, ``\\{1, 4, 9\\}`` and three ``\\boxed{}`` answers are the same set; ``(2, 5)`` is a
tuple whose order matters. Items are compared with the verifier's own equivalence, passed in
as ``equal``, so every rule (numbers, units, Math-Verify) applies to each item.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

from mindgap.verifier.normalize import is_thousands, strip_decorations

MAX_ITEMS = 16
"""Larger lists are not split (their items would cost ``n**2`` comparisons)."""
_OPEN, _CLOSE = "([{", ")]}"

Equal = Callable[[str, str], bool]


def _top_level_commas(text: str) -> list[int]:
    """Indices of the commas of ``text`` outside every bracket (``\\{`` counts as one)."""
    depth, found = 0, []
    for i, ch in enumerate(text):
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            found.append(i)
    return found


def _encloses(text: str) -> bool:
    """Whether the bracket opening ``text`` is the one closing it (``(1,2)`` but not
    ``(1,2)\\cup(3,4)``)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += (ch in _OPEN) - (ch in _CLOSE)
        if depth == 0:
            return i == len(text) - 1
    return False


def _unwrap_set(text: str) -> str:
    """The inside of a set written ``\\{ ... \\}`` (the whole text), else the text."""
    if text.startswith("\\{") and text.endswith("\\}") and _encloses(text[1:]):
        return text[2:-2].strip()
    return text


def split_items(answer: str) -> list[str]:
    """The items of a list or set answer (one item for anything else, ``1,000`` included)."""
    text = _unwrap_set(strip_decorations(answer))
    if is_thousands(text):
        return [text]
    cuts = _top_level_commas(text)
    if not cuts or len(cuts) >= MAX_ITEMS:
        return [text]
    bounds = [-1, *cuts, len(text)]
    items = [text[a + 1 : b].strip() for a, b in itertools.pairwise(bounds)]
    return [item for item in items if item] or [text]


def tuple_items(answer: str) -> list[str] | None:
    """The components of a tuple answer ``(a, b, ...)``, else None."""
    text = strip_decorations(answer)
    if not (text.startswith("(") and text.endswith(")")):
        return None
    inner = text[1:-1]
    if not _encloses(text) or not _top_level_commas(inner):
        return None
    return split_items(inner)


def distinct(items: Sequence[str], equal: Equal) -> list[str]:
    """``items`` without repeats (a set stated twice is the same set)."""
    kept: list[str] = []
    for item in items:
        if not any(equal(item, seen) for seen in kept):
            kept.append(item)
    return kept


def same_items(ours: Sequence[str], theirs: Sequence[str], equal: Equal,
               ordered: bool) -> bool:
    """Whether the two lists hold equal items: position by position when ``ordered``, else
    one to one in any order (a perfect matching, found by augmenting paths)."""
    if len(ours) != len(theirs):
        return False
    if ordered:
        return all(equal(a, b) for a, b in zip(ours, theirs, strict=True))
    edges = [[j for j, b in enumerate(theirs) if equal(a, b)] for a in ours]
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(place(i, set()) for i in range(len(ours)))
