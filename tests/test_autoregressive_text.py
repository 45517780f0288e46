"""Lesson 2's character models: the chain rule holds exactly, and each model's math has a known answer."""

import itertools
import math
from collections import Counter

import pytest
import torch

from course_lib import train
from course_lib.models import CharBigram, CharMLP, CharTransformer, sample_next
from course_lib.text import PAD, CharVocab, count_tokens

pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


NAMES = ["anna", "bob", "abba", "ana", "bo", "nab", "b"]
TINY = CharVocab("ab", max_len=3)  # 3 tokens, names of 0..3 letters: 15 names in all


def make(kind, vocab_size, max_len, seed=0):
    torch.manual_seed(seed)
    if kind == "bigram":
        model = CharBigram(vocab_size, max_len)
        torch.nn.init.normal_(model.table)  # a random table, not the uniform start
        return model
    if kind == "mlp":
        return CharMLP(vocab_size, max_len, context=3, embed=4, hidden=16)
    return CharTransformer(vocab_size=vocab_size, max_len=max_len, n_layer=2, n_head=2, n_embd=16)


KINDS = ["bigram", "mlp", "transformer"]


def test_vocab_round_trip_and_layout():
    vocab = CharVocab.from_names(NAMES)
    assert vocab.letters == "abno" and vocab.size == 5 and vocab.max_len == 4
    x = vocab.encode(NAMES)
    assert x.shape == (len(NAMES), 6) and x.dtype == torch.long
    assert x[1].tolist() == [0, 2, 4, 2, 0, PAD]  # "bob": start, b, o, b, end, pad
    assert vocab.decode(x) == NAMES
    assert count_tokens(x) == sum(len(n) + 1 for n in NAMES)  # letters plus one end token each


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    """Changing input token i changes no prediction before position i (and does change position i)."""
    model = make(kind, 5, 6).eval()
    x = torch.randint(0, 5, (4, 7))
    base = model(x)
    for i in range(1, 7):
        y = x.clone()
        y[:, i] = (y[:, i] + 1) % 5
        out = model(y)
        assert torch.equal(out[:, :i], base[:, :i]) or torch.allclose(out[:, :i], base[:, :i], atol=1e-6), i
        assert not torch.allclose(out[:, i], base[:, i]), i


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_normalised(kind):
    """exp(log_prob) summed over every name the model can produce is exactly 1."""
    model = make(kind, TINY.size, TINY.max_len).eval()
    every = ["".join(p) for L in range(TINY.max_len + 1) for p in itertools.product(TINY.letters, repeat=L)]
    assert len(every) == 15
    with torch.no_grad():
        total = model.log_prob(TINY.encode(every)).double().exp().sum().item()
    assert total == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_sample_frequencies_match_log_prob(kind):
    """Sampling and log_prob describe the same distribution: empirical frequencies vs exp(log_prob)."""
    model = make(kind, TINY.size, TINY.max_len).eval()
    gen = torch.Generator().manual_seed(0)
    names = TINY.decode(model.sample(20000, generator=gen))
    freq = Counter(names)
    top = [n for n, _ in freq.most_common(5)]
    with torch.no_grad():
        p = model.log_prob(TINY.encode(top)).exp()
    for name, prob in zip(top, p.tolist()):
        assert freq[name] / 20000 == pytest.approx(prob, abs=0.015), name


def test_bigram_counts_are_the_exact_mle():
    vocab = CharVocab.from_names(NAMES, max_len=6)  # no name reaches max_len: every end is predicted
    x = vocab.encode(NAMES)
    pairs = Counter((a, b) for n in NAMES for a, b in zip("." + n, n + "."))
    model = CharBigram(vocab.size, vocab.max_len).fit_counts(x, smoothing=0.0)
    probs = model.table.exp()
    for a in "." + vocab.letters:
        row_total = sum(c for (p, _), c in pairs.items() if p == a)
        for b in "." + vocab.letters:
            ia, ib = (0 if a == "." else vocab.letters.index(a) + 1), (0 if b == "." else vocab.letters.index(b) + 1)
            assert probs[ia, ib].item() == pytest.approx(pairs[(a, b)] / row_total, abs=1e-6)
    # Laplace smoothing: (count + 1) / (row total + V)
    smooth = CharBigram(vocab.size, vocab.max_len).fit_counts(x, smoothing=1.0).table.exp()
    assert smooth[1, 2].item() == pytest.approx((pairs[("a", "b")] + 1) / (sum(c for (p, _), c in pairs.items() if p == "a") + 5))
    # no gradient step can beat the MLE on its own training data
    nll_mle = model.nll_per_char(x)
    other = CharBigram(vocab.size, vocab.max_len).fit_counts(x, smoothing=0.5)
    assert nll_mle < other.nll_per_char(x)
    assert nll_mle == pytest.approx(model.loss(x).item(), abs=1e-6)
    # with names that reach max_len (their end token is certain, not predicted) the counts are
    # still the maximum: the gradient of the training NLL vanishes there
    short = CharVocab.from_names(NAMES)
    assert short.max_len == 4
    xs = short.encode(NAMES)
    fitted = CharBigram(short.size, short.max_len).fit_counts(xs, smoothing=0.0)
    (-fitted.log_prob(xs).sum()).backward()
    assert torch.isfinite(fitted.table.grad).all() and fitted.table.grad.abs().max() < 1e-5


def test_kv_cache_gives_identical_tokens():
    model = make("transformer", 6, 10).eval()
    for temperature, top_k in [(1.0, None), (0.7, 3)]:
        a = model.sample(64, temperature, top_k, generator=torch.Generator().manual_seed(3), use_cache=True)
        b = model.sample(64, temperature, top_k, generator=torch.Generator().manual_seed(3), use_cache=False)
        assert torch.equal(a, b)
    # and the cached logits equal the full recomputation at every step
    x = model.sample(8, generator=torch.Generator().manual_seed(1)).clamp(min=0)
    full = model(x[:, :-1])
    cache = []
    for t in range(x.shape[1] - 1):
        step, cache = model.next_logits_cached(x, t, cache)
        assert torch.allclose(step, full[:, t], atol=1e-5)


def test_temperature_and_top_k():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    gen = torch.Generator().manual_seed(0)
    freq = lambda t: torch.bincount(t, minlength=4).float() / len(t)
    assert torch.allclose(freq(sample_next(logits, generator=gen)), torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.015)
    # temperature T samples softmax(logits / T): p^(1/T), renormalised
    p2 = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2
    assert torch.allclose(freq(sample_next(logits, temperature=0.5, generator=gen)), p2 / p2.sum(), atol=0.015)
    # top-k keeps the k most likely tokens, renormalised
    top2 = freq(sample_next(logits, top_k=2, generator=gen))
    assert top2[2:].sum() == 0 and top2[0].item() == pytest.approx(0.5 / 0.8, abs=0.015)
    # top_k=1 is greedy decoding: the argmax, every time, at any temperature
    rand = torch.randn(500, 7)
    assert torch.equal(sample_next(rand, temperature=3.0, top_k=1, generator=gen), rand.argmax(-1))
    model = make("transformer", 6, 8).eval()
    greedy = model.sample(4, top_k=1, generator=gen)
    assert (greedy == greedy[0]).all()  # same start, no randomness: every row identical
    with pytest.raises(ValueError, match="temperature"):
        sample_next(logits, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        sample_next(logits, top_k=5)


def second_order_chain(n, max_len, seed):
    """Names from a known 2nd-order Markov chain over {a, b, c}; returns rows and their exact log-probs."""
    gen = torch.Generator().manual_seed(123)  # the chain itself is fixed
    letters = (3.0 * torch.randn(4, 4, 3, generator=gen)).softmax(-1)  # (prev2, prev1) -> next letter
    probs = torch.cat([torch.full((4, 4, 1), 0.2), 0.8 * letters], dim=-1)  # end with probability 0.2
    probs[:, 0] = torch.cat([torch.zeros(1), letters[0, 0]])  # right after the start: no empty names
    gen.manual_seed(seed)
    x = torch.full((n, max_len + 2), PAD, dtype=torch.long)
    x[:, 0] = 0
    logp = torch.zeros(n, dtype=torch.float64)
    prev2 = torch.zeros(n, dtype=torch.long)
    prev1 = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    for t in range(max_len + 1):
        p = probs[prev2, prev1]
        if t == max_len:  # the models' rule: after max_len letters the end is certain
            tok = torch.zeros(n, dtype=torch.long)
            lp = torch.zeros(n, dtype=torch.float64)
        else:
            tok = torch.multinomial(p, 1, generator=gen).squeeze(1)
            lp = p.gather(1, tok[:, None]).squeeze(1).double().log()
        x[:, t + 1] = torch.where(done, PAD, tok)
        logp += torch.where(done, 0.0, lp)
        done |= tok == 0
        prev2, prev1 = prev1, tok
    return x, logp


def test_transformer_learns_a_known_chain():
    """Held-out NLL approaches the chain's own (the best any model can do); a bigram cannot get there."""
    max_len = 10
    x_train, _ = second_order_chain(6000, max_len, seed=0)
    x_test, logp_true = second_order_chain(3000, max_len, seed=1)
    optimum = -logp_true.sum().item() / count_tokens(x_test)
    bigram = CharBigram(4, max_len).fit_counts(x_train, smoothing=0.1)
    torch.manual_seed(0)
    model = CharTransformer(vocab_size=4, max_len=max_len, n_layer=2, n_head=2, n_embd=32)
    train.fit(model, x_train, steps=400, batch_size=128, lr=3e-3, lr_schedule="cosine", progress=False, verbose=False)
    nll = model.nll_per_char(x_test)
    assert bigram.nll_per_char(x_test) > optimum + 0.1  # the chain really is second order
    assert optimum - 0.02 < nll < optimum + 0.02, (nll, optimum)


def test_mlp_learns_a_known_chain():
    max_len = 10
    x_train, _ = second_order_chain(6000, max_len, seed=0)
    x_test, logp_true = second_order_chain(3000, max_len, seed=1)
    optimum = -logp_true.sum().item() / count_tokens(x_test)
    torch.manual_seed(0)
    model = CharMLP(4, max_len, context=2, embed=8, hidden=64)
    train.fit(model, x_train, steps=400, batch_size=128, lr=1e-2, lr_schedule="cosine", progress=False, verbose=False)
    assert optimum - 0.02 < model.nll_per_char(x_test) < optimum + 0.02


def test_bad_input_raises_clear_errors():
    vocab = CharVocab.from_names(NAMES)
    model = make("transformer", vocab.size, vocab.max_len)
    x = vocab.encode(NAMES)
    with pytest.raises(TypeError, match="int64"):
        model.loss(x.float())
    with pytest.raises(ValueError, match=r"\(N, 6\)"):
        model.loss(x[:, :5])
    with pytest.raises(ValueError, match="tokens must lie"):
        model.loss(x + 10)
    bad = x.clone()
    bad[0, 0] = 1
    with pytest.raises(ValueError, match="start with the boundary"):
        model.log_prob(bad)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        vocab.encode(["anna", "zed"])
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode(["bananas"])
    with pytest.raises(TypeError, match="list of names"):
        vocab.encode("anna")
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(3, temperature=-1.0)
    with pytest.raises(ValueError, match="multiple of n_head"):
        CharTransformer(vocab_size=5, max_len=4, n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="smoothing"):
        CharBigram(vocab.size, vocab.max_len).fit_counts(x, smoothing=-1)


def test_loss_is_nats_per_char_and_matches_log_prob():
    vocab = CharVocab.from_names(NAMES)
    x = vocab.encode(NAMES)
    model = make("mlp", vocab.size, vocab.max_len).eval()
    with torch.no_grad():
        per_char = -model.log_prob(x).sum() / count_tokens(x)
        assert model.loss(x).item() == pytest.approx(per_char.item(), rel=1e-6)
    # an untrained uniform bigram pays log V per character, end token included (no name reaches
    # max_len here, where the end would be certain)
    x = CharVocab(vocab.letters, max_len=6).encode(NAMES)
    uniform = CharBigram(vocab.size, 6)
    assert uniform.nll_per_char(x) == pytest.approx(math.log(vocab.size), rel=1e-6)


def test_causal_attention_passes_the_exercise_check():
    """The known-answer check of Exercise 4 holds for the library's attention, and it rejects wrong ones."""
    from course_lib.checks.lesson02 import check_causal_attention
    from course_lib.models.autoregressive import causal_attention

    check_causal_attention(causal_attention)

    def unmasked(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ v

    def unscaled(q, k, v):
        T = q.shape[-2]
        s = (q @ k.transpose(-2, -1)).masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(s, -1) @ v

    for wrong in (unmasked, unscaled):
        with pytest.raises(AssertionError):
            check_causal_attention(wrong)
    # and it agrees with PyTorch's fused kernel
    q, k, v = torch.randn(3, 2, 2, 7, 8).unbind(0)
    torch.testing.assert_close(causal_attention(q, k, v),
                               torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
    # queries at the last positions (a KV-cache step, or several new tokens at once)
    full = causal_attention(q, k, v)
    torch.testing.assert_close(causal_attention(q[..., -1:, :], k, v), full[..., -1:, :])
    torch.testing.assert_close(causal_attention(q[..., -3:, :], k, v), full[..., -3:, :])


def test_top_k_keeps_exactly_k_even_with_ties_and_top_p_keeps_the_nucleus():
    gen = torch.Generator().manual_seed(0)
    freq = lambda t, V: torch.bincount(t, minlength=V).float() / len(t)
    tied = torch.tensor([[2.0, 1.0, 1.0, 1.0, 0.0]]).repeat(5000, 1)
    kept = freq(sample_next(tied, top_k=2, generator=gen), 5)
    assert (kept > 0).sum() == 2  # not 4: the tie at the 2nd-largest logit keeps one token only
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log().repeat(20000, 1)
    # top-p: the fewest likeliest tokens with mass >= p; 0.5 + 0.3 = 0.8 >= 0.7, so two tokens
    f = freq(sample_next(logits, top_p=0.7, generator=gen), 4)
    assert f[2:].sum() == 0 and f[0].item() == pytest.approx(0.5 / 0.8, abs=0.015)
    f = freq(sample_next(logits, top_p=0.81, generator=gen), 4)
    assert f[3] == 0 and f[2] > 0
    assert torch.equal(sample_next(logits[:50], top_p=0.3, generator=gen), torch.zeros(50, dtype=torch.long))
    assert torch.allclose(freq(sample_next(logits, top_p=1.0, generator=gen), 4), p, atol=0.015)
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, top_p=0.0)
