"""``routebatch plan``: what a dataset would cost, before any call of the job itself.

The rows are those ``submit`` would accept (the same reader, the same per-model limits, and
duplicate ``custom_id``s rejected as ingest rejects them). Each prompt is priced three ways:

* the **estimate**: input tokens and answer lengths per model from the ledger's history of
  that model (``jobs.money.estimates``: recent succeeded answers, by prompt-length bucket),
  which a pilot (``plan --pilot N``: N sampled items really answered by both models and
  recorded as jobs) provides when there is none; ``--output-tokens`` overrides the length;
* an **interval** next to it: the same prices with every answer as short as the 10th or as
  long as the 90th percentile of its bucket (capped at ``max_tokens``);
* the **worst case** a budget hold takes (``jobs.money.admission.worst_case_micro``: the
  input-token bound, ``max_tokens``, the dearest model of the fallback chain), which is also
  what the weak floor is sized by.

Rows: all-weak, routed at 10..90% strong (the same cut ``--strong-share`` makes), all-strong
and, with a budget, the weak floor and the budget-optimal allocation, sized on the estimates
as ``--allocate budget`` sizes it (``jobs.money.estimates``; with no history they are the
worst cases, where the job itself would first answer a small pilot).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jobs.config import AppConfig
from jobs.datasets import BadRow, PromptRow, read_rows
from jobs.money.estimates import LengthModel, load_history, verdict_tokens
from jobs.money.pricing import PriceVersion, micro_to_usd
from routing import get_router

if TYPE_CHECKING:
    from jobs.runtime import Runtime

SCORE_BATCH = 256
Progress = Callable[[int, int], None]
"""(prompts scored so far, prompts to score)."""


@dataclass
class Costs:
    """Per-prompt micro-USD of one model: estimate, interval, worst case."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray
    worst: np.ndarray
    basis: str


@dataclass
class PlanInput:
    scores: np.ndarray
    strong_micro: np.ndarray
    weak_micro: np.ndarray
    invalid: int
    strong_worst_micro: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weak_worst_micro: np.ndarray = field(default_factory=lambda: np.zeros(0))
    strong_low_micro: np.ndarray = field(default_factory=lambda: np.zeros(0))
    strong_high_micro: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weak_low_micro: np.ndarray = field(default_factory=lambda: np.zeros(0))
    weak_high_micro: np.ndarray = field(default_factory=lambda: np.zeros(0))
    basis: dict[str, str] = field(default_factory=dict)


def _prices(config: AppConfig, models: list[str], dispatch: str | None = None) -> dict[str, PriceVersion]:
    """Each model's price as a job would pay it: the batch-API price where its calls would go
    in provider batches (``dispatch``, else the provider's; ``auto`` counts as batch)."""
    from jobs.money.pricing import batch_version

    out = {}
    for m in config.models_with_fallbacks(models):
        cfg, kind = config.model(m), config.provider_of(m).kind
        batched = (dispatch or config.provider_of(m).dispatch) in ("batch", "auto")
        out[m] = batch_version(m, cfg, kind) if batched else PriceVersion.from_config(m, cfg, kind)
    return out


def priced_dispatch(config: AppConfig, models: list[str], dispatch: str | None = None) -> dict[str, str]:
    """{model: "batch" | "sync"}: which price ``plan`` used for each model."""
    return {m: "batch" if (dispatch or config.provider_of(m).dispatch) in ("batch", "auto") else "sync" for m in models}


def accepted_rows(
    config: AppConfig, path: Path, strong: str, weak: str, *, fmt: str | None = None, prompt_column: str = "prompt"
) -> tuple[list[PromptRow], int]:
    """(the rows ``submit`` would ingest, how many it would reject): the same reader and
    limits, and a repeated ``custom_id`` (``line-<n>`` when a row has none) is invalid."""
    from jobs.datasets.limits import limits_for_models

    rows: list[PromptRow] = []
    seen: set[str] = set()
    invalid = 0
    for row in read_rows(path, fmt, prompt_column, limits=limits_for_models(config, [strong, weak])):
        if isinstance(row, BadRow):
            invalid += 1
            continue
        cid = row.custom_id if row.custom_id is not None else f"line-{row.line_no}"
        if cid in seen:
            invalid += 1
            continue
        seen.add(cid)
        rows.append(row)
    return rows, invalid


def model_costs(
    config: AppConfig,
    rows: list[PromptRow],
    model: str,
    prices: dict[str, PriceVersion],
    *,
    max_tokens: int | None = None,
    output_tokens: int | None = None,
    history: LengthModel | None = None,
) -> Costs:
    """Estimate, p10-p90 interval and worst case of answering each row with ``model``
    (``jobs.money.estimates.call_estimate``, the same estimate ``--allocate budget`` uses)."""
    from jobs.money.admission import worst_case_micro
    from jobs.money.estimates import call_estimate
    from jobs.pipeline.request import request_shape

    price = prices[model]
    encoding = config.model(model).encoding
    n = len(rows)
    est, low, high, worst = (np.empty(n) for _ in range(4))
    use_history = output_tokens is None and history is not None and not history.empty
    for i, row in enumerate(rows):
        shape = request_shape(
            config, model, prompt=row.prompt, messages=row.messages, row_max_tokens=row.max_tokens, job_max_tokens=max_tokens
        )
        worst[i] = worst_case_micro(shape, model, prices, config)
        if output_tokens is None and not use_history:
            est[i] = low[i] = high[i] = worst[i]
            continue
        est[i], low[i], high[i] = call_estimate(shape, price, encoding, history if use_history else None, output_tokens)
    if output_tokens is not None:
        basis = f"--output-tokens {output_tokens} per answer (at most max_tokens)"
    elif use_history and history is not None:
        basis = history.basis()
    else:
        basis = LengthModel(model).basis()
    return Costs(est, low, high, worst, basis)


def estimate(
    config: AppConfig,
    path: Path,
    router_spec: str,
    strong: str,
    weak: str,
    *,
    fmt: str | None = None,
    prompt_column: str = "prompt",
    max_tokens: int | None = None,
    output_tokens: int | None = None,
    db_url: str | None = None,
    progress: Progress | None = None,
    rows: tuple[list[PromptRow], int] | None = None,
    dispatch: str | None = None,
) -> PlanInput:
    """Score and price the rows ``submit`` would accept. With ``db_url`` the answer lengths
    come from that ledger's history; without it (or with no history) from ``max_tokens``."""
    valid, invalid = rows if rows is not None else accepted_rows(config, path, strong, weak, fmt=fmt, prompt_column=prompt_column)
    prices = _prices(config, [strong, weak], dispatch)
    costs = {}
    for model in (strong, weak):
        history = load_history(db_url, model) if db_url and output_tokens is None else None
        costs[model] = model_costs(
            config, valid, model, prices, max_tokens=max_tokens, output_tokens=output_tokens, history=history
        )
    router = get_router(router_spec)
    scores: list[np.ndarray] = []
    total = len(valid)
    if progress:
        progress(0, total)
    for start in range(0, total, SCORE_BATCH):
        batch = [r.prompt for r in valid[start : start + SCORE_BATCH]]
        scores.append(np.asarray(router.score(batch), dtype=np.float64))
        if progress:
            progress(min(start + SCORE_BATCH, total), total)
    cs, cw = costs[strong], costs[weak]
    return PlanInput(
        np.concatenate(scores) if scores else np.zeros(0),
        cs.estimate,
        cw.estimate,
        invalid,
        strong_worst_micro=cs.worst,
        weak_worst_micro=cw.worst,
        strong_low_micro=cs.low,
        strong_high_micro=cs.high,
        weak_low_micro=cw.low,
        weak_high_micro=cw.high,
        basis={"strong": cs.basis, "weak": cw.basis},
    )


def _row(inp: PlanInput, policy: str, mask: np.ndarray, **extra: Any) -> dict[str, Any]:
    def total(strong: np.ndarray, weak: np.ndarray) -> int:
        if mask.size == 0:
            return 0
        return int(round(float(np.where(mask, strong, weak).sum())))

    n = mask.size
    low = inp.strong_low_micro if inp.strong_low_micro.size else inp.strong_micro
    return {
        "policy": policy,
        "strong_share": round(float(mask.mean()), 4) if n else 0.0,
        "strong_items": int(mask.sum()),
        **extra,
        "cost_micro_usd": total(inp.strong_micro, inp.weak_micro),
        "cost_low_micro_usd": total(low, inp.weak_low_micro if inp.weak_low_micro.size else inp.weak_micro),
        "cost_high_micro_usd": total(
            inp.strong_high_micro if inp.strong_high_micro.size else inp.strong_micro,
            inp.weak_high_micro if inp.weak_high_micro.size else inp.weak_micro,
        ),
        "worst_case_micro_usd": total(_worst(inp, "strong"), _worst(inp, "weak")),
    }


def _worst(inp: PlanInput, which: str) -> np.ndarray:
    arr = inp.strong_worst_micro if which == "strong" else inp.weak_worst_micro
    if arr.size:
        return arr
    return inp.strong_micro if which == "strong" else inp.weak_micro


def plan_table(inp: PlanInput, budget_usd: float | None = None) -> dict:
    from routing.thresholds import cut_for_strong_share

    n = inp.scores.size
    rows: list[dict[str, Any]] = [_row(inp, "all weak", np.zeros(n, dtype=bool))]
    for pct in range(10, 100, 10):
        cut = cut_for_strong_share(inp.scores, pct / 100)
        rows.append(_row(inp, f"routed {pct}%", cut.strong, threshold=cut.threshold))
    rows.append(_row(inp, "all strong", np.ones(n, dtype=bool)))
    out: dict[str, Any] = {"items": n, "invalid": inp.invalid, "basis": inp.basis}
    if budget_usd is not None:
        from routing.allocation import allocate_budget

        cap = budget_usd * 1_000_000
        floor = int(_worst(inp, "weak").sum())
        out["floor"] = {
            "weak_worst_case_micro_usd": floor,
            "weak_worst_case_usd": micro_to_usd(floor),
            "cap_usd": budget_usd,
            "covered": floor <= cap,
        }
        if floor > cap:
            out["warning"] = (
                f"the cap ${budget_usd:g} cannot cover the weak answer of every item (worst case "
                f"${micro_to_usd(floor):.6f}); --on-exhausted decides: downgrade answers weak while the money "
                "lasts and skips the rest, skip keeps the routing and skips what does not fit, stop ends the job "
                "before its first call"
            )
        # sized by the estimates, as the job's own allocation is (jobs.pipeline.route.allocate_items);
        # the holds still take worst cases, and admission answers weak an upgrade that no longer fits
        alloc = allocate_budget(inp.scores, inp.strong_micro, inp.weak_micro, cap)
        rows.append(
            _row(
                inp,
                "budget optimum" if alloc.affordable else "budget optimum (cap below all-weak)",
                alloc.strong,
                expected_gain=round(float(inp.scores[alloc.strong].sum()), 3),
            )
        )
    all_strong = rows[-1 if budget_usd is None else -2]["cost_micro_usd"]
    for r in rows:
        r["cost_usd"] = micro_to_usd(r["cost_micro_usd"])
        r["cost_low_usd"] = micro_to_usd(r["cost_low_micro_usd"])
        r["cost_high_usd"] = micro_to_usd(r["cost_high_micro_usd"])
        r["worst_case_usd"] = micro_to_usd(r["worst_case_micro_usd"])
        r["savings_pct"] = round(100.0 * (1 - r["cost_micro_usd"] / all_strong), 2) if all_strong else 0.0
    out["rows"] = rows
    return out


def run_pilot(
    rt: Runtime,
    rows: list[PromptRow],
    n: int,
    strong: str,
    weak: str,
    *,
    workdir: Path,
    max_tokens: int | None = None,
    seed: int = 0,
) -> list[str]:
    """Answer ``n`` sampled rows with both models, as two ordinary jobs (so every call, its
    tokens and its cost are in the ledger and later plans count them as history); returns
    the job ids. The jobs carry ``metadata.routebatch = pilot``."""
    from jobs.lifecycle.service import JobSpec, run

    if n <= 0 or not rows:
        return []
    sample = random.Random(seed).sample(rows, min(n, len(rows)))
    path = workdir / "pilot.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for row in sample:
            rec: dict[str, Any] = {"custom_id": row.custom_id or f"line-{row.line_no}"}
            if row.messages:
                rec["messages"] = row.messages
            else:
                rec["prompt"] = row.prompt
            if row.max_tokens:
                rec["max_tokens"] = row.max_tokens
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    ids = []
    for model, share in ((strong, 1.0), (weak, 0.0)):
        spec = JobSpec.model_validate(
            {
                "input_file": str(path),
                "router": "length",
                "strong": strong,
                "weak": weak,
                "strong_share": share,
                "max_tokens": max_tokens,
                "metadata": {"routebatch": "pilot", "model": model},
            }
        )
        st = run(rt, spec)
        ids.append(st.job_id)
    return ids


JUDGE_TEMPLATE_TOKENS = 200
"""Tokens of the pairwise judge prompt around the question and the two answers (jobs.judge)."""


def judge_micro_per_item(
    config: AppConfig,
    rows: list[PromptRow],
    strong_micro: np.ndarray,
    weak_micro: np.ndarray,
    strong: str,
    weak: str,
    judge_model: str,
    dispatch: str | None = None,
    verdict_tokens: float | None = None,
) -> np.ndarray:
    """Estimated micro-USD of judging each row with a model judge: both orders, each reading
    the question, both estimated answers (their lengths recovered from the answers' estimated
    costs) and the template, and writing ``verdict_tokens`` (the judge's recent verdicts, see
    :func:`jobs.money.estimates.verdict_tokens`) or at most ``[judge] max_tokens``."""
    from jobs.money.tokens import input_token_bound

    prices = _prices(config, [strong, weak, judge_model], dispatch)
    ps, pw, pj = prices[strong], prices[weak], prices[judge_model]
    tokens_in = np.array([input_token_bound(r.messages or [{"role": "user", "content": r.prompt}]) for r in rows], dtype=float)
    out_s = np.maximum(strong_micro - tokens_in * ps.input_micro_per_mtok / 1e6, 0) / max(ps.output_micro_per_mtok / 1e6, 1e-12)
    out_w = np.maximum(weak_micro - tokens_in * pw.input_micro_per_mtok / 1e6, 0) / max(pw.output_micro_per_mtok / 1e6, 1e-12)
    reads = tokens_in + out_s + out_w + JUDGE_TEMPLATE_TOKENS
    writes = config.judge.max_tokens if verdict_tokens is None else min(verdict_tokens, config.judge.max_tokens)
    return np.asarray(2 * (reads * pj.input_micro_per_mtok + writes * pj.output_micro_per_mtok) / 1e6)


def adapt_overhead(
    config: AppConfig,
    rows: list[PromptRow],
    inp: PlanInput,
    strong: str,
    weak: str,
    *,
    fraction: float,
    minimum: int = 100,
    judge: str = "llm",
    dispatch: str | None = None,
    db_url: str | None = None,
) -> dict[str, Any]:
    """What ``--adapt F`` adds to a job: the sample's weak twins and judge calls (the sample's
    own strong answers are the items' answers). Expected over the stratified sample: the
    sample's share of the items' estimated costs. A model judge reads the question and both
    estimated answers plus the prompt template, in both orders, and writes a short verdict
    (as long as its recent ones in the ledger at ``db_url``, else ``[judge] max_tokens``);
    ``labels:FILE`` and ``sim`` judges make no calls."""
    from routing.adapt.sample import SMALL_JOB_MIN, job_sample

    n = len(rows)
    drawn = job_sample(n, fraction, minimum)
    if drawn is None:
        return {"sample": 0, "note": f"{n} items are too few to adapt (at least {2 * SMALL_JOB_MIN}): routed as usual"}
    size = drawn.size
    share = size / n
    twin = float(inp.weak_micro.sum()) * share
    judge_micro = 0.0
    judge_model = None
    if judge in ("llm", None):
        judge_model = config.judge.judge_model(strong)
        verdicts = verdict_tokens(db_url, judge_model) if db_url else None
        per_item = judge_micro_per_item(
            config, rows, inp.strong_micro, inp.weak_micro, strong, weak, judge_model, dispatch, verdicts
        )
        judge_micro = float(per_item.sum()) * share
    twin_micro, judge_total = int(round(twin)), int(round(judge_micro))
    return {
        "sample": size,
        "judge": judge_model or judge,
        "twin_micro_usd": twin_micro,
        "judge_micro_usd": judge_total,
        "extra_micro_usd": twin_micro + judge_total,
        "extra_usd": micro_to_usd(twin_micro + judge_total),
        **({"note": f"under twice the minimum of {minimum} items: the sample is half the job"} if drawn.small_job else {}),
    }


def sample_extra_cost(
    config: AppConfig,
    rows: list[PromptRow],
    strong: str,
    weak: str,
    sample: np.ndarray,
    *,
    judge: str = "llm",
    strong_share: float = 0.5,
    max_tokens: int | None = None,
    dispatch: str | None = None,
    db_url: str | None = None,
    rest_limit: int = 5000,
    seed: int = 0,
) -> dict[str, int | float | bool | str]:
    """Before a drawn sample is sent: its weak twins' and judge calls' estimated cost, and that
    as a share of the adapting job's estimated cost (the sample answered by the strong model,
    the rest routed at ``strong_share``), the same share ``status`` reports afterwards as
    ``adapt_cost_share``. Answer lengths come from the ledger's history where it has some;
    a model with none is priced by the other model's (``basis`` "proxy": closer than
    ``max_tokens``, which prices every answer at its bound), and the judge's verdicts by its
    recent ones. The rest is priced on a uniform subset of at most ``rest_limit`` rows, scaled up: a long
    job's adapt step need not price every item to know the order of magnitude."""
    sample = np.asarray(sample, dtype=int)
    rest = np.setdiff1d(np.arange(len(rows)), sample)
    priced_rest = rest
    if rest.size > rest_limit:
        priced_rest = np.sort(np.random.default_rng(seed).choice(rest, rest_limit, replace=False))
    picked = [rows[i] for i in sample]
    others = [rows[i] for i in priced_rest]
    prices = _prices(config, [strong, weak], dispatch)
    on_sample, on_rest = {}, {}
    histories = {m: load_history(db_url, m) if db_url else None for m in (strong, weak)}
    known = {m: h for m, h in histories.items() if h is not None and not h.empty}
    basis = "history" if len(known) == 2 else "proxy" if known else "max_tokens"
    for m, other in ((strong, weak), (weak, strong)):
        history = known.get(m, known.get(other))
        on_sample[m] = model_costs(config, picked, m, prices, max_tokens=max_tokens, history=history).estimate
        on_rest[m] = model_costs(config, others, m, prices, max_tokens=max_tokens, history=history).estimate
    twin = float(on_sample[weak].sum())
    judged = 0.0
    if judge in ("llm", None) and picked:
        model = config.judge.judge_model(strong)
        verdicts = verdict_tokens(db_url, model) if db_url else None
        judged = float(
            judge_micro_per_item(
                config, picked, on_sample[strong], on_sample[weak], strong, weak, model, dispatch, verdicts
            ).sum()
        )
    scale = rest.size / max(priced_rest.size, 1)
    routed_rest = strong_share * float(on_rest[strong].sum()) + (1 - strong_share) * float(on_rest[weak].sum())
    job = float(on_sample[strong].sum()) + scale * routed_rest
    twin_micro, judge_micro = int(round(twin)), int(round(judged))
    extra = twin_micro + judge_micro
    return {
        "twin_micro_usd": twin_micro,
        "judge_micro_usd": judge_micro,
        "extra_micro_usd": extra,
        "job_micro_usd": int(round(job)),
        "share": extra / (job + extra) if job + extra > 0 else 0.0,
        "from_history": basis == "history",
        "basis": basis,
    }


def tiers_plan(
    config: AppConfig,
    rows: list[PromptRow],
    inp: PlanInput,
    models: list[str],
    *,
    budget_usd: float | None = None,
    max_tokens: int | None = None,
    output_tokens: int | None = None,
    db_url: str | None = None,
    dispatch: str | None = None,
) -> dict[str, Any]:
    """``plan --models a,b,c``: each model alone, and (with ``--budget-usd``) the allocation
    across them the job's ``--allocate budget`` would make (``routing.tiers`` on the same
    estimates and the strong-vs-weak score extended by tier, as
    ``jobs.pipeline.route.tier_quality``)."""
    from jobs.pipeline.route import tier_quality
    from routing.tiers import allocate_tiers

    prices = _prices(config, models, dispatch)
    costs = {}
    for m in models:
        history = load_history(db_url, m) if db_url and output_tokens is None else None
        costs[m] = model_costs(config, rows, m, prices, max_tokens=max_tokens, output_tokens=output_tokens, history=history)
    out_rows = [
        {
            "policy": f"all {m}",
            "cost_micro_usd": int(round(float(costs[m].estimate.sum()))),
            "cost_usd": micro_to_usd(int(round(float(costs[m].estimate.sum())))),
            "worst_case_usd": micro_to_usd(int(round(float(costs[m].worst.sum())))),
        }
        for m in models
    ]
    result: dict[str, Any] = {"models": models, "rows": out_rows, "basis": {m: costs[m].basis for m in models}}
    if budget_usd is not None and inp.scores.size:
        est = [costs[m].estimate for m in models]
        alloc = allocate_tiers(tier_quality(inp.scores, est), np.column_stack(est), budget_usd * 1_000_000)
        by_model = {m: int((alloc.choice == j).sum()) for j, m in enumerate(models)}
        result["allocation"] = {
            "by_model": by_model,
            "cost_usd": micro_to_usd(int(round(alloc.cost))),
            "cap_usd": budget_usd,
            "affordable": alloc.affordable,
            "expected_quality": round(float(alloc.quality / inp.scores.size), 4),
            "lp_bound": round(float(alloc.lp_bound / inp.scores.size), 4),
        }
    return result
