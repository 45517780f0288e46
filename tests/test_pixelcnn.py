"""PixelCNN: causal masks, an exactly normalised likelihood, sequential sampling, learning a known answer."""

import itertools
import math

import pytest
import torch

from course_lib import metrics, train
from course_lib.models import PixelCNN
from course_lib.models.pixelcnn import MaskedConv2d


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def small(levels=17, height=8, width=8, **kw):
    torch.manual_seed(0)
    settings = dict(channels=8, blocks=2, dropout=0.0)
    settings.update(kw)
    return PixelCNN(levels=levels, height=height, width=width, **settings).eval()


def test_mask_a_hides_the_centre_and_mask_b_keeps_it():
    a = MaskedConv2d(1, 1, 3, "A").mask[0, 0]
    b = MaskedConv2d(1, 1, 3, "B").mask[0, 0]
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]


@pytest.mark.parametrize("first_kernel", [None, 3])
def test_masks_are_causal(first_kernel):
    """Changing pixel i leaves the logits of every pixel <= i unchanged (checked for every i).

    With the default first kernel (big enough to reach every earlier pixel) the logits of every
    pixel > i do change: the network has no blind spot. With a 3x3 first kernel it does.
    """
    model = small(first_kernel=first_kernel, blocks=3)
    n = model.height * model.width
    torch.manual_seed(1)
    base = torch.randint(0, model.levels, (1, 1, model.height, model.width))
    changed = base.repeat(n, 1, 1, 1)
    flat = changed.view(n, n)
    flat[torch.arange(n), torch.arange(n)] = (flat.diagonal() + 1 + torch.randint(0, model.levels - 1, (n,))) % model.levels
    with torch.no_grad():
        diff = (model.logits(changed) - model.logits(base)).abs().amax(dim=1).view(n, n)  # [i, j]
    seen = diff > 1e-6  # seen[i, j]: the prediction for pixel j moved when pixel i changed
    assert not seen.tril().any(), "a prediction saw its own pixel or a later one"
    blind = (~seen).triu(diagonal=1).sum().item()
    if first_kernel is None:
        assert blind == 0
    else:
        assert blind > 0  # stacked 3x3 masks miss some earlier pixels (the "blind spot")


def test_log_prob_is_normalised():
    """exp(log_prob) summed over all 3^4 = 81 images of a 2x2, 3-level model is 1."""
    model = small(levels=3, height=2, width=2)
    images = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 1, 2, 2)
    with torch.no_grad():
        total = model.log_prob(images).double().exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-5)


def test_sampling_is_sequential_and_matches_log_prob():
    model = small()
    with metrics.count_calls(model.sampling_network) as calls:
        x = model.sample(5)
    assert calls[0] == 64  # one network evaluation per pixel of an 8x8 image
    assert x.shape == (5, 1, 8, 8) and x.dtype == torch.long
    assert 0 <= x.min() and x.max() <= 16
    with metrics.count_calls(model.sampling_network) as calls:
        model.loss(x)
    assert calls[0] == 1  # training scores all 64 pixels in one pass

    # The sampler draws from the distribution log_prob defines: frequencies of all 81 images
    # of a 2x2, 3-level model against exp(log_prob).
    tiny = small(levels=3, height=2, width=2)
    images = torch.tensor(list(itertools.product(range(3), repeat=4))).view(-1, 1, 2, 2)
    torch.manual_seed(2)
    draws = tiny.sample(40000).view(-1, 4)
    codes = (draws * torch.tensor([27, 9, 3, 1])).sum(1)
    freq = torch.bincount(codes, minlength=81).double() / len(codes)
    with torch.no_grad():
        prob = tiny.log_prob(images).double().exp()
    assert 0.5 * (freq - prob).abs().sum().item() < 0.03  # total variation distance


def test_temperature_sharpens():
    model = small(levels=3, height=2, width=2)
    torch.manual_seed(3)
    cold = model.sample(200, temperature=1e-3)
    assert (cold == cold[0]).all()  # near-zero temperature: always the most likely next pixel
    hot = model.sample(200, temperature=1.0)
    assert len(torch.unique(hot.view(200, -1), dim=0)) > 5


def markov_images(n, gen, levels=3, stay=0.9):
    """4x4 images whose pixels, in raster order, copy the previous pixel with prob ``stay``, else are uniform."""
    x = torch.empty(n, 16, dtype=torch.long)
    x[:, 0] = torch.randint(0, levels, (n,), generator=gen)
    for i in range(1, 16):
        keep = torch.rand(n, generator=gen) < stay
        x[:, i] = torch.where(keep, x[:, i - 1], torch.randint(0, levels, (n,), generator=gen))
    return x.view(n, 1, 4, 4)


def markov_log_prob(x, levels=3, stay=0.9):
    flat = x.view(len(x), -1)
    same = (flat[:, 1:] == flat[:, :-1]).double()
    p_same, p_other = stay + (1 - stay) / levels, (1 - stay) / levels
    return -math.log(levels) + (same * math.log(p_same) + (1 - same) * math.log(p_other)).sum(1)


def test_learns_a_known_distribution():
    """A chain along the raster order: the learned NLL approaches the true one, far below i.i.d. pixels."""
    gen = torch.Generator().manual_seed(0)
    train_x, test_x = markov_images(4000, gen), markov_images(2000, gen)
    torch.manual_seed(0)
    model = PixelCNN(levels=3, height=4, width=4, channels=16, blocks=1, dropout=0.0)
    train.fit(model, train_x, steps=200, batch_size=128, lr=1e-2, lr_schedule="cosine", progress=False, verbose=False)
    with torch.no_grad():
        model_nll = -model.log_prob(test_x).mean().item()
    true_nll = -markov_log_prob(test_x).mean().item()  # about 5.5 nats per image
    assert true_nll < 7
    assert model_nll < true_nll + 0.15, (model_nll, true_nll)  # 16 * log 3 = 17.6 for i.i.d. uniform pixels


def test_bad_input():
    model = small()
    x = torch.randint(0, 17, (4, 1, 8, 8))
    with pytest.raises(TypeError, match=r"integer pixel levels.*\.long\(\)"):
        model.loss(x.float() / 16)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        model.loss(x.view(4, 64))
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        model.log_prob(torch.zeros(4, 1, 28, 28, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.16"):
        model.loss(x + 1)
    with pytest.raises(ValueError, match=r"0\.\.16"):
        model.log_prob(x - 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.loss(x.numpy())
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=0.0)
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 1, 3, "C")


def test_mask_b_in_the_first_layer_leaks_the_pixel_itself():
    """first_mask="B" (the bug of Exercise 6): the prediction of pixel i moves when pixel i changes."""
    model = small(first_mask="B")
    torch.manual_seed(4)
    x = torch.randint(0, 17, (1, 1, 8, 8))
    y = x.clone()
    y[0, 0, 3, 4] = (y[0, 0, 3, 4] + 5) % 17
    with torch.no_grad():
        moved = (model.logits(y) - model.logits(x))[0, :, 3, 4].abs().max().item()
    assert moved > 1e-4
