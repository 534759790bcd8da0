"""The shipped Vim teachers: each file matches its card, the card says how it was made, and evaluating it on the
Fashion-MNIST test split (on the canvas it learnt on) gives the accuracy the card records. The demo's teacher is
the 40-px canvas one; the centred 28-px one (the demo's until session 44) is what the defaults test fine-tunes."""
import json

import pytest
import torch

from dyvm.checkpoint import model_from_checkpoint
from dyvm.demo import (CANVAS, CENTRED_TEACHER_CARD, CENTRED_TEACHER_FILE, MODEL, TEACHER_CARD, TEACHER_FILE,
                       TEACHER_RECIPE, _test_loader, sha256_of, shipped_teacher)
from dyvm.evaluate import evaluate

# (file, card, canvas, architecture): the demo's teacher and the centred one
TEACHERS = {"demo": (TEACHER_FILE, TEACHER_CARD, CANVAS, MODEL),
            "centred": (CENTRED_TEACHER_FILE, CENTRED_TEACHER_CARD, 0, dict(MODEL, img_size=28))}


def test_card_matches_file_and_says_how_it_was_made():
    card = json.load(open(TEACHER_CARD))
    assert sha256_of(TEACHER_FILE) == card["sha256"]
    assert card["command"].split()[:2] == ["dyvm", "train"] and len(card["commit"]) == 40
    assert f"--canvas {CANVAS}" in card["command"] and f"--epochs {TEACHER_RECIPE['epochs']}" in card["command"]
    for key, value in TEACHER_RECIPE.items():  # --train-teacher reruns exactly the recorded recipe
        assert card["train_config"][key] == value, key
    assert [r["epoch"] for r in card["training_log"]] == list(range(TEACHER_RECIPE["epochs"]))
    assert card["val_top1"] == max(r["val_top1"] for r in card["training_log"])
    assert shipped_teacher() == (TEACHER_FILE, card)
    # the weights carry the run's options: fine-tuning from them and `dyvm eval` find the canvas there
    assert torch.load(TEACHER_FILE, map_location="cpu", weights_only=False)["train_config"]["canvas"] == CANVAS
    centred = json.load(open(CENTRED_TEACHER_CARD))
    assert sha256_of(CENTRED_TEACHER_FILE) == centred["sha256"] and centred["train_config"]["img_size"] == 28
    assert shipped_teacher(CENTRED_TEACHER_FILE, CENTRED_TEACHER_CARD) == (CENTRED_TEACHER_FILE, centred)


@pytest.mark.parametrize("which", TEACHERS)
def test_evaluation_gives_the_recorded_accuracy(which):
    file, card_file, canvas, arch = TEACHERS[which]
    card = json.load(open(card_file))
    model, ckpt = model_from_checkpoint(file)
    assert {k: model.config[k] for k in arch if k != "in_chans"} == {k: v for k, v in arch.items() if k != "in_chans"}
    stats = evaluate(model, _test_loader(model, None, None, canvas=canvas), torch.device("cpu"), progress=False)
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
