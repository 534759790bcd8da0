"""The demo's shipped Vim teacher: its file matches its card, the card says how it was made, and evaluating it
on the Fashion-MNIST test split gives the accuracy the card records."""
import json

import pytest
import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import MODEL, TEACHER_CARD, TEACHER_FILE, TEACHER_RECIPE, _test_loader, sha256_of, shipped_teacher
from dyvm.evaluate import evaluate


def test_card_matches_file_and_says_how_it_was_made():
    card = json.load(open(TEACHER_CARD))
    assert sha256_of(TEACHER_FILE) == card["sha256"]
    assert card["command"].split()[:2] == ["OMP_NUM_THREADS=1", "dyvm"] and len(card["commit"]) == 40
    for key, value in TEACHER_RECIPE.items():  # --train-teacher reruns exactly the recorded recipe
        assert card["train_config"][key] == value, key
    assert [r["epoch"] for r in card["training_log"]] == list(range(TEACHER_RECIPE["epochs"]))
    assert card["val_top1"] == max(r["val_top1"] for r in card["training_log"])
    assert shipped_teacher() == (TEACHER_FILE, card)


def test_evaluation_gives_the_recorded_accuracy():
    card = json.load(open(TEACHER_CARD))
    model, ckpt = model_from_checkpoint(TEACHER_FILE)
    assert {k: model.config[k] for k in MODEL if k != "in_chans"} == {k: v for k, v in MODEL.items() if k != "in_chans"}
    stats = evaluate(model, _test_loader(model, None, None), torch.device("cpu"), progress=False)
    assert stats["images"] == 10000
    assert stats["top1"] == pytest.approx(card["test_top1"], abs=0.03)  # at most 3 of 10,000 images may flip
    assert stats["top1"] >= 89.0
    # per class: the test split holds 1,000 images of each of the 10 classes, so the classes' mean is the top-1
    per_class = stats["per_class_top1"]
    assert sorted(per_class) == list(range(10)) and all(0 < v < 100 for v in per_class.values())
    assert sum(per_class.values()) / 10 == pytest.approx(stats["top1"], abs=1e-9)


def test_a_tampered_teacher_is_refused(tmp_path, monkeypatch):
    import dyvm.demo as demo

    bad = tmp_path / "t.pth"
    bad.write_bytes(open(TEACHER_FILE, "rb").read()[:-10] + b"0123456789")
    monkeypatch.setattr(demo, "TEACHER_FILE", str(bad))
    with pytest.raises(ValueError, match="does not match its card"):
        demo.shipped_teacher()
