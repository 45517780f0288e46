"""Lesson 9's toolkit on known answers: identical sets, two Gaussians, a collapsed set, copies."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import data
from course_lib import evaluation as ev


class FirstPixels(ev.DigitClassifier):
    """A 'classifier' whose features are the first 8 pixel values: known feature distributions."""

    num_features = 8

    def features(self, x):
        return x.flatten(1)[:, :8].float()


def as_images(features: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(len(features), 1, 8, 8)
    out.view(len(features), -1)[:, :8] = features
    return out


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    import os

    old = os.environ.get("COURSE_DATA_DIR")
    os.environ["COURSE_DATA_DIR"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(1)
    try:
        return ev.digit_classifier("digits", steps=600, verbose=False)
    finally:
        if old is None:
            os.environ.pop("COURSE_DATA_DIR")
        else:
            os.environ["COURSE_DATA_DIR"] = old


@pytest.fixture(scope="module")
def digits():
    return {split: data.digits(split, verbose=False) for split in ("train", "val", "test")}


def test_classifier_is_accurate(clf, digits):
    x, y = digits["test"]
    assert ev.accuracy(clf, ev.to_unit(x, "digits"), y) >= 0.9


def test_frechet_of_two_gaussians_matches_closed_form(one_thread):
    gen = torch.Generator().manual_seed(0)
    d, n = 8, 20_000
    shift = torch.full((d,), 0.5)
    a = torch.randn(n, d, generator=gen)
    b = shift + math.sqrt(2.0) * torch.randn(n, d, generator=gen)
    # N(0, I) against N(m, 2I): |m|^2 + tr(I + 2I - 2 (2I)^(1/2)) = |m|^2 + d (3 - 2 sqrt 2)
    exact = float(shift @ shift) + d * (3 - 2 * math.sqrt(2))
    got = ev.frechet_distance(as_images(a), as_images(b), FirstPixels())
    assert got == pytest.approx(exact, abs=0.05)


def test_identical_sets_score_perfectly(clf, digits):
    x = digits["test"][0]
    report = ev.evaluate_samples(x, x, clf)
    assert abs(report.frechet) < 1e-6
    # KID averages an unbiased estimator over random subsets (200 images): 0 only in expectation,
    # with a spread of about 10 (x1000) at this size; a collapsed set scores in the thousands.
    assert abs(report.kernel) < 30
    assert report.precision == report.recall == report.coverage == 1.0


def test_a_collapsed_set_has_no_recall_and_one_class(clf, digits):
    x = digits["test"][0]
    collapsed = x[:1].repeat(300, 1, 1, 1)
    report = ev.evaluate_samples(collapsed, digits["val"][0], clf)
    real = ev.evaluate_samples(x[:300], digits["val"][0], clf)
    assert report.recall < 0.05 and real.recall > 0.7
    assert report.balance == pytest.approx(0.9)
    assert report.frechet > 10 * real.frechet


def test_copies_of_the_training_set_are_caught(clf, digits):
    train, test, val = digits["train"][0], digits["test"][0], digits["val"][0]
    assert ev.copy_share(ev.to_unit(train[:300], "digits"), ev.to_unit(train, "digits"), ev.to_unit(val, "digits")) == 1.0
    fresh = ev.copy_share(ev.to_unit(test, "digits"), ev.to_unit(train, "digits"), ev.to_unit(val, "digits"))
    assert fresh < 0.2


def test_real_baseline_gives_a_mean_and_a_spread(clf, digits):
    pool = torch.cat([digits["val"][0], digits["test"][0]])
    base = ev.real_baseline(pool, clf, n=200, repeats=3)
    assert base.mean.recall > 0.8 and base.std.frechet >= 0 and base.repeats == 3


def test_bad_input_names_the_fix(clf):
    with pytest.raises(ValueError, match=r"shape \(N, 1, 8, 8\)"):
        ev.to_unit(torch.zeros(5, 28, 28), "digits")
    with pytest.raises(ValueError, match="divide by 16"):
        ev.to_unit(torch.full((5, 1, 8, 8), 3.0), "digits")
    with pytest.raises(ValueError, match="at least 128"):
        ev.evaluate_samples(torch.zeros(10, 1, 8, 8), torch.zeros(300, 1, 8, 8), clf)
    with pytest.raises(ValueError, match="unknown dataset"):
        ev.to_unit(torch.zeros(5, 1, 8, 8), "cifar")
