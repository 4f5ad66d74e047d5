"""Cheap text features for the ``blend`` router: length, numbers, format and task cues.

Why these: on MMLU and GSM8K a prompt's length alone recovers ~58-60% of the quality gap
(``length`` router), because long passages, many numbers and multi-step arithmetic are
where the weak model fails and the strong one does not. The embedding says *what* a prompt
is about; these say *how much work* it is. Every feature is a pure function of the text, so
scoring needs no model beyond the embedder.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

_NUM = re.compile(r"(?<![A-Za-z])[-+]?\$?\d[\d,]*(?:\.\d+)?%?")
_BIGNUM = re.compile(r"\d[\d,]{3,}")
_DECIMAL = re.compile(r"\d\.\d")
_FRACTION = re.compile(r"\d+\s*/\s*\d+")
_PERCENT = re.compile(r"\d\s*%|percent", re.I)
_MONEY = re.compile(r"\$\s?\d")
_OPTION = re.compile(r"^\s*([A-D])[.)]\s", re.M)
_MATHSYM = re.compile(r"[=+*/^<>×÷√∫∑π]|\\\w+|sqrt|log|sin|cos")
_WORD = re.compile(r"[A-Za-z]+")
_SENT = re.compile(r"[.?!](?:\s|$)")
_NEG = re.compile(r"\b(NOT|EXCEPT|LEAST|FALSE|incorrect)\b")
_QWORDS = ("how many", "how much", "what is", "which of", "what", "why", "who", "when", "where", "how")
_TIME = re.compile(r"\b(hours?|minutes?|days?|weeks?|months?|years?)\b", re.I)
_UNITS = re.compile(r"\b(miles?|km|meters?|feet|inches|pounds?|kg|grams?|liters?|gallons?|cups?)\b", re.I)
_MULTISTEP = re.compile(
    r"\b(each|every|per|twice|half|third|quarter|times|remaining|rest|left|total|altogether|more than|less than)\b", re.I
)
_PASSAGE = re.compile(r"This question refers to the following information|following (passage|information|excerpt)", re.I)
_STATEMENT = re.compile(r"Statement 1\s*\|", re.I)
_SCENARIO = re.compile(r"Scenario 1\s*\|", re.I)
_CODE = re.compile(r"(def |return |print\(|for\s*\(|while\s*\(|\{|\};|==|!=|int |void )")

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_lines",
    "log_sentences",
    "mean_word_len",
    "log_numbers",
    "log_distinct_numbers",
    "big_numbers",
    "decimals",
    "fractions",
    "percents",
    "money",
    "has_options",
    "log_option_chars",
    "log_stem_chars",
    "math_symbols",
    "uppercase_ratio",
    "digit_ratio",
    "negation",
    "q_how_many",
    "q_how_much",
    "q_what",
    "q_which",
    "q_why",
    "time_words",
    "unit_words",
    "multistep_words",
    "passage",
    "statement_pair",
    "scenario_pair",
    "code_like",
    "question_marks",
    "max_number_log",
    "answer_suffix",
)


def _log1p(x: float) -> float:
    return math.log1p(max(x, 0.0))


# the case-insensitive word patterns, case-sensitive, for lowercased ASCII text: on ASCII
# input ``re.I`` matching equals matching the lowercased text (and \b does not move), and it
# is 1.5-2.5x faster
_TIME_LOW, _UNITS_LOW, _MULTISTEP_LOW, _PERCENT_LOW = (re.compile(p.pattern) for p in (_TIME, _UNITS, _MULTISTEP, _PERCENT))

_ASCII_ALPHA = bytes(range(65, 91)) + bytes(range(97, 123))
_ASCII_UPPER = bytes(range(65, 91))
_ASCII_DIGIT = bytes(range(48, 58))


def _char_counts(text: str) -> tuple[int, int, int]:
    """(letters, uppercase, digits) as ``str.isalpha/isupper/isdigit`` count them.

    ASCII text (nearly every prompt) is counted in C with ``bytes.translate``: for ASCII
    characters those predicates are exactly [A-Za-z], [A-Z] and [0-9]. Other text takes the
    per-character loop. Same numbers either way, 3x faster on the common case.
    """
    if text.isascii():
        b = text.encode("ascii")
        n = len(b)
        return (
            n - len(b.translate(None, _ASCII_ALPHA)),
            n - len(b.translate(None, _ASCII_UPPER)),
            n - len(b.translate(None, _ASCII_DIGIT)),
        )
    return sum(c.isalpha() for c in text), sum(c.isupper() for c in text), sum(c.isdigit() for c in text)


def text_features_reference(text: str) -> list[float]:
    """One row of :data:`FEATURE_NAMES` for one prompt: the plain specification.

    :func:`text_features` computes the same numbers faster (tests check they agree).
    """
    chars = len(text)
    words = _WORD.findall(text)
    n_words = len(text.split())
    nums = _NUM.findall(text)
    options = list(_OPTION.finditer(text))
    has_options = len(options) >= 2
    if has_options:
        stem = text[: options[0].start()]
        option_chars = chars - len(stem)
    else:
        stem, option_chars = text, 0
    low = text.lower()
    if text.isascii():
        src, time_re, units_re, multi_re, pct_re = low, _TIME_LOW, _UNITS_LOW, _MULTISTEP_LOW, _PERCENT_LOW
    else:
        src, time_re, units_re, multi_re, pct_re = text, _TIME, _UNITS, _MULTISTEP, _PERCENT
    n_alpha, n_upper, n_digit = _char_counts(text)
    letters = n_alpha or 1
    max_num = 0.0
    for n in nums:
        digits = re.sub(r"[^\d.]", "", n)
        try:
            max_num = max(max_num, abs(float(digits)))
        except ValueError:
            pass
    return [
        _log1p(chars),
        _log1p(n_words),
        _log1p(text.count("\n") + 1),
        _log1p(len(_SENT.findall(text))),
        (sum(map(len, words)) / len(words)) if words else 0.0,
        _log1p(len(nums)),
        _log1p(len(set(nums))),
        float(len(_BIGNUM.findall(text))),
        float(len(_DECIMAL.findall(text))),
        float(len(_FRACTION.findall(text))),
        float(len(pct_re.findall(src))),
        float(len(_MONEY.findall(text))),
        float(has_options),
        _log1p(option_chars),
        _log1p(len(stem)),
        _log1p(len(_MATHSYM.findall(text))),
        n_upper / letters,
        n_digit / max(chars, 1),
        float(bool(_NEG.search(text))),
        float("how many" in low),
        float("how much" in low),
        float("what" in low),
        float("which" in low),
        float("why" in low),
        _log1p(len(time_re.findall(src))),
        _log1p(len(units_re.findall(src))),
        _log1p(len(multi_re.findall(src))),
        float(bool(_PASSAGE.search(text))),
        float(bool(_STATEMENT.search(text))),
        float(bool(_SCENARIO.search(text))),
        _log1p(len(_CODE.findall(text))),
        float(text.count("?")),
        _log1p(math.log10(max_num + 1.0)),
        float(text.rstrip().endswith("Answer:")),
    ]


# Fast path. Every regular-expression scan costs about as much as the others (Python's
# engine tries each pattern at every character), so the fast path avoids scans: a scan
# whose pattern needs a literal that a C substring search does not find is skipped (its
# count is 0), the three word lists are counted in one scan, and the letter runs behind
# ``log_words``' sibling ``mean_word_len`` are counted with ``bytes.translate``. Same
# values as :func:`text_features_reference`.
_MATHSYM_FAST = re.compile(r"=|\+|\*|/|\^|<|>|×|÷|√|∫|∑|π|\\\w+|sqrt|log|sin|cos")
_WORDLISTS_LOW = re.compile(
    r"\b(?:(hours?|minutes?|days?|weeks?|months?|years?)|(miles?|km|meters?|feet|inches|pounds?|kg|grams?|liters?|gallons?|cups?)"
    r"|(each|every|per|twice|half|third|quarter|times|remaining|rest|left|total|altogether|more than|less than))\b"
)
_NEG_WORDS = ("NOT", "EXCEPT", "LEAST", "FALSE", "incorrect")
_CODE_LITERALS = ("def ", "return ", "print(", "(", "{", "};", "==", "!=", "int ", "void ")
_NON_ALPHA_TO_SPACE = bytes(c if (65 <= c <= 90 or 97 <= c <= 122) else 32 for c in range(256))


def text_features(text: str) -> list[float]:
    """One row of :data:`FEATURE_NAMES` for one prompt."""
    if not text.isascii():
        return text_features_reference(text)
    chars = len(text)
    b = text.encode("ascii")
    n = len(b)
    n_alpha = n - len(b.translate(None, _ASCII_ALPHA))
    n_upper = n - len(b.translate(None, _ASCII_UPPER))
    n_digit = n - len(b.translate(None, _ASCII_DIGIT))
    n_runs = len(b.translate(_NON_ALPHA_TO_SPACE).split())  # == len(_WORD.findall(text)) on ASCII
    n_words = len(text.split())
    nums = _NUM.findall(text) if n_digit else []
    options = list(_OPTION.finditer(text))
    has_options = len(options) >= 2
    if has_options:
        stem_len = options[0].start()
        option_chars = chars - stem_len
    else:
        stem_len, option_chars = chars, 0
    low = text.lower()
    n_time = n_units = n_multi = 0
    for m in _WORDLISTS_LOW.finditer(low):
        if m.group(1) is not None:
            n_time += 1
        elif m.group(2) is not None:
            n_units += 1
        else:
            n_multi += 1
    letters = n_alpha or 1
    max_num = 0.0
    for num in nums:
        digits = re.sub(r"[^\d.]", "", num)
        try:
            max_num = max(max_num, abs(float(digits)))
        except ValueError:
            pass
    has_code = any(lit in text for lit in _CODE_LITERALS)
    return [
        _log1p(chars),
        _log1p(n_words),
        _log1p(text.count("\n") + 1),
        _log1p(len(_SENT.findall(text))),
        (n_alpha / n_runs) if n_runs else 0.0,
        _log1p(len(nums)),
        _log1p(len(set(nums))),
        float(len(_BIGNUM.findall(text))) if n_digit else 0.0,
        float(len(_DECIMAL.findall(text))) if n_digit >= 2 and "." in text else 0.0,
        float(len(_FRACTION.findall(text))) if n_digit >= 2 and "/" in text else 0.0,
        float(len(_PERCENT_LOW.findall(low))) if "%" in text or "percent" in low else 0.0,
        float(len(_MONEY.findall(text))) if "$" in text else 0.0,
        float(has_options),
        _log1p(option_chars),
        _log1p(stem_len),
        _log1p(len(_MATHSYM_FAST.findall(text))),
        n_upper / letters,
        n_digit / max(chars, 1),
        float(any(w in text for w in _NEG_WORDS) and bool(_NEG.search(text))),
        float("how many" in low),
        float("how much" in low),
        float("what" in low),
        float("which" in low),
        float("why" in low),
        _log1p(n_time),
        _log1p(n_units),
        _log1p(n_multi),
        float("following" in low and bool(_PASSAGE.search(text))),
        float("statement 1" in low and bool(_STATEMENT.search(text))),
        float("scenario 1" in low and bool(_SCENARIO.search(text))),
        _log1p(len(_CODE.findall(text))) if has_code else 0.0,
        float(text.count("?")),
        _log1p(math.log10(max_num + 1.0)),
        float(text.rstrip().endswith("Answer:")),
    ]


def feature_matrix(texts: Sequence[str]) -> np.ndarray:
    """float64 (n, len(FEATURE_NAMES)), the rows of :func:`text_features` for ``texts``.

    Plain ASCII texts are done together (:func:`_batch_features`): per-prompt Python was
    most of the time, so each pattern scans the whole batch once and the character counts
    are numpy sums. Others go one by one. The values are the same either way.
    """
    n = len(texts)
    if not n:
        return np.zeros((0, len(FEATURE_NAMES)))
    out = np.empty((n, len(FEATURE_NAMES)), dtype=np.float64)
    batch = [i for i, t in enumerate(texts) if t.isascii() and "\x00" not in t]
    if len(batch) < n:
        for i in sorted(set(range(n)) - set(batch)):
            out[i] = text_features(texts[i])
    if batch:
        out[batch] = _batch_features([texts[i] for i in batch])
    return out


_SEP = "\n\x00\n"  # between texts: no pattern matches across \x00, and it keeps ^ and \b as at a text's ends
_LOG_COLUMNS = [FEATURE_NAMES.index(c) for c in FEATURE_NAMES if c.startswith("log_")] + [
    FEATURE_NAMES.index(c) for c in ("math_symbols", "time_words", "unit_words", "multistep_words", "code_like")
]
_TIME_WORDS = frozenset(b"hour hours minute minutes day days week weeks month months year years".split())
_UNIT_WORDS = frozenset(
    b"mile miles km meter meters feet inches pound pounds kg gram grams liter liters gallon gallons cup cups".split()
)
_MULTISTEP_WORDS = frozenset(b"each every per twice half third quarter times remaining rest left total altogether".split())
#: "more than" / "less than" as _MULTISTEP matches them (whole words, one space); the first
#: character is a literal so the engine can skip ahead
_MORE_LESS_THAN = re.compile(r"(?:m(?<!\wm)ore|l(?<!\wl)ess) than(?!\w)")
_SEP_CODE = 4
#: lowercased word -> 1 time, 2 unit, 3 multistep; the separator token -> _SEP_CODE
_WORD_CODE: dict[bytes, int] = {
    **{w: 1 for w in _TIME_WORDS},
    **{w: 2 for w in _UNIT_WORDS},
    **{w: 3 for w in _MULTISTEP_WORDS},
    b"\x01": _SEP_CODE,
}
_NON_WORD_TO_SPACE = bytes(c if (48 <= c <= 57 or 97 <= c <= 122 or c == 95) else (1 if c == 0 else 32) for c in range(256))
_WS_BYTES = np.array([9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0], dtype=np.uint8)  # str.split()'s ASCII whitespace, + \x00


def _batch_features(texts: Sequence[str]) -> np.ndarray:
    """:func:`text_features` of many ASCII texts (no NUL) at once."""
    n = len(texts)
    cols = {name: np.zeros(n) for name in FEATURE_NAMES}
    joined = _SEP.join(texts)
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    starts = np.zeros(n, dtype=np.int64)
    starts[1:] = np.cumsum(lens[:-1] + len(_SEP))
    ends = starts + lens
    # one NUL after the last text, so that an empty last text still has a segment
    b = np.frombuffer((joined + "\x00").encode("ascii"), dtype=np.uint8)

    def per_text(mask: np.ndarray) -> np.ndarray:
        """Count of True per text: a segment is its text plus the separator after it (which
        no mask passed here marks, except ``b == 10``: that caller subtracts it)."""
        return np.add.reduceat(mask.view(np.uint8), starts, dtype=np.int64).astype(np.float64)

    def owner(positions: list[int]) -> np.ndarray:
        return np.searchsorted(starts, np.asarray(positions, dtype=np.int64), side="right") - 1

    def count(pattern: re.Pattern[str], text: str = joined) -> np.ndarray:
        pos = [m.start() for m in pattern.finditer(text)]
        return np.bincount(owner(pos), minlength=n).astype(np.float64) if pos else np.zeros(n)

    low = joined.lower()
    lows = low.split(_SEP) if n > 1 else [low]

    def some(needs: Any, value: Any) -> np.ndarray:
        """``value`` for the texts that pass the cheap ``needs`` test (substring checks), 0 elsewhere:
        a rare pattern is scanned only in the few texts that can match it."""
        col = np.zeros(n)
        for i, (t, lt) in enumerate(zip(texts, lows)):
            if needs(t, lt):
                col[i] = float(value(t, lt))
        return col

    letter = ((b >= 65) & (b <= 90)) | ((b >= 97) & (b <= 122))
    upper = (b >= 65) & (b <= 90)
    digit = (b >= 48) & (b <= 57)
    nonws = ~np.isin(b, _WS_BYTES)
    prev_letter = np.concatenate([[False], letter[:-1]])
    prev_nonws = np.concatenate([[False], nonws[:-1]])
    n_alpha, n_upper, n_digit = per_text(letter), per_text(upper), per_text(digit)
    n_runs = per_text(letter & ~prev_letter)
    cols["log_chars"] = lens.astype(np.float64)
    cols["log_words"] = per_text(nonws & ~prev_nonws)
    newlines = per_text(b == 10)
    newlines[:-1] -= _SEP.count("\n")  # the separator's own line breaks
    cols["log_lines"] = newlines + 1.0
    cols["log_sentences"] = count(_SENT)
    cols["mean_word_len"] = np.where(n_runs > 0, n_alpha / np.maximum(n_runs, 1), 0.0)
    nums: list[list[str]] = [[] for _ in range(n)]
    matches = list(_NUM.finditer(joined))
    if matches:
        for i, m in zip(owner([m.start() for m in matches]).tolist(), matches):
            nums[i].append(m.group())
    max_num = np.zeros(n)
    for i, found in enumerate(nums):
        if found:
            cols["log_numbers"][i] = len(found)
            cols["log_distinct_numbers"][i] = len(set(found))
            best = 0.0
            for num in found:
                try:
                    best = max(best, abs(float(re.sub(r"[^\d.]", "", num))))
                except ValueError:
                    pass
            max_num[i] = best
    cols["max_number_log"] = np.array([_log1p(math.log10(v + 1.0)) for v in max_num.tolist()])
    cols["big_numbers"] = count(_BIGNUM)
    cols["decimals"] = count(_DECIMAL)
    cols["fractions"] = some(lambda t, lt: "/" in t, lambda t, lt: len(_FRACTION.findall(t)))
    cols["percents"] = some(lambda t, lt: "%" in t or "percent" in lt, lambda t, lt: len(_PERCENT_LOW.findall(lt)))
    cols["money"] = some(lambda t, lt: "$" in t, lambda t, lt: len(_MONEY.findall(t)))
    # options: a match must end inside its text (its final \s must not be the separator)
    opt = [(m.start(), m.end()) for m in _OPTION.finditer(joined)]
    n_opt = np.zeros(n)
    first_opt = np.full(n, -1, dtype=np.int64)
    if opt:
        who = owner([a for a, _ in opt])
        for i, (a, e) in zip(who.tolist(), opt):
            if e <= ends[i]:
                n_opt[i] += 1
                if first_opt[i] < 0:
                    first_opt[i] = a - starts[i]
    has = n_opt >= 2
    cols["has_options"] = has.astype(np.float64)
    cols["log_stem_chars"] = np.where(has, first_opt, lens).astype(np.float64)
    cols["log_option_chars"] = np.where(has, lens - first_opt, 0).astype(np.float64)
    cols["math_symbols"] = count(_MATHSYM_FAST)
    cols["uppercase_ratio"] = n_upper / np.maximum(n_alpha, 1)
    cols["digit_ratio"] = n_digit / np.maximum(lens, 1)
    cols["negation"] = some(lambda t, lt: any(w in t for w in _NEG_WORDS), lambda t, lt: _NEG.search(t) is not None)
    for name, lit in (
        ("q_how_many", "how many"),
        ("q_how_much", "how much"),
        ("q_what", "what"),
        ("q_which", "which"),
        ("q_why", "why"),
    ):
        cols[name] = np.fromiter((lit in t for t in lows), dtype=np.float64, count=n) if lit in low else np.zeros(n)
    # the word lists: a listed word matches exactly when it is a whole run of word characters
    # (``\\b...\\b``), so split the lowercased batch into such runs and look them up
    words = low.encode("ascii").translate(_NON_WORD_TO_SPACE).split()
    if words:
        code = np.fromiter(map(_WORD_CODE.get, words, itertools.repeat(0)), dtype=np.int8, count=len(words))
        text_of = np.cumsum(code == _SEP_CODE)
        for c, name in enumerate(("time_words", "unit_words", "multistep_words"), 1):
            hit = code == c
            if hit.any():
                cols[name] = np.bincount(text_of[hit], minlength=n).astype(np.float64)
    if "than" in low:
        cols["multistep_words"] += count(_MORE_LESS_THAN, low)
    cols["passage"] = some(lambda t, lt: "following" in lt, lambda t, lt: _PASSAGE.search(t) is not None)
    cols["statement_pair"] = some(lambda t, lt: "statement 1" in lt, lambda t, lt: _STATEMENT.search(t) is not None)
    cols["scenario_pair"] = some(lambda t, lt: "scenario 1" in lt, lambda t, lt: _SCENARIO.search(t) is not None)
    cols["code_like"] = count(_CODE)  # common literals ("(", "=="): one scan of the batch beats a check per text
    cols["question_marks"] = per_text(b == 63)
    cols["answer_suffix"] = np.fromiter((t.rstrip().endswith("Answer:") for t in texts), dtype=np.float64, count=n)
    out = np.column_stack([cols[name] for name in FEATURE_NAMES])
    out[:, _LOG_COLUMNS] = _exact_log1p(out[:, _LOG_COLUMNS])
    return out


def _exact_log1p(x: np.ndarray) -> np.ndarray:
    """``math.log1p(max(v, 0))`` of every value, as ``text_features`` computes it, bit for bit.

    ``np.log1p`` is not: its SIMD kernels differ from libm by an ulp on some CPUs (seen on
    this project's VM, where 1.0986122886681098 came out for log1p(2)), which would make the
    batched scores of the same prompt depend on the machine. The columns are counts, so
    there are few distinct values: libm on each of those, then a gather.
    """
    values, where = np.unique(np.maximum(x, 0.0), return_inverse=True)
    logs = np.fromiter((math.log1p(v) for v in values.tolist()), dtype=np.float64, count=values.size)
    return logs[where].reshape(x.shape)
