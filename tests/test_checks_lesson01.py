"""Lesson 1's exercise checks pass on course_lib's own implementations and fail on wrong ones."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib.checks import lesson01
from course_lib.models import DDPMSchedule
from course_lib.models.diffusion import q_sample
from course_lib.models.gan import discriminator_loss, generator_loss, minimax_generator_loss


def test_forward_process_check_passes_on_the_library():
    lesson01.check_forward_process(q_sample)


def test_library_closed_form_matches_the_schedule():
    s = DDPMSchedule(steps=30)
    x0, eps, t = torch.randn(50, 2), torch.randn(50, 2), torch.randint(0, 30, (50,))
    torch.testing.assert_close(q_sample(x0, t, eps, s.betas), s.q_sample(x0, t, eps))


@pytest.mark.parametrize(
    "wrong",
    [
        lambda x0, t, eps, b: torch.cumprod(1 - b, 0)[t][:, None] * x0 + (1 - torch.cumprod(1 - b, 0)[t][:, None]) * eps,
        lambda x0, t, eps, b: q_sample(x0, t - 1, eps, b),  # off by one step
        lambda x0, t, eps, b: (1 - b[t]).sqrt()[:, None] * x0 + b[t].sqrt()[:, None] * eps,  # one step only
    ],
)
def test_forward_process_check_fails_on_wrong_versions(wrong):
    with pytest.raises(AssertionError):
        lesson01.check_forward_process(wrong)


def test_capped_abar_matches_the_schedule():
    for steps in (10, 100):
        assert DDPMSchedule(steps).abar[-1].item() == pytest.approx(lesson01.capped_cosine_abar(steps), rel=1e-4)
        lesson01.check_capped_abar(DDPMSchedule(steps).abar[-1].item(), steps)
    with pytest.raises(AssertionError, match="capped"):
        lesson01.check_capped_abar(0.0, 10)


def test_gan_losses_known_values():
    zero = torch.zeros(7, 1)
    # a discriminator that cannot tell (logit 0, probability 1/2): the equilibrium values
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(zero).item() == pytest.approx(math.log(2))
    assert minimax_generator_loss(zero).item() == pytest.approx(-math.log(2))
    a_real, a_fake = torch.randn(20, 1), torch.randn(20, 1)
    want = F.binary_cross_entropy_with_logits(a_real, torch.ones_like(a_real)) + F.binary_cross_entropy_with_logits(
        a_fake, torch.zeros_like(a_fake))
    torch.testing.assert_close(discriminator_loss(a_real, a_fake), want)
    # finite where a naive log(sigmoid) overflows
    big = torch.full((3, 1), 200.0)
    assert torch.isfinite(discriminator_loss(-big, big)) and torch.isfinite(generator_loss(-big))


def test_non_saturating_gradient_survives_a_confident_discriminator():
    a = torch.tensor([-10.0], requires_grad=True)  # the discriminator is sure the fake is fake
    (g_ns,) = torch.autograd.grad(generator_loss(a), a)
    (g_mm,) = torch.autograd.grad(minimax_generator_loss(a), a)
    assert abs(g_ns.item()) > 0.99 and abs(g_mm.item()) < 1e-4
