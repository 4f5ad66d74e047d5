"""``--judge``: which judge a job uses.

* ``llm`` (the default): the ``[judge]`` model, pairwise calls priced and budgeted like any other.
* ``labels:FILE``: verdicts from a labels file (:mod:`jobs.judge.replay`), no calls.
* ``sim``: the simulator's hidden-difficulty verdicts computed in process (:mod:`jobs.judge.simulated`), no calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jobs.errors import ConfigError

JudgeKind = Literal["llm", "labels", "sim"]
JUDGE_KINDS: tuple[JudgeKind, ...] = ("llm", "labels", "sim")


@dataclass(frozen=True)
class JudgeSpec:
    """A parsed ``--judge`` value; ``path`` only for ``labels``."""

    kind: JudgeKind = "llm"
    path: Path | None = None

    def __str__(self) -> str:
        return f"labels:{self.path}" if self.kind == "labels" else self.kind

    @property
    def calls_a_model(self) -> bool:
        """Whether judging costs provider calls (what ``plan`` and the budget must count)."""
        return self.kind == "llm"


def parse_judge_spec(value: str | None, *, check_exists: bool = True) -> JudgeSpec:
    """``llm`` (also for None or ""), ``sim``, or ``labels:FILE``; ConfigError otherwise.

    With ``check_exists`` a labels file that is not there is refused now, before anything is
    spent, rather than when the sample has already been bought.
    """
    text = (value or "").strip()
    if text in ("", "llm"):
        return JudgeSpec("llm")
    if text == "sim":
        return JudgeSpec("sim")
    kind, sep, rest = text.partition(":")
    if kind == "labels" and sep:
        if not rest.strip():
            raise ConfigError("--judge labels:FILE needs a file name after 'labels:'")
        path = Path(rest.strip()).expanduser()
        if check_exists and not path.is_file():
            raise ConfigError(f"--judge labels:{rest.strip()}: no such file")
        return JudgeSpec("labels", path)
    raise ConfigError(f"--judge {text!r}: expected llm, sim or labels:FILE")


def make_judge(spec: JudgeSpec, app_config: Any, strong: str | None = None, weak: str | None = None) -> Any:
    """The judge object a spec names for a job: :class:`~jobs.judge.llm.LLMJudge`,
    :class:`~jobs.judge.replay.LabelsJudge` or :class:`~jobs.judge.simulated.SimJudge`.

    ``strong``/``weak`` are the job's model keys (default: the config's); a labels file's
    ``scores`` columns are looked up by them.
    """
    strong = strong or app_config.defaults.strong
    weak = weak or app_config.defaults.weak
    if spec.kind == "llm":
        from jobs.judge.llm import LLMJudge

        return LLMJudge.for_job(app_config, strong)
    if spec.kind == "labels":
        from jobs.judge.replay import LabelsJudge

        assert spec.path is not None
        try:
            return LabelsJudge.from_file(spec.path, strong, weak)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"--judge {spec}: {exc}") from None
    from jobs.judge.simulated import SimJudge

    return SimJudge.for_job(app_config, strong)
