"""Autoregressive models: the chain rule of probability as the architecture.

``DiscretizedAR`` is the smallest honest autoregressive model of continuous points: each
coordinate is cut into ``bins`` equal intervals on ``[low, high]``, and

    p(x_1, ..., x_D) = p(x_1) p(x_2 | x_1) ... p(x_D | x_1, ..., x_{D-1}),

each factor a categorical distribution over bins, given by one shared MLP that sees the
bins chosen so far (one-hot, zeros for those not yet chosen) and which coordinate it is
predicting. Training scores all D conditionals in one batched pass (teacher forcing);
sampling needs D passes, one after another. Inside a bin the density is uniform, so the
model also has an exact continuous density: p(bins) / width^D inside the box [low, high]^D,
and 0 outside it (``log_prob`` returns -inf there). The training loss is the discrete NLL of
the bins; the continuous NLL is smaller by D log(1 / width) per point.
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
        """Bin index of every coordinate; points outside [low, high] are clipped to the edge bins
        (so the training loss never fails; ``log_prob`` gives such points density 0)."""
        return ((x - self.low) / self.width).floor().long().clamp(0, self.bins - 1)

    def logits(self, b: Tensor) -> Tensor:
        """Logits of every conditional p(x_d | x_<d), shape (N, D, bins), in one pass.

        Row d of the input is [one-hot bins of x_1..x_D with all but x_<d zeroed by mask[d],
        one-hot of d (``position[d]``, which conditional is asked for)].
        """
        onehot = F.one_hot(b, self.bins).float().flatten(1)  # (N, D*bins)
        visible = onehot[:, None, :] * self.mask  # (N, D, D*bins): row d sees only x_<d
        pos = self.position.expand(len(b), -1, -1)  # (N, D, D): row d says "predict x_d"
        return self.net(torch.cat([visible, pos], dim=-1))

    def log_prob_bins(self, x: Tensor) -> Tensor:
        """Exact log-probability of each point's bins (a discrete distribution), shape (N,)."""
        check_points(x, self.dim, type(self).__name__)
        b = self.to_bins(x)
        logp = F.log_softmax(self.logits(b), dim=-1)
        return logp.gather(-1, b[..., None]).squeeze(-1).sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact continuous log-density: log p(bins) - D log(width) (uniform inside a bin); -inf outside the box."""
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        log_density = self.log_prob_bins(x) - self.dim * math.log(self.width)
        return log_density.masked_fill(~inside, float("-inf"))

    def loss(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of the bins, nats per point (teacher forcing: one pass)."""
        return -self.log_prob_bins(x).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self.net

    def _check_sample_args(self, n: int, temperature: float) -> None:
        check_n(n, type(self).__name__)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """Draw coordinates one at a time: D network passes, each conditioned on the ones before."""
        self._check_sample_args(n, temperature)
        b = torch.zeros(n, self.dim, dtype=torch.long, device=self.mask.device)  # bins drawn so far
        for d in range(self.dim):
            logits = self.logits(b)[:, d] / temperature  # p(x_d | x_<d): row d sees only b[:, :d]
            b[:, d] = torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(-1)
        jitter = torch.rand(n, self.dim, device=b.device)  # uniform position inside the bin
        return self.low + (b.float() + jitter) * self.width


# ----------------------------------------------------------------------------- names
#
# Three models of character sequences with one interface (CharModel): a bigram table of
# counts, an MLP over a fixed window of characters (Bengio et al., 2003), and a small causal
# transformer with a KV cache. Data are rows made by course_lib.text.CharVocab.encode:
# [start, c_1, ..., c_L, end, PAD, ...], where start = end = token 0 and PAD = -1.


def check_sampling(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a clear error unless the arguments of ``sample_next`` make sense."""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}; "
                         "use top_k=1 for greedy decoding")
    V = logits.shape[-1]
    if top_k is not None and (not isinstance(top_k, int) or not 1 <= top_k <= V):
        raise ValueError(f"top_k must be an int in 1..{V} (the vocabulary), got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p!r}")


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One index per row of ``probs`` (rows summing to 1), with ``generator`` wherever it lives."""
    if generator is not None and generator.device != probs.device:  # a CPU generator, a GPU model
        token = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return token.squeeze(-1).to(probs.device)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One token per row from softmax(logits / temperature), optionally truncated first.

    top_k keeps exactly the k likeliest tokens; top_p keeps the fewest likeliest tokens whose
    probabilities add up to at least p (the "nucleus"). Both renormalise what they keep.
    """
    check_sampling(logits, temperature, top_k, top_p)
    logits = logits / temperature  # p_tau(c) proportional to p(c) ** (1 / tau)
    if top_k is not None:
        kept = logits.topk(top_k, dim=-1).indices  # exactly k per row, even when logits tie
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, kept, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None:
        probs, order = F.softmax(logits, dim=-1).sort(dim=-1, descending=True)
        mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above each one
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, mass_before < top_p)
        logits = logits.masked_fill(~keep, float("-inf"))
    return draw(F.softmax(logits, dim=-1), generator)


class CharModel(GenerativeModel):
    """p(name) = prod_t p(c_t | c_<t), end token included: what all three models share.

    A subclass gives ``forward(x) -> logits``: for inputs (N, T), the logits (N, T, V) of
    the next token at every position, each computed from tokens 0..t only. ``context`` is
    how many tokens back a prediction looks (1 for a bigram). After ``max_len`` letters the
    end token is certain (probability 1, never predicted), so the model is a normalised
    distribution over all names of at most ``max_len`` letters.
    """

    paradigm = "autoregressive"
    loss_unit = "nats/char"
    context: int

    def __init__(self, vocab_size: int, max_len: int):
        super().__init__()
        if vocab_size < 2 or max_len < 1:
            raise ValueError(f"need vocab_size >= 2 and max_len >= 1, got {vocab_size}, {max_len}")
        self.vocab_size, self.max_len = vocab_size, max_len

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
        """log p(x[t+1] | x[0..t]) for t = 0 .. max_len - 1, shape (N, max_len); 0 at padding.

        One pass over whole rows (teacher forcing): the true prefix is the input everywhere.
        A row's last column is not scored: it can hold only the end token after max_len
        letters, which is certain (log 1 = 0), or padding.
        """
        self.check(x)
        inputs, targets = x[:, :-2], x[:, 1:-1]  # tokens 0..t predict token t + 1
        logp = F.log_softmax(self(inputs.clamp(min=0)), dim=-1)  # (N, max_len, V); padding read as 0
        logp = logp.gather(-1, targets.clamp(min=0)[..., None]).squeeze(-1)  # the true next token's
        return logp.masked_fill(targets == PAD, 0.0)  # after a name's end: nothing to predict

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
        for i in range(0, len(x), batch_size):  # float64 on the CPU (MPS has no float64)
            total -= self.log_prob(x[i : i + batch_size].to(self.device)).cpu().double().sum().item()
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
               generator: torch.Generator | None = None, top_p: float | None = None) -> Tensor:
        """n names as encoded rows (CharVocab.decode reads them), one token at a time."""
        check_n(n, type(self).__name__)
        return self.generate(n, self.next_logits, generator, temperature=temperature,
                             top_k=top_k, top_p=top_p)

    def generate(self, n: int, step, generator=None, **knobs) -> Tensor:
        """Ancestral sampling; ``step(x, t, state)`` gives the logits of token t + 1."""
        x = torch.full((n, self.max_len + 2), PAD, dtype=torch.long, device=self.device)
        x[:, 0] = 0  # the start token
        done = torch.zeros(n, dtype=torch.bool, device=self.device)
        state = None  # whatever the step keeps between calls (a KV cache, say)
        for t in range(self.max_len):
            logits, state = step(x.clamp(min=0), t, state)
            token = sample_next(logits, generator=generator, **knobs)
            x[:, t + 1] = torch.where(done, PAD, token)  # names that ended get padding
            done |= token == 0
            if done.all():
                return x
        x[:, -1] = torch.where(done, PAD, 0)  # after max_len letters the end is certain
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


def causal_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d_h), causal mask) v, for q (..., T_q, d_h) and k, v (..., T_k, d_h).

    The queries are the last T_q of the T_k positions (T_q = T_k in training; T_q = 1 for a
    sampling step with a KV cache): the query at position t may attend to positions s <= t.
    """
    T_q, T_k, d_h = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_h)  # (..., T_q, T_k): q_t . k_s / sqrt(d_h)
    s = torch.arange(T_k, device=q.device)  # position of each key
    t = torch.arange(T_k - T_q, T_k, device=q.device)[:, None]  # position of each query
    scores = scores.masked_fill(s > t, float("-inf"))  # the causal mask: no key after the query
    weights = F.softmax(scores, dim=-1)  # a_ts: each row sums to 1 over s <= t
    return weights @ v  # out_t = sum_s a_ts v_s


class SelfAttention(nn.Module):
    """Causal multi-head self-attention; ``past`` holds earlier positions' keys and values."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.n_embd % cfg.n_head:
            raise ValueError(f"n_embd ({cfg.n_embd}) must be a multiple of n_head ({cfg.n_head})")
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # W_Q, W_K, W_V of all heads in one matrix
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def split_heads(self, z: Tensor) -> Tensor:
        """(B, T, C) -> (B, H, T, C / H): each head gets its own slice of the channels."""
        B, T, C = z.shape
        return z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = (self.split_heads(z) for z in self.qkv(x).split(C, dim=2))
        if past is not None:  # KV cache: keys and values of the earlier positions, kept from before
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = causal_attention(q, k, v)  # (B, H, T, C / H)
        y = y.transpose(1, 2).reshape(B, T, C)  # the heads side by side again
        return self.drop(self.proj(y)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd), nn.Dropout(cfg.dropout))

    def forward(self, x: Tensor, past=None):
        a, kv = self.attn(self.ln1(x), past)  # mixes positions (only earlier ones)
        x = x + a  # residual: the block adds to its input
        x = x + self.mlp(self.ln2(x))  # each position on its own
        return x, kv


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

        With ``cache`` (a list, empty at first) each block's keys and values of every position
        so far are kept there, and a later call feeds only the new token(s), at ``start``.
        """
        self.check_positions(start, x.shape[1])
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        h = self.drop(self.tok(x) + self.pos(positions))  # which token, and where it sits
        kvs = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, cache[i] if cache else None)  # kv: keys, values of all positions so far
            kvs.append(kv)
        if cache is not None:
            cache[:] = kvs  # the next call starts from these
        return self.head(self.ln_f(h))

    def check_positions(self, start: int, T: int) -> None:
        if start + T > self.cfg.max_len + 1:
            raise ValueError(f"positions up to {start + T - 1} asked for; "
                             f"the model has {self.cfg.max_len + 1}")

    def next_logits_cached(self, x: Tensor, t: int, cache=None):
        """Logits of token t + 1 from token t alone: tokens 0..t-1 are in the cache already."""
        cache = [] if cache is None else cache
        return self(x[:, t : t + 1], start=t, cache=cache)[:, -1], cache

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, top_p: float | None = None,
               use_cache: bool = True) -> Tensor:
        """As CharModel.sample; use_cache=False recomputes the whole prefix at every step."""
        check_n(n, type(self).__name__)
        step = self.next_logits_cached if use_cache else self.next_logits
        return self.generate(n, step, generator, temperature=temperature, top_k=top_k, top_p=top_p)
