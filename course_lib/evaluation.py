"""Judging samples of digits: a classifier trained in the course, and the metrics built on it.

Lesson 9 teaches these; lessons 6, 8 and 10-15 use them to score their samples.

* :func:`digit_classifier` gives a small convolutional classifier for the sklearn digits (8x8)
  or the MNIST digits (28x28) and prints its test accuracy. The digits one trains in seconds
  (once, then reloads from the cache). The MNIST one, the "judge" of lesson 8, ships with the
  package (``judges/``): :func:`train_classifier` trained it with the recipe in
  :data:`SHIPPED_RECIPES`, through ``scripts/train_judge.py``, in about 3 min of one CPU core,
  too long to repeat in every lesson. Its penultimate layer (``num_features`` = 64 numbers per
  image) is the feature space of the metrics, as the Inception network's is for FID on
  photographs.
* :func:`not_digits` makes images that are not digits (noise, blobs, scrambled digits), for
  *outlier exposure* (Hendrycks et al., 2019): a classifier shown them with the target "each
  digit 1/10" learns to be unsure off the data, so that noise no longer passes as a digit.
* :func:`evaluate_samples` computes, on those features, the Fréchet distance and the kernel
  distance (FID's and KID's recipes with our feature network; the tests check them against
  torchmetrics'), precision, recall, density and coverage (the tests check them against the
  ``prdc`` package), the share of samples the classifier labels with
  confidence >= 0.9, the balance of those labels over the ten classes, and a memorisation
  check against the training set.
* :func:`real_baseline` computes the same numbers for held-out *real* images against real
  images, over several random subsets: the floor a perfect model would reach, and the noise of
  each metric, so that a lesson can say when two models really differ.
* :func:`resampled_scores` scores a model's samples against the same random real sets, with the
  spread over them; :func:`differ` says whether two such scores differ by more than their noise.

Metrics are computed on the CPU in float64 (Apple's MPS has no float64).
"""

from __future__ import annotations

import math
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_mod
from .runtime import get_profile

DATASETS = {"digits": (8, 16), "mnist": (28, 255)}  # name -> (image size, largest pixel value)
CONFIDENCE = 0.9
# Training steps of the digits classifier per profile (about 15 s of one CPU core under cpu), and
# the version that goes into a checkpoint's name (digits v3: unchanged since; MNIST v4: strided
# first convolution; v5: the same network trained with outlier exposure).
CLASSIFIER_STEPS = {"digits": {"smoke": 100, "cpu": 1000, "gpu": 1500}}
CLASSIFIER_VERSION = {"digits": "v3", "mnist": "v5"}
# Judges shipped with the package: the recipe that trained them (scripts/train_judge.py), the
# same under every profile, so that scores are comparable across profiles.
JUDGE_DIR = Path(__file__).parent / "judges"
SHIPPED_RECIPES = {
    "mnist": {"steps": 4000, "width": 32, "batch_size": 128, "lr": 2e-3, "shift": 1,
              "outliers": 64, "outlier_weight": 0.5, "seed": 0},
}
METRICS = ("frechet", "kernel", "precision", "recall", "density", "coverage", "confident", "balance", "copies")
LOWER_IS_BETTER = {"frechet", "kernel", "balance", "copies"}


def _share(mask: Tensor) -> float:
    """The share of True entries, exactly (a Python float: no float64 tensor on the device)."""
    return mask.sum().item() / mask.numel()


def to_unit(images: Tensor, dataset: str) -> Tensor:
    """Integer pixel values (digits 0..16, MNIST 0..255) as floats in [0, 1]; floats pass through.

    A float tensor is taken to be in [0, 1] already, and checked."""
    size, top = _dataset(dataset)
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1:] != (1, size, size):
        raise ValueError(
            f"{dataset} images must have shape (N, 1, {size}, {size}), got {tuple(images.shape)}"
        )
    if images.is_floating_point():
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(
                f"float images must lie in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); "
                f"pass integer levels 0..{top} or divide by {top}"
            )
        return images.float()
    return images.float() / top


def _dataset(name: str) -> tuple[int, int]:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    return DATASETS[name]


# ----------------------------------------------------------------------------- the classifier


class DigitClassifier(nn.Module):
    """A small CNN on images in [0, 1]; ``features`` is its penultimate layer (64 numbers)."""

    num_features = 64
    loss_unit = "nats"
    outlier_weight = 0.0  # set by train_classifier when it trains with outlier exposure

    def __init__(self, size: int = 8, width: int = 32):
        super().__init__()
        self.size = size
        # 8x8: two 3x3 convolutions at full size, then 4x4. 28x28: the first convolution has
        # stride 2 (14x14), then 7x7: about a third of the work per step of full-size
        # convolutions. Measured on one CPU core: 800 steps reach 0.95 test accuracy on the MNIST
        # subset in about 26 s; the full-size version (v3) reached 0.97 in 1,500 steps and 190 s.
        # The shipped MNIST judge (v5, this network) trains 4,000 steps with outlier exposure:
        # 0.980 in about 195 s (its record: judges/mnist-cnn-v5.json).
        stride = 1 if size == 8 else 2
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=stride, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 4, self.num_features), nn.ReLU(),
        )
        self.head = nn.Linear(self.num_features, 10)
        # Features are standardised with the training images' mean and spread (set once trained),
        # so that distances between feature sets do not depend on the network's arbitrary scale.
        self.register_buffer("feature_mean", torch.zeros(self.num_features))
        self.register_buffer("feature_std", torch.ones(self.num_features))

    def features(self, x: Tensor) -> Tensor:
        return (self.body(x) - self.feature_mean) / self.feature_std

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

    @torch.no_grad()
    def standardise_features(self, x: Tensor) -> None:
        raw = self.body(x)
        self.feature_mean.copy_(raw.mean(0))
        self.feature_std.copy_(raw.std(0).clamp_min(1e-3))

    def loss(self, batch: tuple[Tensor, ...]) -> Tensor:
        """Cross-entropy on (images, labels); with a third entry, images that are not digits,
        add ``outlier_weight`` times their cross-entropy to the uniform distribution,
        mean over k of -log p_k (outlier exposure)."""
        x, y, *outliers = batch
        loss = F.cross_entropy(self(x), y)
        if outliers:
            loss = loss + self.outlier_weight * -F.log_softmax(self(outliers[0]), -1).mean()
        return loss

    @torch.no_grad()
    def probabilities(self, x: Tensor, batch_size: int = 2048) -> Tensor:
        dev = next(self.parameters()).device
        return torch.cat([F.softmax(self(x[i : i + batch_size].to(dev)), -1).cpu() for i in range(0, len(x), batch_size)])


class _Features(nn.Module):
    """The classifier's penultimate layer, in the form torchmetrics wants (``num_features``)."""

    def __init__(self, clf: DigitClassifier):
        super().__init__()
        self.clf = clf
        self.num_features = clf.num_features

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.clf.features(x.float())


def _load(dataset: str, split: str) -> tuple[Tensor, Tensor]:
    if dataset == "digits":
        x, y = data_mod.digits(split, verbose=False)
    else:
        x, y = data_mod.mnist(split, verbose=False)
    return to_unit(x, dataset), y


def accuracy(clf: DigitClassifier, x: Tensor, y: Tensor) -> float:
    return float((clf.probabilities(x).argmax(-1) == y).float().mean())


# Rearrangements of an image's quarters (top-left, top-right, bottom-left, bottom-right) that move
# every quarter, except the two that only swap halves (left-right, top-bottom): a swapped 0 or 8
# can still look like a digit.
QUARTER_ORDERS = torch.tensor([p for p in itertools.permutations(range(4))
                               if all(p[i] != i for i in range(4)) and p not in ((1, 0, 3, 2), (2, 3, 0, 1))])


def not_digits(n: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """``n`` images in [0, 1] shaped like ``like`` (N, 1, s, s) that are not digits, a quarter of
    each kind on average: uniform noise; smooth blobs (coarse noise, upsampled and thresholded
    softly); an image of ``like`` with its pixels in random order (the same ink, no shape); an
    image of ``like`` with its four quarters rearranged, every quarter moved and not only the
    two halves swapped (pieces of strokes, no digit), an arrangement drawn per image.

    Made for outlier exposure; lesson 9 measures a judge's confidence on fresh ones and on
    other kinds (:func:`strangers`)."""
    size = like.shape[-1]
    kind = torch.randint(4, (n,), generator=generator)
    noise = torch.rand(n, 1, size, size, generator=generator)
    coarse = torch.rand(n, 1, max(2, size // 4), max(2, size // 4), generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    gain = 16 + 32 * torch.rand(n, 1, 1, 1, generator=generator)
    level = 0.3 + 0.4 * torch.rand(n, 1, 1, 1, generator=generator)
    blobs = torch.sigmoid(gain * (smooth - level))
    picked = like[torch.randint(len(like), (n,), generator=generator)]
    scrambled = picked.flatten(1)[:, torch.randperm(size * size, generator=generator)].view(n, 1, size, size)
    h = size // 2
    source = like[torch.randint(len(like), (n,), generator=generator)]
    q = torch.stack([source[..., :h, :h], source[..., :h, h:], source[..., h:, :h], source[..., h:, h:]], 1)
    order = QUARTER_ORDERS[torch.randint(len(QUARTER_ORDERS), (n,), generator=generator)]
    q = q[torch.arange(n).unsqueeze(1), order]  # q[i, j] = quarter order[i, j] of image i
    swapped = torch.cat([torch.cat([q[:, 0], q[:, 1]], 3), torch.cat([q[:, 2], q[:, 3]], 3)], 2)
    out = torch.empty(n, 1, size, size)
    for k, images in enumerate((noise, blobs, scrambled, swapped)):
        out[kind == k] = images[kind == k]
    return out


def strangers(dataset: str, n: int = 500, seed: int = 123) -> dict[str, Tensor]:
    """Fixed sets of ``n`` images that are not digits, to measure a judge's confidence off the data.

    "shown in training": :func:`not_digits` (its kinds, fresh images); never shown: Gaussian
    noise through a logistic (grey speckle), constant grey images, and for MNIST the output of
    an untrained DCGAN generator (what a generator draws before it has learnt anything)."""
    size, _ = _dataset(dataset)
    gen = torch.Generator().manual_seed(seed)
    x_train, _ = _load(dataset, "train")
    out = {
        "shown in training": not_digits(n, x_train, gen),
        "Gaussian noise": torch.sigmoid(2 * torch.randn(n, 1, size, size, generator=gen)),
        "constant grey": torch.rand(n, 1, 1, 1, generator=gen).expand(n, 1, size, size).contiguous(),
    }
    if size == 28:
        from .models.dcgan import ConvGenerator  # here, to keep the import graph flat

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g = ConvGenerator(latent_dim=64, width=32).eval()
            with torch.no_grad():
                out["untrained generator"] = (g(torch.randn(n, 64, generator=gen)) + 1) / 2
    return out


def train_classifier(dataset: str, steps: int, width: int = 32, batch_size: int = 128, lr: float = 2e-3,
                     shift: int = 1, outliers: int = 0, outlier_weight: float = 0.0, seed: int = 0) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on ``dataset``'s training split, on the CPU.

    Seeds the global generator with ``seed`` (so a lesson's later draws do not depend on
    whether the classifier was trained or loaded: :func:`digit_classifier` seeds it either way).

    Each batch is ``batch_size`` training images, each batch shifted by up to ``shift`` pixels
    (a classifier should not judge by exact pixel positions), and, when ``outliers`` > 0, that
    many :func:`not_digits` for outlier exposure with weight ``outlier_weight``. Adam at ``lr``
    with a cosine schedule. The features are then standardised on the training images."""
    from . import train  # here, to keep the import graph flat

    size, _ = _dataset(dataset)
    if outliers < 0 or outlier_weight < 0 or (outliers > 0) != (outlier_weight > 0):
        raise ValueError(f"outlier exposure needs both outliers > 0 and outlier_weight > 0 (or both 0), "
                         f"got outliers={outliers}, outlier_weight={outlier_weight}")
    torch.manual_seed(seed)
    clf = DigitClassifier(size, width)
    clf.outlier_weight = outlier_weight
    x, y = _load(dataset, "train")

    def batches(n: int, generator: torch.Generator):
        idx = torch.randint(len(x), (n,), generator=generator)
        moved = torch.randint(-shift, shift + 1, (2,), generator=generator).tolist()
        batch = (torch.roll(x[idx], shifts=moved, dims=(2, 3)), y[idx])
        return (*batch, not_digits(outliers, x, generator)) if outliers else batch

    train.fit(clf, batches, steps=steps, batch_size=batch_size, lr=lr, lr_schedule="cosine", seed=seed,
              device="cpu", verbose=False, progress=False)
    clf.eval()
    clf.standardise_features(x)
    return clf


def judge_files(dataset: str) -> tuple[Path, Path]:
    """The shipped judge's weights and its record (recipe, checksum, what it measured)."""
    stem = f"{dataset}-cnn-{CLASSIFIER_VERSION[dataset]}"
    return JUDGE_DIR / f"{stem}.pt", JUDGE_DIR / f"{stem}.json"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def judge_report(clf: DigitClassifier, dataset: str) -> dict:
    """What a judge's record keeps: test accuracy, and the share labelled with confidence >= 0.9
    among held-out real digits (validation and test) and among each of :func:`strangers`."""
    x_test, y_test = _load(dataset, "test")
    x_val, _ = _load(dataset, "val")
    return {
        "test_accuracy": round(accuracy(clf, x_test, y_test), 4),
        "confident_real_heldout": round(confident_labels(clf, torch.cat([x_val, x_test]))[0], 4),
        "confident_not_digits": {name: round(confident_labels(clf, x)[0], 4) for name, x in strangers(dataset).items()},
    }


def digit_classifier(dataset: str = "digits", steps: int | None = None, verbose: bool = True) -> DigitClassifier:
    """The course's digit classifier for ``dataset``.

    MNIST: with ``steps`` None, the judge shipped with the package (:data:`SHIPPED_RECIPES`),
    checked against its record's checksum. Otherwise the classifier is trained once, with
    ``steps`` (for digits, by default the profile's budget), and loaded from the cache after:
    the checkpoint's name holds the data set, the steps and the version, so a change trains a
    new one; nothing is deleted. Training runs on the CPU (seconds for the 8x8 digits).
    """
    size, _ = _dataset(dataset)
    torch.manual_seed(0)  # on every path (trained, cached or shipped): a lesson's later draws follow from it
    if dataset in SHIPPED_RECIPES and steps is None:
        weights, record = judge_files(dataset)
        if not weights.exists() or not record.exists():
            raise FileNotFoundError(f"the shipped {dataset} judge is missing ({weights.name}): reinstall "
                                    f"course_lib, or train it again with `python scripts/train_judge.py {dataset}`")
        info = json.loads(record.read_text(encoding="utf-8"))
        if file_sha256(weights) != info["sha256"]:
            raise ValueError(f"{weights.name} does not match its record {record.name} (checksum): "
                             f"train it again with `python scripts/train_judge.py {dataset}`")
        clf = DigitClassifier(size, info["recipe"]["width"])
        clf.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        r = info["recipe"]
        how = (f"shipped with course_lib: {r['steps']:,} steps with outlier exposure, "
               f"trained by scripts/train_judge.py")
    else:
        if steps is None:
            steps = CLASSIFIER_STEPS[dataset][get_profile()]
        recipe = {k: v for k, v in SHIPPED_RECIPES.get(dataset, {}).items() if k != "steps"}
        path = data_mod.cache_dir() / "classifiers" / f"{dataset}-cnn-{CLASSIFIER_VERSION[dataset]}-steps{steps}.pt"
        clf = DigitClassifier(size, recipe.get("width", 32))
        if path.exists():
            clf.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            how = f"loaded from {path.name}"
        else:
            clf = train_classifier(dataset, steps, **recipe)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(clf.state_dict(), path)
            how = f"trained for {steps:,} steps, saved to {path.name}"
    clf.eval()
    if verbose:
        xt, yt = _load(dataset, "test")
        print(f"digit classifier ({dataset}, {how}): test accuracy {accuracy(clf, xt, yt):.3f} on {len(xt)} images")
    return clf


# ----------------------------------------------------------------------------- the metrics


@dataclass
class SampleReport:
    """Every number :func:`evaluate_samples` computes, for one set of samples."""

    n: int
    frechet: float  # Fréchet distance of classifier features (FID-style); lower is better
    kernel: float  # kernel distance (KID-style, unbiased, x 1000); lower is better
    precision: float  # share of samples inside the real data's manifold
    recall: float  # share of real data inside the samples' manifold
    density: float
    coverage: float
    confident: float  # share of samples labelled with confidence >= 0.9
    balance: float  # total variation between the confident labels and uniform (0 = balanced)
    copies: float  # share of samples nearer to a training image than 95% of held-out real images are

    def __str__(self) -> str:
        return (
            f"n={self.n}  Fréchet {self.frechet:.2f}  kernel(x1000) {self.kernel:.2f}  "
            f"precision {self.precision:.3f}  recall {self.recall:.3f}  density {self.density:.3f}  "
            f"coverage {self.coverage:.3f}  confident {self.confident:.3f}  balance(TV) {self.balance:.3f}  "
            f"copies {self.copies:.3f}"
        )


def frechet_from_moments(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, cov1) and N(mu2, cov2):

    |mu1 - mu2|^2 + tr(cov1) + tr(cov2) - 2 tr((cov1^(1/2) cov2 cov1^(1/2))^(1/2)).
    """
    mu1, cov1, mu2, cov2 = (t.cpu().double() for t in (mu1, cov1, mu2, cov2))
    s1 = _psd_sqrt(cov1)
    cross = _psd_sqrt(s1 @ cov2 @ s1)
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross.trace())


def _psd_sqrt(a: Tensor) -> Tensor:
    """The symmetric square root of a positive semi-definite matrix, by its eigendecomposition."""
    values, vectors = torch.linalg.eigh((a + a.T) / 2)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def feature_moments(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of a set of feature vectors (N, d), in float64."""
    f = features.cpu().double()
    return f.mean(0), torch.cov(f.T)


def frechet_distance(real: Tensor, fake: Tensor, clf: DigitClassifier) -> float:
    """Fréchet distance between the classifier features of two image sets (images in [0, 1]).

    FID's recipe (Heusel et al. 2017) with the course's classifier in place of Inception; the
    unit tests check it equal to torchmetrics' ``FrechetInceptionDistance`` with this feature network."""
    f_real, f_fake = _features(clf, real), _features(clf, fake)
    return frechet_from_moments(*feature_moments(f_real), *feature_moments(f_fake))


def kernel_distance(real: Tensor, fake: Tensor, clf: DigitClassifier, subsets: int = 50) -> float:
    """KID (unbiased MMD^2 with a cubic polynomial kernel), times 1000 as usually reported."""
    return kernel_from_features(_features(clf, real), _features(clf, fake), subsets=subsets)


def _features(clf: DigitClassifier, x: Tensor) -> Tensor:
    with torch.no_grad():
        return clf.features(x.float())


def polynomial_mmd2(a: Tensor, b: Tensor) -> Tensor:
    """The unbiased estimate of MMD^2 between two equal-size feature sets with the kernel
    k(u, v) = (u.v / d + 1)^3 (Binkowski et al. 2018): the diagonal terms k(u, u) left out."""
    m, d = a.shape
    k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    within = (k_aa.sum() - k_aa.diagonal().sum() + k_bb.sum() - k_bb.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_ab.mean()


def kernel_from_features(f_real: Tensor, f_fake: Tensor, subsets: int = 50, size: int = 200, seed: int = 0) -> float:
    """KID x 1000: the mean of :func:`polynomial_mmd2` over ``subsets`` random subsets of ``size``
    (at most the smaller set's size) from each set, drawn with a seeded generator of its own."""
    size = min(len(f_real), len(f_fake), size)
    if size == len(f_real) == len(f_fake):
        subsets = 1  # every "subset" is the whole of both sets, and the estimate ignores their order
    gen = torch.Generator().manual_seed(seed)
    a, b = f_real.cpu().double(), f_fake.cpu().double()
    values = [
        polynomial_mmd2(a[torch.randperm(len(a), generator=gen)[:size]], b[torch.randperm(len(b), generator=gen)[:size]])
        for _ in range(subsets)
    ]
    return 1000 * float(torch.stack(values).mean())


def manifold_metrics(real_features: Tensor, fake_features: Tensor, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020) from k-nearest-neighbour balls.

    Around every real feature vector a ball reaches its k-th nearest real neighbour; around every
    sample, its k-th nearest sample. Precision: share of samples inside some real ball. Recall:
    share of real points inside some sample ball. Density: the number of real balls a sample is
    in, divided by k, averaged. Coverage: share of real balls that hold at least one sample.
    The same numbers as the ``prdc`` package (the unit tests compare), on the CPU in float64.
    """
    r, f = real_features.double().cpu(), fake_features.double().cpu()
    mode = "donot_use_mm_for_euclid_dist"  # exact distances: a point is at 0 from itself
    d_rr, d_ff, d_rf = (torch.cdist(x, y, compute_mode=mode) for x, y in ((r, r), (f, f), (r, f)))
    radius_real = d_rr.kthvalue(k + 1, dim=1).values  # the point itself is the first neighbour
    radius_fake = d_ff.kthvalue(k + 1, dim=1).values
    in_real_ball = d_rf < radius_real[:, None]  # [i, j]: sample j lies in real point i's ball
    return {
        "precision": _share(in_real_ball.any(0)),
        "recall": _share((d_rf < radius_fake[None, :]).any(1)),
        "density": in_real_ball.sum().item() / (in_real_ball.shape[1] * k),
        "coverage": _share(d_rf.min(1).values < radius_real),
    }


def confident_labels(clf: DigitClassifier, x: Tensor, threshold: float = CONFIDENCE) -> tuple[float, Tensor]:
    """Share of images labelled with probability >= threshold, and the counts of those labels per class."""
    probs = clf.probabilities(x)
    top, label = probs.max(-1)
    keep = top >= threshold
    return float(keep.float().mean()), torch.bincount(label[keep], minlength=10)


def balance(counts: Tensor) -> float:
    """Total variation distance between the label histogram and the uniform one (0 balanced, 0.9 one class)."""
    total = counts.sum()
    if total == 0:
        return 1.0
    return float(0.5 * (counts.cpu().double() / total - 0.1).abs().sum())


def _nearest(a: Tensor, b: Tensor) -> Tensor:
    return torch.cdist(a.flatten(1).cpu().double(), b.flatten(1).cpu().double()).min(1).values


def copy_share(samples: Tensor, train: Tensor, heldout: Tensor, quantile: float = 0.05) -> float:
    """Memorisation: share of samples closer (in pixels) to their nearest training image than
    a ``quantile`` of held-out real images are to theirs. Fresh real data scores about ``quantile``;
    a model that copies its training set scores near 1."""
    threshold = torch.quantile(_nearest(heldout, train), quantile)
    return float((_nearest(samples, train) <= threshold).double().mean())  # _nearest works on the CPU


def evaluate_samples(
    samples: Tensor,
    real: Tensor,
    clf: DigitClassifier,
    dataset: str = "digits",
    train: Tensor | None = None,
    heldout: Tensor | None = None,
) -> SampleReport:
    """All metrics of ``samples`` against ``real`` images (both as levels or floats in [0, 1]).

    ``train`` and ``heldout`` (real images not trained on) give the memorisation check; without
    them ``copies`` is NaN.
    """
    fake, real = to_unit(samples.detach().cpu(), dataset), to_unit(real.detach().cpu(), dataset)
    clf = clf.cpu().eval()
    for name, x in (("samples", fake), ("real images", real)):
        if len(x) < 2 * clf.num_features:
            raise ValueError(
                f"{len(x)} {name} are too few for a Fréchet distance on {clf.num_features} features: "
                f"use at least {2 * clf.num_features}"
            )
    f_real, f_fake = _features(clf, real), _features(clf, fake)
    manifold = manifold_metrics(f_real, f_fake)
    share, counts = confident_labels(clf, fake)
    copies = math.nan
    if train is not None and heldout is not None:
        copies = copy_share(fake, to_unit(train.cpu(), dataset), to_unit(heldout.cpu(), dataset))
    return SampleReport(
        n=len(fake),
        frechet=frechet_from_moments(*feature_moments(f_real), *feature_moments(f_fake)),
        kernel=kernel_from_features(f_real, f_fake),
        confident=share,
        balance=balance(counts),
        copies=copies,
        **manifold,
    )


@dataclass
class Baseline:
    """A metric report over random real sets: the mean and the spread (standard deviation) per metric.

    From :func:`real_baseline` it is real against real: a perfect model's score and the noise.
    From :func:`resampled_scores` it is a model's samples against the same real sets."""

    mean: SampleReport
    std: SampleReport
    repeats: int
    reports: list[SampleReport] = field(default_factory=list, repr=False)

    def __str__(self) -> str:
        cells = []
        for f in fields(SampleReport):
            if f.name == "n":
                continue
            cells.append(f"{f.name} {getattr(self.mean, f.name):.3f} ± {getattr(self.std, f.name):.3f}")
        return f"mean ± spread over {self.repeats} random real sets, n={self.mean.n}: " + ", ".join(cells)


def real_baseline(pool: Tensor, clf: DigitClassifier, n: int, repeats: int = 5, dataset: str = "digits",
                  train: Tensor | None = None, seed: int = 0) -> Baseline:
    """Split a pool of real held-out images in two halves of ``n``, ``repeats`` times, and score
    one half as "samples" against the other: what a model that samples the data itself would get."""
    return resampled_scores(None, pool, clf, n, repeats, dataset, train=train, seed=seed)


def resampled_scores(samples: Tensor | None, pool: Tensor, clf: DigitClassifier, n: int, repeats: int = 5,
                     dataset: str = "digits", train: Tensor | None = None, seed: int = 0) -> Baseline:
    """Every metric of ``n`` samples, ``repeats`` times over fresh random real sets: mean and spread.

    Each repeat draws a random permutation of the real ``pool``: its images ``n..2n`` are the
    reference set, the images after ``2n`` the held-out set of the memorisation check. The
    "samples" are ``n`` images drawn at random (without replacement) from ``samples``, or, when
    ``samples`` is None, the pool's first ``n`` images (real against real: :func:`real_baseline`).
    With the same ``seed`` every call uses the same reference sets, so the rows of a table are
    scored against the same real images. The spread (standard deviation over repeats) is the
    metric's noise at this ``n``: two rows differ only by more than it (:func:`differ`).
    """
    if not isinstance(repeats, int) or repeats < 2:
        raise ValueError(f"repeats must be an int >= 2 to measure a spread, got {repeats!r}")
    if 2 * n > len(pool):
        raise ValueError(f"the pool has {len(pool)} images: two halves of n={n} need {2 * n}")
    if samples is not None and len(samples) < n:
        raise ValueError(f"{len(samples)} samples are fewer than n={n}: draw more, or lower n")
    gen = torch.Generator().manual_seed(seed)
    draw = torch.Generator().manual_seed(seed + 1)
    reports = []
    for _ in range(repeats):
        perm = torch.randperm(len(pool), generator=gen)
        b = pool[perm[n : 2 * n]]
        a = pool[perm[:n]] if samples is None else samples[torch.randperm(len(samples), generator=draw)[:n]]
        rest = pool[perm[2 * n :]] if len(pool) > 2 * n else b
        reports.append(evaluate_samples(a, b, clf, dataset, train=train, heldout=rest if train is not None else None))
    table = np.array([[getattr(r, f.name) for f in fields(SampleReport)] for r in reports], dtype=float)
    mean = SampleReport(**{f.name: v for f, v in zip(fields(SampleReport), table.mean(0))})
    std = SampleReport(**{f.name: v for f, v in zip(fields(SampleReport), table.std(0, ddof=1))})
    mean.n, std.n = n, 0
    return Baseline(mean=mean, std=std, repeats=repeats, reports=reports)


def differ(a: Baseline, b: Baseline, metric: str, z: float = 2.0) -> bool:
    """Whether two resampled scores differ on ``metric`` by more than ``z`` times their combined noise,
    |mean_a - mean_b| > z * sqrt(std_a^2 + std_b^2)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: use one of {', '.join(METRICS)}")
    gap = abs(getattr(a.mean, metric) - getattr(b.mean, metric))
    return bool(gap > z * math.hypot(getattr(a.std, metric), getattr(b.std, metric)))


def as_dict(report: SampleReport) -> dict[str, float]:
    return asdict(report)


__all__ = [
    "DigitClassifier", "digit_classifier", "train_classifier", "not_digits", "to_unit", "accuracy", "SampleReport", "evaluate_samples",
    "frechet_distance", "kernel_distance", "manifold_metrics", "confident_labels", "balance",
    "copy_share", "Baseline", "real_baseline", "resampled_scores", "differ", "frechet_from_moments",
    "feature_moments", "METRICS",
]
