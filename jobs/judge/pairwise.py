"""Pairwise judging as MT-Bench does it: both orders, a strict verdict token, ties on doubt.

A judge model prefers the first answer it reads more often than it should (position bias,
measured in the MT-Bench paper). Asking twice, the strong answer first as ``A`` and then as
``B``, and accepting a winner only when both orders name the same answer, cancels that bias:
a disagreement is a tie. A tie counts as "weak is good" (:class:`routing.adapt.judge.Verdict`):
paying for the strong model buys nothing then.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from jobs.judge.template import DEFAULT_PROMPT, render
from routing.adapt.judge import Verdict

Order = Literal["strong_first", "weak_first"]
"""Which answer is ``A``: the strong one (``strong_first``) or the weak one (``weak_first``)."""

ORDERS: tuple[Order, Order] = ("strong_first", "weak_first")

Token = Literal["A", "B", "tie"]
"""What one judge call said: answer A better, answer B better, or a tie (``[[C]]``)."""

_VERDICT = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)
_BARE = re.compile(r"^\W*(?:verdict\s*[:=-]?\s*)?\[?\s*(A|B|C|TIE)\s*\]?\W*$", re.IGNORECASE)


@dataclass(frozen=True)
class PairwisePrompt:
    """One judge call's prompt and which answer it shows first."""

    order: Order
    text: str


def build_prompts(
    question: str, strong_answer: str, weak_answer: str, orders: str = "both", template: str = DEFAULT_PROMPT
) -> list[PairwisePrompt]:
    """The judge prompts for one item: strong as A (always), then strong as B (``orders="both"``)."""
    if orders not in ("both", "one"):
        raise ValueError(f"orders must be 'both' or 'one', got {orders!r}")
    out = [PairwisePrompt("strong_first", render(template, question, strong_answer, weak_answer))]
    if orders == "both":
        out.append(PairwisePrompt("weak_first", render(template, question, weak_answer, strong_answer)))
    return out


def parse_verdict(text: str | None) -> Token | None:
    """The verdict in a judge's answer, or None when it holds no clear one.

    Accepts ``[[A]]``/``[[B]]``/``[[C]]`` (or ``[[tie]]``) in any case, with spaces inside the
    brackets and any prose around them, and a bare ``A``/``B``/``C`` (``Verdict: B``) as the
    whole answer. Two different bracketed verdicts (``"[[A]] ... no, [[B]]"``) are not clear:
    None. The caller records None as the item's ``unparseable`` judgement rather than
    guessing.
    """
    if not text:
        return None
    found = {m.group(1).upper() for m in _VERDICT.finditer(text)}
    if not found:
        bare = _BARE.match(text.strip())
        if bare is None:
            return None
        found = {bare.group(1).upper()}
    if len(found) != 1:
        return None
    token = found.pop()
    return "tie" if token in ("C", "TIE") else token  # type: ignore[return-value]


def to_verdict(token: Token, order: Order) -> Verdict:
    """One call's token as a strong/weak verdict, given which answer it saw as ``A``."""
    if token == "tie":
        return Verdict.TIE
    strong_is_a = order == "strong_first"
    return Verdict.STRONG if (token == "A") == strong_is_a else Verdict.WEAK


def combine(strong_first: Token | None, weak_first: Token | None = None, *, orders: str = "both") -> Verdict | None:
    """The item's verdict from its calls' tokens (strong as A, then strong as B).

    Both orders must name the same answer, else it is a tie (MT-Bench's rule); with
    ``orders="one"`` the first call decides alone. None when a needed token is None: the
    judge failed on this item and its verdict is unknown, not a tie.
    """
    if strong_first is None:
        return None
    first = to_verdict(strong_first, "strong_first")
    if orders == "one":
        return first
    if weak_first is None:
        return None
    second = to_verdict(weak_first, "weak_first")
    return first if first is second else Verdict.TIE


def weak_good(verdict: Verdict | None) -> bool | None:
    """Whether the weak answer is as good as the strong one (ties included); None when unknown."""
    return None if verdict is None else verdict is not Verdict.STRONG
