"""routebatch train / calibrate / score."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from jobs.cli import app

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result, (json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from routing.training.tiny import make_tiny_encoder

    return make_tiny_encoder(tmp_path_factory.mktemp("enc"))


@pytest.fixture()
def labels(tmp_path):
    path = tmp_path / "labels.jsonl"
    with open(path, "w") as fh:
        for i in range(40):
            fh.write(json.dumps({"prompt": f"derive the formula {i} carefully", "scores": {"gpt": 1, "mix": 0}}) + "\n")
            fh.write(json.dumps({"prompt": f"greet person {i}", "scores": {"gpt": 1, "mix": 1}}) + "\n")
    return path


@pytest.mark.parametrize("router", ["mf", "sw_ranking"])
def test_train_calibrate_score(tmp_path, monkeypatch, encoder, labels, router):
    monkeypatch.setenv("ROUTEBATCH_CACHE_DIR", str(tmp_path / "cache"))
    ck = tmp_path / "ck"
    res, report = invoke("train", router, "--data", str(labels), "--out", str(ck), "--embedder", f"hf:{encoder}",
                         "--epochs", "5", "--json")
    assert res.exit_code == 0, res.output
    assert report["strong"] == "gpt" and report["weak"] == "mix" and report["battles"] == 80
    assert (ck / "router.json").exists()

    prompts = tmp_path / "prompts.jsonl"
    with open(prompts, "w") as fh:
        for i in range(20):
            fh.write(json.dumps({"prompt": f"question {i} " + "word " * i}) + "\n")
    cal = tmp_path / "cal.json"
    res, result = invoke("calibrate", "--router", f"{router}:{ck}", "--data", str(prompts), "--strong-share", "0.25",
                         "--out", str(cal), "--json")
    assert res.exit_code == 0, res.output
    assert result["n"] == 20 and 0.25 <= result["realised_share"] <= 1.0
    assert json.loads(cal.read_text())["threshold"] == result["threshold"]

    data = tmp_path / "in.jsonl"
    data.write_text("\n".join([
        json.dumps({"custom_id": "a", "prompt": "greet person 3"}),
        json.dumps({"messages": [{"role": "user", "content": "derive the formula 3 carefully"}]}),
        "",
        json.dumps({"custom_id": "c", "body": {"messages": [{"role": "user", "content": "hi"}]}}),
    ]) + "\n")
    out = tmp_path / "scores.jsonl"
    res, summary = invoke("score", str(data), "--router", f"{router}:{ck}", "--out", str(out),
                          "--calibration", str(cal), "--json")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == ["a", "line-2", "c"]
    assert all(0 <= x["score"] <= 1 and x["route"] in ("strong", "weak") for x in lines)
    assert summary["scored"] == 3 and summary["strong"] + summary["weak"] == 3


def test_score_preserves_order_across_chunks(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"prompt": "w " * (i % 7)}) + "\n" for i in range(25)))
    out = tmp_path / "o.jsonl"
    res, _ = invoke("score", str(data), "--router", "length", "--out", str(out), "--chunk", "4", "--json")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["custom_id"] for x in lines] == [f"line-{i + 1}" for i in range(25)]
    from routing.baselines import LengthRouter

    expected = LengthRouter().score(["w " * (i % 7) for i in range(25)])
    assert [x["score"] for x in lines] == pytest.approx(list(expected))


def test_errors_are_one_line(tmp_path, labels):
    res, err = invoke("train", "knn", "--data", str(labels), "--out", str(tmp_path / "x"), "--json")
    assert res.exit_code == 1 and "cannot train" in err["error"]
    res, err = invoke("train", "causal_llm", "--data", str(labels), "--out", str(tmp_path / "x"), "--json")
    assert res.exit_code == 1 and "--base" in err["error"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"nope": 1}\n')
    res, err = invoke("score", str(bad), "--router", "length", "--out", str(tmp_path / "o.jsonl"), "--json")
    assert res.exit_code == 1 and ":2" in err["error"]
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.part").exists()
    res, err = invoke("score", str(bad), "--router", "length:nonsense_option=1", "--out", str(tmp_path / "o.jsonl"),
                      "--json")
    assert res.exit_code == 1 and "nonsense_option" in err["error"]
    res, err = invoke("calibrate", "--router", "mf:/does/not/exist", "--data", str(bad), "--strong-share", "0.5",
                      "--json")
    assert res.exit_code == 1 and "error" in err
    res, err = invoke("calibrate", "--router", "length", "--data", str(labels), "--strong-share", "1.5", "--json")
    assert res.exit_code == 1


def test_train_bert_and_causal_llm_from_the_cli(tmp_path, encoder, labels):
    import torch

    from routing.training.tiny import make_tiny_llama

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread avoids spin-waits on a busy machine
    try:
        res, report = invoke("train", "bert", "--data", str(labels), "--out", str(tmp_path / "bert"), "--base",
                             str(encoder), "--epochs", "1", "--batch-size", "16", "--max-length", "32", "--json")
        assert res.exit_code == 0, res.output
        assert report["battles"] == 80 and len(report["history"]) == 1
        llama = make_tiny_llama(tmp_path / "llama")
        res, report = invoke("train", "causal_llm", "--data", str(labels), "--out", str(tmp_path / "causal"),
                             "--base", str(llama), "--epochs", "1", "--batch-size", "16", "--max-length", "96",
                             "--json")
        assert res.exit_code == 0, res.output
        data = tmp_path / "in.jsonl"
        data.write_text(json.dumps({"prompt": "greet person 1"}) + "\n" + json.dumps({"prompt": "derive it"}) + "\n")
        for name in ("bert", "causal"):
            out = tmp_path / f"{name}.jsonl"
            spec = f"{'causal_llm' if name == 'causal' else 'bert'}:{tmp_path / name}"
            res, _ = invoke("score", str(data), "--router", spec, "--out", str(out), "--json")
            assert res.exit_code == 0, res.output
            assert len(out.read_text().splitlines()) == 2
    finally:
        torch.set_num_threads(threads)
