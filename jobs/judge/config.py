"""The ``[judge]`` table of the TOML config.

Kept out of :mod:`jobs.config` so the judge owns its settings; ``AppConfig`` holds one as
``judge: JudgeConfig = JudgeConfig()``. Only pydantic is imported: ``jobs.config`` imports
this module, never the other way round.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from jobs.judge.template import DEFAULT_PROMPT, template_problem


class JudgeConfig(BaseModel):
    """How the pairwise judge is asked.

    Every key has a default, so a config without ``[judge]`` judges with the job's strong
    model, MT-Bench's pairwise prompt, both orders and temperature 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = Field(default=None, description="Judge model (a key of [models]); default: the job's strong model.")
    prompt: str | None = Field(
        default=None,
        description="Pairwise template with {question}, {answer_a} and {answer_b}; default: MT-Bench's pairwise prompt.",
    )
    max_tokens: int = Field(default=16, ge=1, description="Output limit of one judge call (the verdict only).")
    orders: Literal["both", "one"] = Field(
        default="both",
        description="'both' asks twice, strong answer as A then as B, and calls a disagreement a tie; 'one' asks once.",
    )
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            problem = template_problem(value)
            if problem is not None:
                raise ValueError(f"the pairwise template {problem}")
        return value

    @property
    def template(self) -> str:
        """The pairwise template in use."""
        return self.prompt if self.prompt is not None else DEFAULT_PROMPT

    def judge_model(self, strong: str) -> str:
        """The model key the judge calls: ``model``, else the job's strong model."""
        return self.model or strong
