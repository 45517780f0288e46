"""The MNIST judge shipped with course_lib, and outlier exposure on a known answer.

A classifier trained only on digits has no way to say "not a digit": its softmax spreads all
the probability over the ten digits. Outlier exposure shows it non-digits with the target
"each digit 1/10"; these tests check that this is what makes noise score no confidence, and
that the shipped weights are the ones their record describes.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from course_lib import evaluation as ev


@pytest.fixture(scope="module")
def record():
    _, path = ev.judge_files("mnist")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def judge():
    torch.set_num_threads(1)
    return ev.digit_classifier("mnist", verbose=False)


def test_the_shipped_judge_is_the_recipe_it_records(record):
    weights, _ = ev.judge_files("mnist")
    assert record["recipe"] == ev.SHIPPED_RECIPES["mnist"]
    assert ev.file_sha256(weights) == record["sha256"]
    assert record["recipe"]["outliers"] > 0 and record["recipe"]["outlier_weight"] > 0


def test_the_shipped_judge_measures_what_its_record_says(judge, record):
    """The record's numbers, recomputed from the shipped weights on the same held-out images."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_judge.py"
    spec = importlib.util.spec_from_file_location("train_judge", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    now = module.judge_report(judge, "mnist")
    assert now["test_accuracy"] == pytest.approx(record["test_accuracy"], abs=2e-3)
    assert now["confident_real_heldout"] == pytest.approx(record["confident_real_heldout"], abs=2e-3)
    for name, share in record["confident_not_digits"].items():
        assert now["confident_not_digits"][name] == pytest.approx(share, abs=2e-3), name


def test_the_shipped_judge_reads_digits_and_refuses_non_digits(judge):
    x, y = ev._load("mnist", "test")
    assert ev.accuracy(judge, x, y) >= 0.97
    assert ev.confident_labels(judge, x)[0] >= 0.93
    strangers = ev.strangers("mnist")
    assert "untrained generator" in strangers  # a kind it was never shown
    for name, images in strangers.items():
        assert ev.confident_labels(judge, images)[0] <= 0.02, name


def test_outlier_exposure_is_what_makes_noise_unconfident(one_thread, tmp_path, monkeypatch):
    """The same 8x8 classifier trained with and without outlier exposure: only the first refuses noise."""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    x, y = ev._load("digits", "test")
    noise = ev.strangers("digits")
    plain = ev.train_classifier("digits", steps=400)
    exposed = ev.train_classifier("digits", steps=400, outliers=64, outlier_weight=0.5)
    for clf in (plain, exposed):
        assert ev.accuracy(clf, x, y) >= 0.9
    fooled = [ev.confident_labels(plain, images)[0] for images in noise.values()]
    refused = [ev.confident_labels(exposed, images)[0] for images in noise.values()]
    assert max(fooled) >= 0.2, fooled  # without it, a large share of some kind of noise passes as a digit
    assert max(refused) <= 0.05, refused


def test_not_digits_are_images_of_every_kind():
    like = torch.rand(50, 1, 28, 28)
    a = ev.not_digits(400, like, torch.Generator().manual_seed(0))
    b = ev.not_digits(400, like, torch.Generator().manual_seed(0))
    assert a.shape == (400, 1, 28, 28) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1


def test_a_missing_or_changed_judge_names_the_fix(tmp_path, monkeypatch):
    weights, record = ev.judge_files("mnist")
    monkeypatch.setattr(ev, "JUDGE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="train_judge.py"):
        ev.digit_classifier("mnist", verbose=False)
    shutil.copy(record, tmp_path / record.name)
    changed = bytearray(weights.read_bytes())
    changed[-1] ^= 1  # one bit of the file
    (tmp_path / weights.name).write_bytes(bytes(changed))
    with pytest.raises(ValueError, match="train_judge.py"):
        ev.digit_classifier("mnist", verbose=False)


def test_outlier_settings_must_come_together():
    with pytest.raises(ValueError, match="outlier"):
        ev.train_classifier("digits", steps=1, outliers=8, outlier_weight=0.0)
