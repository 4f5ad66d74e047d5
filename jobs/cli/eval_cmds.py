"""``routebatch eval`` (router quality as RouteLLM measures it) and ``convert-routellm``.

Heavy imports happen inside the commands so that ``routebatch --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit, fail, styled

#: bootstrap draws used even when --boot asks for fewer: an APGR is never shown without its interval
MIN_BOOT = 20


def _plot(curve: Any, spec: str, out: Path, title: str) -> None:
    """Quality against % strong calls, with the strong, weak and random lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = curve.strong_share * 100
    ax.plot(x, curve.quality, marker=".", label=spec)
    ax.plot([0, 100], [curve.weak_quality, curve.strong_quality], color="grey", linestyle=":", label="random")
    ax.axhline(curve.strong_quality, color="red", linestyle="--", label="strong only")
    ax.axhline(curve.weak_quality, color="black", linestyle="--", label="weak only")
    ax.set_xlabel("Strong model calls (%)")
    ax.set_ylabel("Quality")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


@app.command("eval")
def eval_cmd(
    router: str = typer.Option(..., "--router", help="Router spec: length, blend, mf, mf:DIR, ..."),
    labels: Path = typer.Option(
        ...,
        "--labels",
        help="JSONL {prompt, strong, weak[, subject, ...]}: quality of each model's answer (0/1 or a judge score).",
    ),
    folds: Optional[int] = typer.Option(
        None, "--folds", help="Train on K-1 folds and score the held-out one, so no prompt is scored by a router trained on it."
    ),
    group_by: Optional[str] = typer.Option(
        None,
        "--group-by",
        help="Record field (e.g. subject): with --folds, no group is in both train and test; APGR is also given per group.",
    ),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write quality vs %% strong calls to this PNG."),
    boot: int = typer.Option(
        200, "--boot", help=f"Bootstrap resamples for the APGR interval (at least {MIN_BOOT}: the interval is always given)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, bootstrap and the random baseline."),
    budget_share: Optional[str] = typer.Option(
        None,
        "--budget-share",
        help="e.g. 0.2,0.3,0.5: compare --allocate budget "
        "with a fixed threshold at these budgets (fractions of the all-strong cost).",
    ),
    output_tokens: int = typer.Option(
        256,
        "--output-tokens",
        help="Assumed answer length for the cost estimates (records with strong_cost/weak_cost use those).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """APGR, CPT(50%), CPT(80%) and the random baseline, exactly as RouteLLM defines them."""
    import numpy as np

    from routing.data.labels import read_labels
    from routing.evaluation import bootstrap_apgr, check_gap, evaluate, per_group_metrics, random_baseline, routing_curve

    if not labels.exists():
        fail(f"{labels}: no such file", as_json)
    try:
        records = read_labels(labels)
    except ValueError as exc:
        fail(str(exc), as_json)
    if len(records) < 2:
        fail(f"{labels}: need at least 2 labelled prompts", as_json)
    prompts = [r.prompt for r in records]
    strong = np.array([r.strong for r in records])
    weak = np.array([r.weak for r in records])
    try:
        if folds:
            from routing.crossfit import assign_folds, out_of_fold_scores

            fold_ids = assign_folds(records, folds, group_by=group_by, seed=seed)
            scores = out_of_fold_scores(router, records, fold_ids)
        else:
            import routing
            import routing.routers
            import routing.routers.blend

            r = routing.get_router(router)
            scores = np.asarray(r.score(prompts), dtype=np.float64)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
        fail(f"router {router!r}: {exc}", as_json)

    metrics = evaluate(scores, strong, weak)
    base = random_baseline(strong, weak, seed=seed)
    result: dict[str, Any] = {
        "router": router,
        "labels": str(labels),
        "n": len(records),
        "folds": folds,
        "group_by": group_by,
        **metrics.to_dict(),
        "random": base.to_dict(),
    }
    spread = bootstrap_apgr(scores, strong, weak, draws=max(boot, MIN_BOOT), seed=seed)
    result["apgr_boot"] = spread.to_dict()
    gap = check_gap(strong, weak, spread)
    result["gap"] = gap.to_dict()
    result["warnings"] = [gap.warning] if gap.warning else []
    if group_by:
        result["per_group"] = per_group_metrics(scores, strong, weak, [str(rec.get(group_by, "")) for rec in records])
    if budget_share:
        from jobs.reports.budget_comparison import budget_comparison

        result["budget_comparison"] = budget_comparison(records, scores, strong, weak, budget_share, output_tokens)
    if plot is not None:
        _plot(routing_curve(scores, strong, weak), router, plot, f"{labels.name} ({len(records)} prompts)")
        result["plot"] = str(plot)

    def render(con: Any) -> None:
        from rich.table import Table

        how = f"out-of-fold, {folds} folds" + (f" by {group_by}" if group_by else "") if folds else "as given"
        con.print(styled((router, "bold"), f" on {labels} — {len(records)} prompts, scores {how}"))
        con.print(f"strong quality {metrics.strong_quality:.4f}, weak quality {metrics.weak_quality:.4f}")
        t = Table()
        for col in ("", "APGR", "CPT(50%)", "CPT(80%)"):
            t.add_column(col, justify="right" if col else "left")
        b = result["apgr_boot"]
        interval = f" ± {b['std']:.3f} [{b['low']:.3f}, {b['high']:.3f}]"
        t.add_row(router, f"{metrics.apgr:.4f}{interval}", f"{metrics.cpt50:.1f}%", f"{metrics.cpt80:.1f}%")
        t.add_row("random (mean)", f"{base.apgr:.4f}", f"{base.cpt50:.1f}%", f"{base.cpt80:.1f}%")
        con.print(t)
        for warning in result["warnings"]:
            con.print(styled(("warning: ", "bold yellow"), warning))
        if result.get("per_group"):
            g = Table(title=f"per {group_by}")
            for col in (group_by or "group", "n", "APGR", "CPT(50%)"):
                g.add_column(col)
            for name, m in result["per_group"].items():
                g.add_row(name, str(m["n"]), f"{m['apgr']:.3f}", f"{m['cpt50']:.1f}%")
            con.print(g)
        if result.get("budget_comparison"):
            render_comparison(con, result["budget_comparison"])
        if plot is not None:
            con.print(f"plot: {plot}")

    emit(result, as_json, render)


@app.command("convert-routellm")
def convert_routellm_cmd(
    source: Path = typer.Argument(..., help="RouteLLM evals directory (with mmlu/ and gsm8k/)."),
    out: Path = typer.Option(..., "--out", help="Directory for {mmlu,gsm8k}_{labels,battles}.jsonl."),
    as_json: bool = JsonOption,
) -> None:
    """Turn RouteLLM's MMLU/GSM8K correctness files into labels and battles JSONL (contaminated prompts dropped)."""
    from routing.data.routellm import convert_routellm

    try:
        counts = convert_routellm(source, out)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc), as_json)

    def render(con: Any) -> None:
        for name, n in counts.items():
            con.print(f"{out / name}: {n} lines")

    emit({"out": str(out), "files": counts}, as_json, render)


def render_comparison(con: Any, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="budget-optimal allocation vs fixed threshold at the same spend")
    for col in ("budget (of all-strong)", "threshold quality", "spend", "allocation quality", "spend", "difference"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(
            f"{100 * r['budget_share']:.0f}%",
            f"{r['threshold_quality']:.4f}",
            f"{100 * r['threshold_spend_share']:.1f}%",
            f"{r['allocation_quality']:.4f}",
            f"{100 * r['allocation_spend_share']:.1f}%",
            f"{100 * r['difference']:+.2f} pts",
        )
    con.print(t)


@app.command("eval-tiers")
def eval_tiers_cmd(
    labels: Path = typer.Option(..., "--labels", help="JSONL {prompt, scores: {model: 0..1}} (llmrouter's format)."),
    tiers: str = typer.Option(..., "--tiers", help="Config model keys, dearest first, e.g. big,mid,small."),
    folds: int = typer.Option(5, "--folds", help="Out-of-fold quality heads: K folds."),
    embedder: str = typer.Option("static", "--embedder", help="Embedder of the quality heads (static, minilm)."),
    output_tokens: int = typer.Option(256, "--output-tokens", help="Assumed answer length for the call costs."),
    points: int = typer.Option(20, "--points", help="Caps on the curve, from all-cheapest to all-dearest."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the cost-quality curve to this PNG."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds."),
    as_json: bool = JsonOption,
) -> None:
    """The cost-quality curve of routing among N models under a budget (issue 13), at the config's prices."""
    from jobs.config import ConfigError, load_config
    from jobs.reports.tier_curve import call_costs, plot_tier_curve, read_tier_labels, tier_curve_report
    from jobs.settings import get_settings

    names = [t.strip() for t in tiers.split(",") if t.strip()]
    if len(names) < 2:
        fail("--tiers: name at least two models", as_json)
    try:
        cfg = load_config(get_settings().config_file())
        for t in names:
            cfg.model(t)
        data = read_tier_labels(labels, cfg, names)
    except (ConfigError, ValueError, OSError) as exc:
        fail(str(exc), as_json)
    report = tier_curve_report(
        data, call_costs(cfg, names, data.prompts, output_tokens), names, folds=folds, embedder=embedder, points=points, seed=seed
    )
    if plot is not None:
        plot_tier_curve(report, plot)
        report["plot"] = str(plot)
    if as_json:
        emit(report, True)
        return
    from rich.table import Table

    from jobs.cli.output import console

    table = Table(title=f"{len(names)}-model allocation, out-of-fold ({report['n']} prompts)")
    for col in ("spend (of all-top)", "quality", *names):
        table.add_column(col)
    for p in report["curve"]:
        table.add_row(
            f"{100 * p['spend_share']:.1f}%", f"{p['quality']:.4f}", *(f"{100 * p['model_shares'][m]:.0f}%" for m in names)
        )
    for s in report["single"]:
        table.add_row(
            f"{100 * s['spend_share']:.1f}%", f"{s['quality']:.4f}", *(("all" if m == s["model"] else "") for m in names)
        )
    console().print(table)
    if plot is not None:
        console().print(styled(f"plot: {plot}"))
