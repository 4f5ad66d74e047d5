"""Shared templates in a batch of prompts: find them, score the part that varies.

Why. Batch jobs often wrap every item in the same instruction or few-shot block (dataset
labelling does this by design). A router reads the whole prompt, so a 1,000-character
shared prefix makes every prompt look alike: the embedding is dominated by the template
(MiniLM reads only the first 256 tokens, so it sees nothing else) and the text features
describe the template's length, numbers and options instead of the item's. A batch runner
has the whole batch in hand, so it can see what is shared and route on what is not.

What is found, per scored batch (:func:`find_template`):

* the longest shared **prefix** and **suffix**, over the dominant group of prompts (those
  that begin, or end, with the most common 32 characters, if they are at least 80% of the
  batch: one odd prompt must not hide the template of the others). The cut is snapped to a
  paragraph break inside the shared text if there is one, else to a line break, else to a
  space: a template is nearly always separated from the item by a blank line, and the text
  right of that break is often shared by accident (MMLU items all end in ``"\\nAnswer:"``,
  which is part of the item format the routers were trained on, not of the template);
* **repeated blocks**: paragraphs (split on blank lines) of at least 64 characters found in
  80% of a sample of the batch, e.g. few-shot examples placed after a per-item header.

Guards against over-stripping: nothing is stripped from a batch of fewer than
:data:`MIN_BATCH` prompts (so a prompt scored alone, or in a small batch, scores exactly as
before), a prefix or suffix shorter than :data:`MIN_TEMPLATE_CHARS` is kept (short shared
bits are the item format, not a template), and if what would remain of the median prompt is
shorter than :data:`MIN_VARYING_CHARS` nothing is stripped (a batch of near-identical
prompts is not reduced to nothing).

The template's own features are kept once, in :class:`TemplateInfo` (how many characters,
which blocks): it is the same for every prompt of the batch, so it cannot change their
order, and the routers were trained on untemplated prompts, so scoring the varying part is
what is consistent with training. A scored batch is thus no longer independent of its
neighbours *when* a template is found; batches without one score exactly as before.

Long prompts without a template: :func:`windows` gives a head and a tail window so an
embedder with a fixed window embeds both ends instead of truncating the tail away.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

#: fewer prompts than this in a batch: never strip (too little evidence of a template)
MIN_BATCH = 16
#: a shared prefix/suffix shorter than this is the item format, not a template
MIN_TEMPLATE_CHARS = 32
#: strip only if the median prompt keeps at least this many characters
MIN_VARYING_CHARS = 16
#: share of the batch that must carry a prefix/suffix/block for it to count
MIN_SHARE = 0.8
#: repeated blocks: minimum length, and how many prompts are sampled to find them
MIN_BLOCK_CHARS = 64
BLOCK_SAMPLE = 64
_HEAD = 32


@dataclass(frozen=True)
class TemplateInfo:
    """What :func:`find_template` found in one batch (all zero/empty: nothing stripped)."""

    prefix_chars: int = 0
    suffix_chars: int = 0
    blocks: tuple[str, ...] = ()
    #: prompts of the batch that carried the template (and were stripped)
    stripped_prompts: int = 0
    batch: int = 0
    prefix: str = field(default="", repr=False)
    suffix: str = field(default="", repr=False)

    @property
    def stripped(self) -> bool:
        return self.stripped_prompts > 0 and bool(self.prefix_chars or self.suffix_chars or self.blocks)

    @property
    def paragraph_prefix(self) -> str:
        """The part of the prefix that ends at a blank line (whole paragraphs), else ""."""
        i = self.prefix.rfind("\n\n")
        return self.prefix[: i + 2] if i >= 0 else ""

    @property
    def paragraph_suffix(self) -> str:
        """The part of the suffix that starts at a blank line (whole paragraphs), else ""."""
        i = self.suffix.find("\n\n")
        return self.suffix[i:] if i >= 0 else ""

    @property
    def block_chars(self) -> int:
        return sum(len(b) for b in self.blocks)

    def describe(self) -> str:
        """One line for a job's ``status`` notes, e.g. "template: 1,091 chars shared prefix stripped"."""
        if not self.stripped:
            return "template: none found"
        parts = []
        if self.prefix_chars:
            parts.append(f"{self.prefix_chars:,} chars shared prefix")
        if self.suffix_chars:
            parts.append(f"{self.suffix_chars:,} chars shared suffix")
        if self.blocks:
            parts.append(f"{len(self.blocks)} repeated block{'s' if len(self.blocks) != 1 else ''} ({self.block_chars:,} chars)")
        share = "" if self.stripped_prompts == self.batch else f" from {self.stripped_prompts:,} of {self.batch:,} prompts"
        return "template: " + " + ".join(parts) + " stripped" + share

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the template text itself is left out: it may be the user's data)."""
        d = asdict(self)
        d.pop("prefix")
        d.pop("suffix")
        d["blocks"] = [len(b) for b in self.blocks]
        d["stripped"] = self.stripped
        return d


NO_TEMPLATE = TemplateInfo()


def _snap_prefix(shared: str) -> str:
    """Cut a shared prefix back to its last paragraph break, else line break, else space."""
    for sep in ("\n\n", "\n", " "):
        i = shared.rfind(sep)
        if i >= 0:
            return shared[: i + len(sep)]
    return ""


def _snap_suffix(shared: str) -> str:
    """Cut a shared suffix forward to its first paragraph break, else line break, else space."""
    for sep in ("\n\n", "\n", " "):
        i = shared.find(sep)
        if i >= 0:
            return shared[i:]
    return ""


def _common_prefix(texts: Sequence[str]) -> str:
    """Longest common prefix: that of the smallest and largest string (C-speed min/max)."""
    if not texts:
        return ""
    lo, hi = min(texts), max(texts)
    n = min(len(lo), len(hi))
    i = 0
    # compare in growing steps; str slicing and == run in C
    step = 256
    while i < n:
        j = min(n, i + step)
        if lo[i:j] == hi[i:j]:
            i = j
            continue
        while i < j and lo[i] == hi[i]:
            i += 1
        break
    return lo[:i]


def _dominant(keys: Sequence[str], n: int) -> tuple[str, int] | None:
    key, count = Counter(keys).most_common(1)[0]
    if len(key) < _HEAD or count < MIN_SHARE * n:
        return None
    return key, count


def _shared_prefix(prompts: Sequence[str]) -> str:
    n = len(prompts)
    top = _dominant([p[:_HEAD] for p in prompts], n)
    if top is None:
        return ""
    head = top[0]
    group = [p for p in prompts if p.startswith(head)] if top[1] < n else prompts
    return _snap_prefix(_common_prefix(group))


def _shared_suffix(prompts: Sequence[str]) -> str:
    n = len(prompts)
    top = _dominant([p[-_HEAD:] for p in prompts], n)
    if top is None:
        return ""
    tail = top[0]
    group = [p for p in prompts if p.endswith(tail)] if top[1] < n else prompts
    return _snap_suffix(_common_prefix([p[::-1] for p in group])[::-1])


def _repeated_blocks(prompts: Sequence[str]) -> tuple[str, ...]:
    """Paragraphs of >= MIN_BLOCK_CHARS found in >= MIN_SHARE of an evenly spaced sample."""
    step = max(1, len(prompts) // BLOCK_SAMPLE)
    sample = [p for p in prompts[::step] if "\n\n" in p][:BLOCK_SAMPLE]
    if len(sample) < MIN_SHARE * min(len(prompts), BLOCK_SAMPLE):
        return ()
    counts: Counter[str] = Counter()
    for p in sample:
        counts.update({b for b in p.split("\n\n") if len(b) >= MIN_BLOCK_CHARS})
    need = MIN_SHARE * len(sample)
    return tuple(b for b, c in counts.most_common() if c >= need)


def _strip_one(p: str, prefix: str, suffix: str, blocks: Sequence[str]) -> str:
    if prefix and p.startswith(prefix):
        p = p[len(prefix) :]
    if suffix and p.endswith(suffix) and len(p) > len(suffix):
        p = p[: len(p) - len(suffix)]
    for b in blocks:
        if b in p:
            p = p.replace(b + "\n\n", "").replace("\n\n" + b, "").replace(b, "")
    return p


def find_template(prompts: Sequence[str]) -> TemplateInfo:
    """The template shared by this batch, or :data:`NO_TEMPLATE` (see the module docstring)."""
    n = len(prompts)
    if n < MIN_BATCH:
        return NO_TEMPLATE
    prefix = _shared_prefix(prompts)
    if len(prefix) < MIN_TEMPLATE_CHARS:
        prefix = ""
    rest = [p[len(prefix) :] if prefix and p.startswith(prefix) else p for p in prompts] if prefix else prompts
    suffix = _shared_suffix(rest)
    if len(suffix) < MIN_TEMPLATE_CHARS:
        suffix = ""
    blocks = tuple(b for b in _repeated_blocks(rest) if b not in suffix)
    if not (prefix or suffix or blocks):
        return TemplateInfo(batch=n)
    stripped = [_strip_one(p, prefix, suffix, blocks) for p in prompts]
    if float(np.median([len(s.strip()) for s in stripped])) < MIN_VARYING_CHARS:
        return TemplateInfo(batch=n)  # near-identical prompts: keep them whole
    changed = sum(s != p for s, p in zip(stripped, prompts))
    return TemplateInfo(len(prefix), len(suffix), blocks, changed, n, prefix, suffix)


def strip_template(prompts: Sequence[str], info: TemplateInfo, *, paragraphs_only: bool = False) -> list[str]:
    """The varying part of each prompt; a prompt that would be left empty is kept whole.

    ``paragraphs_only`` strips only whole paragraphs of the template (see
    :func:`template_views`): the text-feature view.
    """
    if not info.stripped:
        return list(prompts)
    prefix, suffix = (info.paragraph_prefix, info.paragraph_suffix) if paragraphs_only else (info.prefix, info.suffix)
    if not (prefix or suffix or info.blocks):
        return list(prompts)
    out = []
    for p in prompts:
        s = _strip_one(p, prefix, suffix, info.blocks)
        out.append(s if s.strip() else p)
    return out


def template_views(prompts: Sequence[str]) -> tuple[list[str], list[str], TemplateInfo]:
    """(embedding view, text-feature view, template) of one batch.

    The embedding view drops the whole template: the encoder should read what varies. The
    feature view drops only the template's whole paragraphs (a few-shot block, an
    instruction paragraph, repeated blocks) and keeps a shared part that runs into the item
    on the same paragraph (MMLU's moral-scenario preamble and its fixed options): that
    part is the item's own format, the text features the routers were trained on read it
    (``has_options``, ``scenario_pair``, ``answer_suffix``), and it is the same for every
    prompt of the batch, so it cannot reorder them.
    """
    info = find_template(prompts)
    if not info.stripped:
        plain = list(prompts)
        return plain, plain, info
    return strip_template(prompts, info), strip_template(prompts, info, paragraphs_only=True), info


def detect_and_strip(prompts: Sequence[str]) -> tuple[list[str], TemplateInfo]:
    """:func:`find_template` then :func:`strip_template` (the embedding view)."""
    info = find_template(prompts)
    return strip_template(prompts, info), info


def windows(text: str, max_chars: int) -> tuple[str, str] | None:
    """Head and tail windows of a text longer than ``max_chars`` (else None), cut at spaces.

    Each window is ``max_chars // 2`` characters, so the two together fit the encoder's
    window as the whole prompt would have (the embedding of the pair is their mean).
    """
    if max_chars <= 0 or len(text) <= max_chars:
        return None
    half = max_chars // 2
    head = text[:half]
    cut = head.rfind(" ")
    if cut > half // 2:
        head = head[:cut]
    tail = text[-half:]
    cut = tail.find(" ")
    if 0 <= cut < half // 2:
        tail = tail[cut + 1 :]
    return head, tail


def score_with_template(router: Any, prompts: Sequence[str]) -> tuple[np.ndarray, TemplateInfo]:
    """Scores and the template the router stripped, for any router.

    Routers that strip templates (``blend``) implement ``score_with_template``; the others
    score the prompts whole and report :data:`NO_TEMPLATE`.
    """
    method = getattr(router, "score_with_template", None)
    if method is not None:
        scores, info = method(prompts)
        return np.asarray(scores, dtype=np.float64), info
    return np.asarray(router.score(prompts), dtype=np.float64), NO_TEMPLATE


__all__ = [
    "MIN_BATCH",
    "MIN_TEMPLATE_CHARS",
    "NO_TEMPLATE",
    "TemplateInfo",
    "detect_and_strip",
    "find_template",
    "score_with_template",
    "strip_template",
    "template_views",
    "windows",
]
