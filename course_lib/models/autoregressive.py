"""Autoregressive models: the chain rule of probability as the architecture.

``DiscretizedAR`` is the smallest honest autoregressive model of continuous points: each
coordinate is cut into ``bins`` equal intervals on ``[low, high]``, and

    p(x_1, ..., x_D) = p(x_1) p(x_2 | x_1) ... p(x_D | x_1, ..., x_{D-1}),

each factor a categorical distribution over bins, given by one shared MLP that sees the
bins chosen so far (one-hot, zeros for those not yet chosen) and which coordinate it is
predicting. Training scores all D conditionals in one batched pass (teacher forcing);
sampling needs D passes, one after another. Inside a bin the density is uniform, so the
model also has an exact continuous density: p(bin) / width^D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..text import PAD
from .base import GenerativeModel, check_n, check_points, mlp


class DiscretizedAR(GenerativeModel):
    paradigm = "autoregressive"
    loss_unit = "nats"

    def __init__(self, dim: int = 2, bins: int = 100, low: float = -3.5, high: float = 3.5, hidden: int = 128):
        super().__init__()
        if high <= low:
            raise ValueError(f"need low < high, got low={low}, high={high}")
        self.dim, self.bins, self.low, self.high = dim, bins, low, high
        self.width = (high - low) / bins
        self.net = mlp([dim * bins + dim, hidden, hidden, bins])
        # masks[d] keeps the one-hot blocks of coordinates 0..d-1: what position d may see
        mask = torch.zeros(dim, dim * bins)
        for d in range(dim):
            mask[d, : d * bins] = 1.0
        self.register_buffer("mask", mask)
        self.register_buffer("position", torch.eye(dim))

    def to_bins(self, x: Tensor) -> Tensor:
        """Bin index of every coordinate; points outside [low, high] are clipped to the edge bins."""
        return ((x - self.low) / self.width).floor().long().clamp(0, self.bins - 1)

    def logits(self, b: Tensor) -> Tensor:
        """Logits of every conditional p(x_d | x_<d), shape (N, D, bins), in one pass."""
        onehot = F.one_hot(b, self.bins).float().flatten(1)  # (N, D*bins)
        visible = onehot[:, None, :] * self.mask  # (N, D, D*bins): position d sees only x_<d
        pos = self.position.expand(len(b), -1, -1)
        return self.net(torch.cat([visible, pos], dim=-1))

    def log_prob_bins(self, x: Tensor) -> Tensor:
        """Exact log-probability of each point's bins (a discrete distribution), shape (N,)."""
        check_points(x, self.dim, type(self).__name__)
        b = self.to_bins(x)
        logp = F.log_softmax(self.logits(b), dim=-1)
        return logp.gather(-1, b[..., None]).squeeze(-1).sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact continuous log-density: log p(bins) - D log(width) (uniform inside a bin)."""
        return self.log_prob_bins(x) - self.dim * math.log(self.width)

    def loss(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of the bins, nats per point (teacher forcing: one pass)."""
        return -self.log_prob_bins(x).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self.net

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """Draw coordinates one at a time: D network passes, each conditioned on the ones before."""
        check_n(n, type(self).__name__)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        b = torch.zeros(n, self.dim, dtype=torch.long, device=self.mask.device)
        for d in range(self.dim):
            onehot = F.one_hot(b, self.bins).float().flatten(1) * self.mask[d]
            pos = self.position[d].expand(n, -1)
            logits = self.net(torch.cat([onehot, pos], dim=-1)) / temperature
            b[:, d] = torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(-1)
        jitter = torch.rand(n, self.dim, device=b.device)
        return self.low + (b.float() + jitter) * self.width


# ----------------------------------------------------------------------------- names
#
# Three models of character sequences with one interface (CharModel): a bigram table of
# counts, an MLP over a fixed window of characters (Bengio et al., 2003), and a small causal
# transformer with a KV cache. Data are rows made by course_lib.text.CharVocab.encode:
# [start, c_1, ..., c_L, end, PAD, ...], where start = end = token 0 and PAD = -1.


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """One token per row from softmax(logits / temperature), among the top_k largest only."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}; "
                         "use top_k=1 for greedy decoding")
    logits = logits / temperature
    if top_k is not None:
        V = logits.shape[-1]
        if not isinstance(top_k, int) or not 1 <= top_k <= V:
            raise ValueError(f"top_k must be an int in 1..{V} (the vocabulary), got {top_k!r}")
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    if generator is not None and generator.device != probs.device:  # a CPU generator, a GPU model
        token = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return token.squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class CharModel(GenerativeModel):
    """p(name) = prod_t p(c_t | c_<t), end token included: what all three models share.

    A subclass gives ``forward(x) -> logits``: for inputs (N, T), the logits (N, T, V) of
    the next token at every position, each computed from tokens 0..t only. ``context`` is
    how many tokens back a prediction looks (1 for a bigram). After ``max_len`` letters the
    end token is certain, so the model is a normalised distribution over all names of at
    most ``max_len`` letters.
    """

    paradigm = "autoregressive"
    loss_unit = "nats/char"
    context: int

    def __init__(self, vocab_size: int, max_len: int):
        super().__init__()
        if vocab_size < 2 or max_len < 1:
            raise ValueError(f"need vocab_size >= 2 and max_len >= 1, got {vocab_size}, {max_len}")
        self.vocab_size, self.max_len = vocab_size, max_len
        end_only = torch.full((vocab_size,), float("-inf"))
        end_only[0] = 0.0  # logits that make the end token certain (after max_len letters)
        self.register_buffer("end_only", end_only, persistent=False)

    def check(self, x: Tensor) -> None:
        """Raise a clear error unless ``x`` holds encoded rows this model can score."""
        who = type(self).__name__
        if not isinstance(x, Tensor) or x.dtype != torch.long:
            got = getattr(x, "dtype", type(x).__name__)
            raise TypeError(f"{who} expects int64 token rows from CharVocab.encode, got {got}")
        if x.dim() != 2 or x.shape[1] != self.max_len + 2:
            raise ValueError(f"{who} expects rows of shape (N, {self.max_len + 2}) "
                             f"(max_len={self.max_len}), got {tuple(x.shape)}; "
                             "encode with a CharVocab of the same max_len")
        if x.numel() and (x.min() < PAD or x.max() >= self.vocab_size):
            raise ValueError(f"{who}: tokens must lie in 0..{self.vocab_size - 1} "
                             "(or PAD = -1 after the end)")
        if x.numel() and (x[:, 0] != 0).any():
            raise ValueError(f"{who}: every row must start with the boundary token 0")

    def token_log_probs(self, x: Tensor) -> Tensor:
        """log p(x[t+1] | x[0..t]) at every position, (N, max_len + 1); 0 at padding.

        One pass over whole rows (teacher forcing): the true prefix is the input everywhere.
        """
        self.check(x)
        inputs, targets = x[:, :-1].clamp(min=0), x[:, 1:]
        logits = self(inputs)
        last = self.end_only.expand(len(x), 1, -1)  # after max_len letters: the end, surely
        logits = torch.cat([logits[:, :-1], last], dim=1)
        logp = F.log_softmax(logits, dim=-1)
        logp = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)
        return torch.where(targets != PAD, logp, torch.zeros_like(logp))

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-probability of each name, end token included, in nats; shape (N,)."""
        return self.token_log_probs(x).sum(1)

    def loss(self, x: Tensor) -> Tensor:
        """Mean negative log-likelihood per predicted token (letters and ends): nats/char."""
        return -self.token_log_probs(x).sum() / (x[:, 1:] != PAD).sum()

    @torch.no_grad()
    def nll_per_char(self, x: Tensor, batch_size: int = 4096) -> float:
        """NLL in nats per character (each name's end token counts as one), in eval() mode."""
        was_training = self.training
        self.eval()
        total = 0.0
        for i in range(0, len(x), batch_size):
            total -= self.log_prob(x[i : i + batch_size].to(self.device)).double().sum().item()
        self.train(was_training)
        return total / int((x[:, 1:] != PAD).sum())

    @property
    def sampling_network(self) -> nn.Module:
        return self

    def next_logits(self, x: Tensor, t: int, state=None):
        """Logits of token t + 1 from x[:, :t + 1] (only the last ``context`` tokens matter)."""
        window = x[:, max(0, t + 1 - self.context) : t + 1]
        return self(window)[:, -1], state

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """n names as encoded rows (CharVocab.decode reads them), one token at a time."""
        return self.generate(n, temperature, top_k, generator, self.next_logits)

    def generate(self, n: int, temperature: float, top_k: int | None, generator, step):
        """The sampling loop; ``step(x, t, state)`` gives the logits of token t + 1."""
        check_n(n, type(self).__name__)
        x = torch.full((n, self.max_len + 2), PAD, dtype=torch.long, device=self.device)
        x[:, 0] = 0
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        state = None
        for t in range(self.max_len + 1):
            logits, state = step(x.clamp(min=0), t, state)
            if t == self.max_len:  # after max_len letters the end token is certain
                logits = self.end_only.expand_as(logits)
            token = sample_next(logits, temperature, top_k, generator)
            x[:, t + 1] = torch.where(done, PAD, token)
            done |= token == 0
            if done.all():
                break
        return x


class CharBigram(CharModel):
    """p(c_t | c_<t) = p(c_t | c_{t-1}): a V x V table of logits, counted or trained."""

    context = 1

    def __init__(self, vocab_size: int, max_len: int):
        super().__init__(vocab_size, max_len)
        self.table = nn.Parameter(torch.zeros(vocab_size, vocab_size))  # row: previous token

    def forward(self, x: Tensor) -> Tensor:
        return self.table[x]

    @staticmethod
    def count(x: Tensor, vocab_size: int) -> Tensor:
        """counts[a, b] = how often token b follows token a in the encoded rows.

        The last column is left out: an end token there (after max_len letters) is certain,
        not predicted, so it is no evidence about p(b | a).
        """
        prev, nxt = x[:, :-2].flatten(), x[:, 1:-1].flatten()
        keep = nxt != PAD
        pairs = prev[keep] * vocab_size + nxt[keep]
        counts = torch.bincount(pairs, minlength=vocab_size**2)
        return counts.reshape(vocab_size, vocab_size).float()

    @torch.no_grad()
    def fit_counts(self, x: Tensor, smoothing: float = 1.0) -> "CharBigram":
        """The maximum-likelihood table, (counts + smoothing) / row total; no gradient steps.

        ``smoothing`` adds that many imaginary sightings of every pair (Laplace for 1). A row
        never seen (possible only with smoothing 0) is left uniform.
        """
        if smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {smoothing}")
        self.check(x)
        counts = self.count(x.cpu(), self.vocab_size) + smoothing
        total = counts.sum(1, keepdim=True)
        probs = torch.where(total > 0, counts / total.clamp(min=1e-30), 1.0 / self.vocab_size)
        self.table.copy_(probs.log())
        return self


class CharMLP(CharModel):
    """p(c_t | c_<t) = p(c_t | last ``context`` tokens): embed, concatenate, one tanh layer."""

    def __init__(self, vocab_size: int, max_len: int, context: int = 3, embed: int = 10,
                 hidden: int = 200):
        super().__init__(vocab_size, max_len)
        if context < 1:
            raise ValueError(f"context must be at least 1 token, got {context}")
        self.context = context
        self.embed = nn.Embedding(vocab_size, embed)
        self.net = nn.Sequential(nn.Linear(context * embed, hidden), nn.Tanh(),
                                 nn.Linear(hidden, vocab_size))

    def forward(self, x: Tensor) -> Tensor:
        # windows[:, t] = tokens t-context+1 .. t; before the start: more start tokens
        padded = F.pad(x, (self.context - 1, 0), value=0)
        windows = padded.unfold(1, self.context, 1)  # (N, T, context)
        return self.net(self.embed(windows).flatten(2))


@dataclass
class TransformerConfig:
    vocab_size: int = 27
    max_len: int = 16  # longest name; the model reads at most max_len + 1 tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0


class SelfAttention(nn.Module):
    """Causal multi-head self-attention; ``past`` holds earlier positions' keys and values."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, C/H)
                   for z in self.qkv(x).split(C, dim=2))
        if past is not None:  # one new position, attending to all cached ones: no mask
            if T != 1:
                raise ValueError("with a KV cache, feed one new token at a time")
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=past is None, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, past=None):
        a, kv = self.attn(self.ln1(x), past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class CharTransformer(CharModel):
    """A small GPT over characters: token + position embeddings, causal blocks, a head."""

    def __init__(self, cfg: TransformerConfig | None = None, **overrides):
        cfg = cfg or TransformerConfig(**overrides)
        super().__init__(cfg.vocab_size, cfg.max_len)
        self.cfg, self.context = cfg, cfg.max_len + 1
        self.tok = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(cfg.max_len + 1, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size)

    def forward(self, x: Tensor, start: int = 0, cache: list | None = None) -> Tensor:
        """Logits (N, T, V) of the next token at positions start .. start + T - 1.

        With ``cache`` (a list, empty at first) each block's keys and values are kept there,
        and later calls feed only the newest token; ``start`` says where it sits.
        """
        T = x.shape[1]
        if start + T > self.cfg.max_len + 1:
            raise ValueError(f"positions up to {start + T - 1} asked for; "
                             f"the model has {self.cfg.max_len + 1}")
        positions = torch.arange(start, start + T, device=x.device)
        h = self.drop(self.tok(x) + self.pos(positions))
        pasts = cache if cache else [None] * len(self.blocks)
        present = []
        for block, past in zip(self.blocks, pasts):
            h, kv = block(h, past)
            present.append(kv)
        if cache is not None:
            cache[:] = present  # keys and values of every position so far, per block
        return self.head(self.ln_f(h))

    def next_logits_cached(self, x: Tensor, t: int, cache=None):
        """Logits of token t + 1 from token t alone; those of 0..t-1 live in ``cache``."""
        cache = [] if cache is None else cache
        return self(x[:, t : t + 1], start=t, cache=cache)[:, -1], cache

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
        """As CharModel.sample; use_cache=False recomputes the whole prefix at every step."""
        step = self.next_logits_cached if use_cache else self.next_logits
        return self.generate(n, temperature, top_k, generator, step)
