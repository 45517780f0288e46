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


# ----------------------------------------------------------------------------- added with lesson 9


def test_frechet_from_moments_passes_the_lesson_check():
    from course_lib.checks import lesson09

    lesson09.check_frechet_from_moments(ev.frechet_from_moments)


def test_frechet_and_kernel_distances_equal_torchmetrics(one_thread):
    import warnings

    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    gen = torch.Generator().manual_seed(1)
    a = torch.randn(300, 8, generator=gen)
    b = 0.3 + torch.randn(300, 8, generator=gen) @ torch.randn(8, 8, generator=gen) / 3
    net = ev._Features(FirstPixels())
    fid = FrechetInceptionDistance(feature=net, normalize=True)
    fid.update(as_images(a), real=True)
    fid.update(as_images(b), real=False)
    assert ev.frechet_distance(as_images(a), as_images(b), FirstPixels()) == pytest.approx(float(fid.compute()), rel=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=net, normalize=True, subset_size=300, subsets=1)  # the whole sets
        kid.update(as_images(a), real=True)
        kid.update(as_images(b), real=False)
        theirs = 1000 * float(kid.compute()[0])
    ours = ev.kernel_from_features(a, b, subsets=1, size=300)  # the estimate is invariant to the order
    assert ours == pytest.approx(theirs, rel=1e-5)


def test_manifold_metrics_equal_prdc():
    import contextlib
    import io

    from prdc import compute_prdc

    gen = torch.Generator().manual_seed(4)
    real = torch.randn(300, 6, generator=gen)
    fake = 0.5 + 1.3 * torch.randn(250, 6, generator=gen)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=5)
    ours = ev.manifold_metrics(real, fake, k=5)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(float(value), abs=1e-12), key


def test_kernel_distance_is_zero_in_expectation_and_large_for_shifted_sets(one_thread):
    gen = torch.Generator().manual_seed(2)
    a, b = torch.randn(400, 8, generator=gen), torch.randn(400, 8, generator=gen)
    same = ev.kernel_distance(as_images(a), as_images(b), FirstPixels())
    shifted = ev.kernel_distance(as_images(a), as_images(b + 1.0), FirstPixels())
    assert abs(same) < 50 and shifted > 20 * max(abs(same), 1.0)


def test_precision_and_recall_of_half_the_data():
    gen = torch.Generator().manual_seed(3)
    real = torch.randn(1000, 2, generator=gen)
    half = real[real[:, 0] > 0]  # samples that cover one half of the data, and only real points
    out = ev.manifold_metrics(real, half)
    assert out["precision"] == 1.0  # every sample is a real point, inside the real manifold
    assert 0.4 < out["recall"] < 0.7 and 0.4 < out["coverage"] < 0.65


def test_balance_of_uniform_and_one_class_labels():
    assert ev.balance(torch.full((10,), 7)) == pytest.approx(0.0)
    assert ev.balance(torch.tensor([5, 0, 0, 0, 0, 0, 0, 0, 0, 0])) == pytest.approx(0.9)
    assert ev.balance(torch.zeros(10, dtype=torch.long)) == 1.0  # nothing confident: the worst score


def test_resampled_scores_share_reference_sets_and_measure_noise(clf, digits):
    pool = torch.cat([digits["val"][0], digits["test"][0]])
    train = digits["train"][0]
    base = ev.real_baseline(pool, clf, n=200, repeats=3, train=train)
    again = ev.resampled_scores(None, pool, clf, n=200, repeats=3, train=train)
    assert [r.frechet for r in base.reports] == [r.frechet for r in again.reports]  # same seed, same sets
    assert all(getattr(base.std, m) >= 0 for m in ev.METRICS) and base.std.frechet > 0
    copies = ev.resampled_scores(train, pool, clf, n=200, repeats=3, train=train)
    collapsed = ev.resampled_scores(train[:1].repeat(300, 1, 1, 1), pool, clf, n=200, repeats=3)
    assert copies.mean.copies == 1.0 and base.mean.copies < 0.2
    assert ev.differ(copies, base, "copies") and ev.differ(collapsed, base, "recall")
    assert not ev.differ(base, again, "frechet")
    with pytest.raises(ValueError, match="repeats"):
        ev.resampled_scores(None, pool, clf, n=200, repeats=1)
    with pytest.raises(ValueError, match="fewer than n"):
        ev.resampled_scores(train[:50], pool, clf, n=200, repeats=2)
    with pytest.raises(ValueError, match="unknown metric"):
        ev.differ(base, again, "fid")


def test_mnist_classifier_is_built_for_28x28():
    clf = ev.DigitClassifier(28)
    out = clf.features(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, clf.num_features)
