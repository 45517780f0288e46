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
    return ev.digit_classifier("mnist", verbose=False)


def test_the_shipped_judge_is_the_recipe_it_records(record):
    weights, _ = ev.judge_files("mnist")
    assert record["recipe"] == ev.SHIPPED_RECIPES["mnist"]
    assert ev.file_sha256(weights) == record["sha256"]
    assert record["recipe"]["outliers"] > 0 and record["recipe"]["outlier_weight"] > 0


def test_the_shipped_judge_measures_what_its_record_says(judge, record, one_thread):
    """The record's numbers, recomputed from the shipped weights on the same held-out images."""
    now = ev.judge_report(judge, "mnist")
    assert now["test_accuracy"] == pytest.approx(record["test_accuracy"], abs=2e-3)
    assert now["confident_real_heldout"] == pytest.approx(record["confident_real_heldout"], abs=2e-3)
    for name, share in record["confident_not_digits"].items():
        assert now["confident_not_digits"][name] == pytest.approx(share, abs=2e-3), name


def test_the_shipped_judge_reads_digits_and_refuses_non_digits(judge, record):
    """What lessons 8 and 9 rely on, as bounds on the record (which the test above ties to the weights)."""
    assert record["test_accuracy"] >= 0.97
    assert record["confident_real_heldout"] >= 0.93
    assert "untrained generator" in record["confident_not_digits"]  # a kind it was never shown
    for name, share in record["confident_not_digits"].items():
        assert share <= 0.02, name


def test_outlier_exposure_is_what_makes_noise_unconfident(one_thread):
    """The same 8x8 classifier trained with and without outlier exposure: only the second refuses noise."""
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
    # scrambled and rearranged images hold exactly the pixels of one image of `like`, in another order
    same_ink = [(img.flatten().sort().values == like.flatten(1).sort(1).values).all(1).any() for img in a]
    moved = [img for img, ink in zip(a, same_ink) if ink]
    assert 100 < len(moved) < 300  # about half: the scrambled and the rearranged kinds
    assert not any((img == like).flatten(1).all(1).any() for img in moved)  # none is an image of `like` unchanged


def test_every_quarter_order_moves_every_quarter_and_is_not_a_half_swap():
    orders = [tuple(o) for o in ev.QUARTER_ORDERS.tolist()]
    assert len(orders) == 7 and len(set(orders)) == 7  # the 9 derangements of 4, less the two half swaps
    assert all(all(o[i] != i for i in range(4)) for o in orders)
    assert (1, 0, 3, 2) not in orders and (2, 3, 0, 1) not in orders


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
