"""The pairwise judge prompt: its default text, rendering, and taking a rendered one apart.

A leaf module (only ``re``): the simulated provider imports it to recognise a judge request
and read the question and the two answers back out of it, so the prompt's layout is defined
once, here, for the judge that writes it and the simulator that reads it.

The layout is MT-Bench's pairwise one (``[User Question]``, then each answer between
``[The Start of Assistant X's Answer]`` and ``[The End of Assistant X's Answer]``); the
verdict is ``[[A]]``, ``[[B]]`` or ``[[C]]`` (tie). Unlike MT-Bench's ``pair-v2`` it asks for
the verdict only, without an explanation first, so that a ``max_tokens`` of 16 suffices and
the judge call costs little more than its input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PLACEHOLDERS = ("{question}", "{answer_a}", "{answer_b}")
"""What a custom ``[judge] prompt`` must contain, each exactly once."""

QUESTION_OPEN = "[User Question]"
A_OPEN, A_CLOSE = "[The Start of Assistant A's Answer]", "[The End of Assistant A's Answer]"
B_OPEN, B_CLOSE = "[The Start of Assistant B's Answer]", "[The End of Assistant B's Answer]"
DELIMITERS = (QUESTION_OPEN, A_OPEN, A_CLOSE, B_OPEN, B_CLOSE)
"""The lines by which the simulator recognises a judge request (a custom prompt that keeps
them is understood by the simulator too)."""

DEFAULT_PROMPT = (
    "[System]\n"
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows the "
    "user's instructions and answers the user's question better. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their "
    "responses. Avoid any position biases and ensure that the order in which the responses were presented "
    "does not influence your decision. Do not allow the length of the responses to influence your "
    "evaluation. Do not favor certain names of the assistants. Be as objective as possible. Output only "
    'your final verdict, strictly in this format: "[[A]]" if assistant A is better, "[[B]]" if assistant '
    'B is better, and "[[C]]" for a tie.\n'
    "\n"
    f"{QUESTION_OPEN}\n"
    "{question}\n"
    "\n"
    f"{A_OPEN}\n"
    "{answer_a}\n"
    f"{A_CLOSE}\n"
    "\n"
    f"{B_OPEN}\n"
    "{answer_b}\n"
    f"{B_CLOSE}\n"
)

_FIELD = re.compile(r"\{(question|answer_a|answer_b)\}")


def template_problem(template: str) -> str | None:
    """Why ``template`` cannot be a pairwise prompt, or None."""
    for p in PLACEHOLDERS:
        n = template.count(p)
        if n != 1:
            return f"must contain {p} exactly once (found {n})"
    return None


def render(template: str, question: str, answer_a: str, answer_b: str) -> str:
    """The template with its three fields filled in one pass.

    Not ``str.format``: a template may hold other braces, and a question or an answer that
    contains ``{answer_b}`` must stay as it is rather than being substituted in turn.
    """
    values = {"question": question, "answer_a": answer_a, "answer_b": answer_b}
    return _FIELD.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class Pairwise:
    """A rendered judge prompt taken apart (surrounding whitespace stripped)."""

    question: str
    answer_a: str
    answer_b: str


def split(prompt: str) -> Pairwise | None:
    """The question and both answers of a rendered judge prompt, or None when ``prompt`` is
    not one (it lacks a delimiter, or they are out of order).

    The answers are found from the end (the last ``B`` block, then the last ``A`` block before
    it) and the question from the first ``[User Question]``, so a question that happens to
    quote a delimiter is still read whole.
    """
    q = prompt.find(QUESTION_OPEN)
    b_close = prompt.rfind(B_CLOSE)
    if q < 0 or b_close < 0:
        return None
    b_open = prompt.rfind(B_OPEN, 0, b_close)
    a_close = prompt.rfind(A_CLOSE, 0, b_open) if b_open >= 0 else -1
    a_open = prompt.rfind(A_OPEN, 0, a_close) if a_close >= 0 else -1
    if a_open < q + len(QUESTION_OPEN):
        return None
    return Pairwise(
        question=prompt[q + len(QUESTION_OPEN) : a_open].strip(),
        answer_a=prompt[a_open + len(A_OPEN) : a_close].strip(),
        answer_b=prompt[b_open + len(B_OPEN) : b_close].strip(),
    )
