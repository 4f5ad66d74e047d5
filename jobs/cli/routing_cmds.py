"""Router commands: ``train``, ``calibrate``, ``score`` (``eval`` lives in ``eval_cmds``).

Heavy imports (torch, transformers, the routers) happen inside the commands so that
``routebatch --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import typer

from jobs.cli.app import app
from jobs.cli.output import JsonOption, emit, fail, styled


def _router(spec: str, as_json: bool) -> Any:
    import routing
    import routing.routers

    try:
        return routing.get_router(spec)
    except (ValueError, FileNotFoundError, KeyError, TypeError) as exc:
        fail(f"router {spec!r}: {exc}", as_json)


def _read_lines(path: Path, as_json: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line; a bad line fails with its number."""
    if not path.exists():
        fail(f"{path}: no such file", as_json)
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                fail(f"{path}:{n}: not JSON ({exc.msg})", as_json)
            if not isinstance(obj, dict):
                fail(f"{path}:{n}: expected a JSON object", as_json)
            yield n, obj


def _prompt(obj: dict[str, Any], where: str, as_json: bool) -> str:
    from routing.training.data import prompt_text

    try:
        return prompt_text(obj, where)
    except ValueError as exc:
        fail(str(exc), as_json)


@app.command()
def train(
    router: str = typer.Argument(..., help="mf | sw_ranking | bert | causal_llm"),
    data: Path = typer.Option(
        ...,
        "--data",
        help="JSONL of battles {prompt, model_a, model_b, winner}, "
        "labels {prompt, scores: {model: value}} or {prompt, strong, weak}.",
    ),
    out: Path = typer.Option(..., "--out", help="Checkpoint directory to write."),
    strong: Optional[str] = typer.Option(None, "--strong", help="Strong model name (default: best win rate)."),
    weak: Optional[str] = typer.Option(None, "--weak", help="Weak model name (default: worst win rate)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs (mf 30, bert/causal_llm 1)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Training batch size."),
    seed: int = typer.Option(0, "--seed", help="Random seed (training is deterministic per seed)."),
    dim: Optional[int] = typer.Option(None, "--dim", help="mf: latent dimension (default 128)."),
    base: Optional[str] = typer.Option(
        None, "--base", help="bert: local encoder dir (default MiniLM); causal_llm: local causal LM dir (required)."
    ),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="bert/causal_llm: max tokens."),
    embedder: str = typer.Option("minilm", "--embedder", help="mf/sw_ranking: minilm | static | hf:PATH | http:MODEL@URL."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use the on-disk embedding cache."),
    tie_margin: float = typer.Option(0.0, "--tie-margin", help="Label values closer than this are a tie."),
    as_json: bool = JsonOption,
) -> None:
    """Train a router checkpoint from battles or per-model labels."""
    from routing.training.run import TRAINABLE, train_router

    if router not in TRAINABLE:
        fail(f"cannot train {router!r}; choose one of {', '.join(TRAINABLE)}", as_json)
    if not data.exists():
        fail(f"{data}: no such file", as_json)
    if router == "causal_llm" and not base:
        fail("causal_llm needs --base: a local causal LM directory (HF format)", as_json)
    # sw_ranking has nothing to fit: it only embeds and stores the battles
    options: dict[str, Any] = (
        {} if router == "sw_ranking" else {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": seed}
    )
    if router == "mf":
        options["dim"] = dim
    if router in ("bert", "causal_llm"):
        options.update(base=base, max_length=max_length)
    kwargs: dict[str, Any] = {}
    if router in ("mf", "sw_ranking"):
        kwargs.update(embedder=embedder, cache=not no_cache)
    started = time.perf_counter()
    try:
        report = train_router(router, data, out, strong=strong, weak=weak, tie_margin=tie_margin, **kwargs, **options)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc), as_json)
    report["seconds"] = round(time.perf_counter() - started, 2)

    def render(con) -> None:
        con.print(
            styled(
                (router, "bold"),
                f" checkpoint written to {report['out']} "
                f"(strong={report['strong']}, weak={report['weak']}, battles={report['battles']}, "
                f"{report['seconds']} s)",
            )
        )
        con.print(f"use it with --router {router}:{report['out']}")

    emit(report, as_json, render)


@app.command()
def calibrate(
    router: str = typer.Option(..., "--router", help="Router spec, e.g. mf or mf:CHECKPOINT_DIR."),
    data: Path = typer.Option(..., "--data", help="JSONL of representative prompts (prompt or messages)."),
    strong_share: float = typer.Option(..., "--strong-share", help="Fraction of prompts to send to the strong model."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the calibration JSON here (reusable)."),
    as_json: bool = JsonOption,
) -> None:
    """Find the score threshold that sends --strong-share of these prompts to the strong model."""
    if not 0.0 <= strong_share <= 1.0:
        fail("--strong-share must be between 0 and 1", as_json)
    prompts = [_prompt(obj, f"{data}:{n}", as_json) for n, obj in _read_lines(data, as_json)]
    if not prompts:
        fail(f"{data}: no prompts", as_json)
    from routing.training.calibration import calibrate as run_calibration
    from routing.training.calibration import save_calibration

    r = _router(router, as_json)
    result = run_calibration(r, prompts, strong_share, spec=router)
    if out is not None:
        save_calibration(out, result)
        result["saved_to"] = str(out)

    def render(con) -> None:
        con.print(
            f"threshold [bold]{result['threshold']:.6f}[/] sends {result['realised_share']:.1%} of "
            f"{result['n']} prompts to the strong model (asked {strong_share:.1%})"
        )
        if out is not None:
            con.print(f"saved to {out}")

    emit(result, as_json, render)


@app.command()
def score(
    input_file: Path = typer.Argument(..., help="JSONL with prompt or messages per line (custom_id optional)."),
    router: str = typer.Option(..., "--router", help="Router spec, e.g. mf, mf:DIR, sw_ranking:DIR, length."),
    out: Path = typer.Option(..., "--out", help="Output JSONL: {custom_id, score} per input line, in order."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Calibration JSON: also write route strong|weak per line."
    ),
    chunk: int = typer.Option(1024, "--chunk", help="Lines scored per router call."),
    as_json: bool = JsonOption,
) -> None:
    """Score every prompt of a file: one output line per input line, in input order."""
    threshold: float | None = None
    if calibration is not None:
        from routing.training.calibration import load_calibration

        try:
            threshold = float(load_calibration(calibration)["threshold"])
        except (OSError, ValueError) as exc:
            fail(str(exc), as_json)
    r = _router(router, as_json)
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    counts = {"scored": 0, "strong": 0}
    templates: dict[str, int] = {}
    try:
        _score_file(r, input_file, tmp, chunk, threshold, as_json, counts, templates)
    except BaseException:
        tmp.unlink(missing_ok=True)  # never leave a half-written file behind
        raise
    tmp.replace(out)
    count, strong = counts["scored"], counts["strong"]
    seconds = time.perf_counter() - started
    result: dict[str, Any] = {
        "router": router,
        "scored": count,
        "out": str(out),
        "seconds": round(seconds, 3),
        "prompts_per_s": round(count / seconds, 1) if seconds > 0 else None,
    }
    if threshold is not None:
        result.update(threshold=threshold, strong=strong, weak=count - strong)
    result["templates"] = [{"note": note, "chunks": n} for note, n in templates.items()]

    def render(con) -> None:
        con.print(f"scored {count} prompts with {router} in {seconds:.1f} s -> {out}")
        for t in result["templates"]:
            con.print(f"{t['note']} ({t['chunks']} chunk{'s' if t['chunks'] != 1 else ''} of up to {chunk})", markup=False)

    emit(result, as_json, render)


def _score_file(
    r: Any,
    input_file: Path,
    tmp: Path,
    chunk: int,
    threshold: float | None,
    as_json: bool,
    counts: dict[str, int],
    templates: dict[str, int],
) -> None:
    """Stream ``input_file`` through the router ``chunk`` lines at a time into ``tmp``.

    ``templates`` collects what the router stripped (``routing.templates``): description ->
    number of chunks.
    """
    from routing.templates import score_with_template

    with open(tmp, "w", encoding="utf-8") as fh:
        ids: list[str] = []
        prompts: list[str] = []

        def flush() -> None:
            if not prompts:
                return
            scores, template = score_with_template(r, prompts)
            if template.stripped:
                templates[template.describe()] = templates.get(template.describe(), 0) + 1
            lines = []
            for cid, s in zip(ids, scores.tolist() if hasattr(scores, "tolist") else scores):
                # what json.dumps({"custom_id": cid, "score": s[, "route": ...]}) writes, without
                # building a dict per line (json writes a finite float as its repr)
                value = repr(float(s)) if math.isfinite(s) else json.dumps(float(s))
                line = f'{{"custom_id": {json.dumps(cid, ensure_ascii=False)}, "score": {value}'
                if threshold is not None:
                    route = "strong" if s >= threshold else "weak"
                    counts["strong"] += route == "strong"
                    line += f', "route": "{route}"'
                lines.append(line + "}\n")
            fh.write("".join(lines))
            counts["scored"] += len(prompts)
            ids.clear()
            prompts.clear()

        for n, obj in _read_lines(input_file, as_json):
            ids.append(str(obj.get("custom_id", f"line-{n}")))
            prompts.append(_prompt(obj, f"{input_file}:{n}", as_json))
            if len(prompts) >= chunk:
                flush()
        flush()


# ``eval`` and ``convert-routellm`` live in eval_cmds; importing it here registers them even
# while jobs/cli/__init__.py does not list it yet (a second import is a no-op).
from jobs.cli import eval_cmds  # noqa: E402,F401
