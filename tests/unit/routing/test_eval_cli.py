"""``routebatch eval`` and ``routebatch convert-routellm`` on the fixture excerpt."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import jobs.cli  # noqa: F401  (the app with its commands)
import jobs.cli.eval_cmds  # noqa: F401  (eval, convert-routellm)
from jobs.cli.app import app
from routing.data import load_mmlu
from routing.data.labels import write_jsonl
from routing.evaluation import evaluate
from routing.baselines import LengthRouter
from tests.unit.routing._fake_embedder import HashEmbedder

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "routellm_sample"
runner = CliRunner()


@pytest.fixture()
def labels(tmp_path: Path) -> Path:
    result = runner.invoke(app, ["convert-routellm", str(SAMPLE), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"]["mmlu_labels.jsonl"] == 168
    return tmp_path / "mmlu_labels.jsonl"


@pytest.fixture()
def fake_embedder(monkeypatch: pytest.MonkeyPatch) -> HashEmbedder:
    emb = HashEmbedder(384)
    import routing.embeddings

    monkeypatch.setattr(routing.embeddings, "get_embedder", lambda *a, **k: emb)
    return emb


def test_eval_length_matches_the_library(labels: Path, tmp_path: Path) -> None:
    plot = tmp_path / "curve.png"
    result = runner.invoke(app, ["eval", "--router", "length", "--labels", str(labels), "--json",
                                 "--boot", "20", "--plot", str(plot), "--group-by", "subject"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    recs = load_mmlu(SAMPLE)
    expected = evaluate(LengthRouter().score([r.prompt for r in recs]), [r.strong for r in recs], [r.weak for r in recs])
    assert out["apgr"] == pytest.approx(expected.apgr)
    assert out["cpt50"] == pytest.approx(expected.cpt50) and out["cpt80"] == pytest.approx(expected.cpt80)
    assert out["random"]["apgr"] == pytest.approx(0.5, abs=0.1)
    assert out["apgr_boot"]["draws"] == 20
    assert set(out["per_group"]) <= {r.get("subject") for r in recs}
    assert plot.stat().st_size > 5000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_eval_human_output(labels: Path) -> None:
    result = runner.invoke(app, ["eval", "--router", "length", "--labels", str(labels), "--boot", "0"])
    assert result.exit_code == 0, result.output
    assert "APGR" in result.output and "CPT(50%)" in result.output and "random" in result.output


def test_eval_folds_blend_scores_out_of_fold(labels: Path, fake_embedder: HashEmbedder) -> None:
    result = runner.invoke(app, ["eval", "--router", "blend", "--labels", str(labels), "--folds", "4",
                                 "--group-by", "subject", "--json", "--boot", "10"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["folds"] == 4 and out["n"] == 168 and np.isfinite(out["apgr"])
    assert fake_embedder.texts_embedded == 168  # embedded once for all folds


def test_eval_errors_are_one_line(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["eval", "--router", "length", "--labels", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": "p", "strong": 1}])
    result = runner.invoke(app, ["eval", "--router", "length", "--labels", str(bad), "--json"])
    assert result.exit_code == 1 and "missing field 'weak'" in json.loads(result.output)["error"]
    good = tmp_path / "good.jsonl"
    write_jsonl(good, [{"prompt": f"p{i}", "strong": 1, "weak": i % 2} for i in range(10)])
    unknown = runner.invoke(app, ["eval", "--router", "nosuch", "--labels", str(good), "--json"])
    assert unknown.exit_code == 1 and "unknown router" in json.loads(unknown.output)["error"]
    nofold = runner.invoke(app, ["eval", "--router", "nosuch", "--labels", str(good), "--folds", "2", "--json"])
    assert nofold.exit_code == 1


@pytest.mark.parametrize(
    ("line", "field", "shown"),
    [
        ('{"prompt": "p", "strong": NaN, "weak": 1}', "strong", "nan"),
        ('{"prompt": "p", "strong": 1, "weak": Infinity}', "weak", "inf"),
        ('{"prompt": "p", "strong": "nan", "weak": 1}', "strong", "'nan'"),
        ('{"prompt": "p", "strong": 1, "weak": "good"}', "weak", "'good'"),
        ('{"prompt": "p", "strong": 1e999, "weak": 0}', "strong", "inf"),
    ],
)
def test_a_label_that_is_not_a_finite_number_names_its_line_and_field(
    tmp_path: Path, line: str, field: str, shown: str
) -> None:
    # one NaN label used to turn the file's APGR into NaN (and the --json line into invalid JSON)
    labels = tmp_path / "labels.jsonl"
    good = [json.dumps({"prompt": f"p{i}", "strong": 1, "weak": i % 2}) for i in range(9)]
    labels.write_text("\n".join([*good, line]) + "\n")
    result = runner.invoke(app, ["eval", "--router", "length", "--labels", str(labels), "--json"])
    assert result.exit_code == 1, result.output
    error = json.loads(result.output)["error"]
    assert f"{labels}:10: {field} must be a bool or a finite number, got {shown}" == error


def test_an_undefined_apgr_is_null_in_strict_json(tmp_path: Path) -> None:
    labels = tmp_path / "flat.jsonl"
    write_jsonl(labels, [{"prompt": f"p{i}" + "x" * i, "strong": 1, "weak": 1} for i in range(30)])
    result = runner.invoke(app, ["eval", "--router", "length", "--labels", str(labels), "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    out = json.loads(result.output, parse_constant=refuse)
    assert out["apgr"] is None and "not better" in out["gap"]["warning"]
