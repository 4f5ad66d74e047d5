"""BERT classifier router on a tiny random-initialised encoder."""

from __future__ import annotations

import numpy as np
import pytest

import routing
import routing.routers  # noqa: F401
from routing.routers.bert import BertRouter
from routing.training.bert import train_bert
from routing.training.data import battles_from_records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from routing.training.tiny import make_tiny_encoder

    root = tmp_path_factory.mktemp("bert")
    base = make_tiny_encoder(root / "base")
    records = []
    for i in range(48):
        records.append({"prompt": f"solve the integral number {i} step by step", "scores": {"big": 1, "small": 0}})
        records.append({"prompt": f"hello there friend {i}", "scores": {"big": 1, "small": 1}})
    battles = battles_from_records(records)
    report = train_bert(battles, root / "ck", base=str(base), epochs=6, lr=3e-3, batch_size=16, max_length=32,
                        num_threads=1)
    return root / "ck", report


def test_bert_learns_and_scores_batches(trained):
    ck, report = trained
    assert (report["strong"], report["weak"]) == ("big", "small")
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    router = routing.get_router(f"bert:{ck},batch_size=3")
    assert isinstance(router, BertRouter)
    prompts = ["solve the integral number 99 step by step", "hello there friend 99", "hello there friend 7",
               "solve the integral number 5 step by step"]
    scores = router.score(prompts)
    assert scores.shape == (4,) and ((scores >= 0) & (scores <= 1)).all()
    assert min(scores[0], scores[3]) > max(scores[1], scores[2])
    probs = router.probabilities(prompts)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    # batched (length-bucketed) equals one prompt at a time
    single = np.array([router.score([p])[0] for p in prompts])
    np.testing.assert_allclose(scores, single, atol=1e-5)
    assert router.device == "cpu"


def test_bert_swapped_pair_reads_the_other_class(trained):
    ck, _ = trained
    a = BertRouter(str(ck)).probabilities(["hello there friend 1"])
    b = BertRouter(str(ck), strong="small", weak="big").score(["hello there friend 1"])
    assert b[0] == pytest.approx(a[0, 0])


def test_bert_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        BertRouter(str(tmp_path))
