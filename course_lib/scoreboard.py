"""The running scoreboard: every model's test NLL on the sklearn digits split, lesson by lesson.

Each lesson that scores a model on the digits test split (447 images, 64 pixels, 17 grey
levels) records its number here, and prints the table so far. The numbers are written to a
small JSON file in the cache (``data/cache/scoreboard-<profile>.json``), one per profile, so a
lesson shows the numbers that earlier lessons produced *in runs on this machine* and nothing
typed by hand. A lesson that has not been run on this machine is listed as missing, with the
lesson to run.

    from course_lib import scoreboard
    scoreboard.record("PixelCNN", lesson=2, nats=test_nll, kind="exact")
    scoreboard.show()

Lesson 9 adds the sample metrics (``record_samples``) of each model, in a second file beside the
first (``scoreboard-samples-<profile>.json``), and ``show_full`` prints both side by side: a
GAN has sample metrics and no likelihood.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from . import data, runtime

DIMS = 64  # pixels of one sklearn digit
KINDS = ("exact", "upper bound", "estimate")
# What the table expects, in the order of the book: (lesson, model). A row stays "not run yet"
# until that lesson has recorded it on this machine under the same profile.
EXPECTED = (
    (2, "PixelCNN"),
    (3, "independent pixels"),
    (4, "RealNVP"),
    (5, "VAE (-ELBO)"),
)


def _path(profile: str | None = None, kind: str = "") -> Path:
    profile = profile or runtime.get_profile()
    return data.cache_dir() / f"scoreboard-{kind}{profile}.json"


def _read(path: Path) -> dict[str, dict]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RuntimeError(f"the scoreboard file {path} is damaged ({err}); delete it and rerun the lessons") from err


def load(profile: str | None = None) -> dict[str, dict]:
    """The recorded rows of one profile (the current one by default), keyed by model name."""
    return _read(_path(profile))


def record(model: str, lesson: int, nats: float, kind: str, note: str = "", profile: str | None = None) -> dict:
    """Record a model's test negative log-likelihood on the digits split, in nats per image.

    ``kind`` says what the number is: ``"exact"`` (an autoregressive model's NLL), ``"upper
    bound"`` (a flow on dequantised data, a VAE's -ELBO) or ``"estimate"`` (a stochastic
    estimate that is neither, e.g. an importance-weighted NLL with few samples).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    if not math.isfinite(float(nats)) or nats <= 0:
        raise ValueError(f"a digits NLL must be a positive number of nats per image, got {nats!r}")
    rows = load(profile)
    row = {
        "lesson": int(lesson),
        "nats": float(nats),
        "bits_per_dim": float(nats) / (DIMS * math.log(2)),
        "kind": kind,
        "note": note,
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    rows[model] = row
    path = _path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1, sort_keys=True), encoding="utf-8")
    return row


def table(profile: str | None = None) -> str:
    """The scoreboard as text: recorded rows sorted by lesson, then the expected rows not yet run."""
    profile = profile or runtime.get_profile()
    rows = load(profile)
    lines = [
        f"digits test split (447 images, 64 pixels, 17 levels), profile={profile}",
        f"{'lesson':>6}  {'model':<28} {'nats/image':>10} {'bits/dim':>9}  kind",
        f"{'':>6}  {'uniform over 17 levels':<28} {DIMS * math.log(17):>10.2f} {math.log2(17):>9.3f}  exact",
    ]
    for name, row in sorted(rows.items(), key=lambda kv: (kv[1]["lesson"], kv[1]["nats"])):
        extra = f" ({row['note']})" if row.get("note") else ""
        lines.append(f"{row['lesson']:>6}  {name:<28} {row['nats']:>10.2f} {row['bits_per_dim']:>9.3f}  {row['kind']}{extra}")
    for lesson, name in EXPECTED:
        if name not in rows:
            lines.append(f"{lesson:>6}  {name:<28} {'--':>10} {'--':>9}  not run yet on this machine (run lesson {lesson})")
    return "\n".join(lines)


def show(profile: str | None = None) -> None:
    """Print the scoreboard of the current profile."""
    print(table(profile))


# ----------------------------------------------------------------------------- sample quality

# The sample metrics of lesson 9 (course_lib.evaluation), in the order the table prints them.
SAMPLE_METRICS = ("frechet", "kernel", "precision", "recall", "coverage", "confident", "balance", "copies")


def _samples_path(profile: str | None = None) -> Path:
    return _path(profile, kind="samples-")


def load_samples(profile: str | None = None) -> dict[str, dict]:
    """The recorded sample-metric rows of one profile, keyed by model name."""
    return _read(_samples_path(profile))


def record_samples(model: str, lesson: int, mean, spread=None, note: str = "", profile: str | None = None) -> dict:
    """Record a model's sample metrics on the digits test split (lesson 9's ``evaluation`` numbers).

    ``mean`` and ``spread`` are :class:`course_lib.evaluation.SampleReport` objects (or dicts with
    the same keys): the metrics averaged over random real sets and their standard deviation, as
    :func:`course_lib.evaluation.resampled_scores` returns them (``.mean``, ``.std``).
    """
    def as_dict(report) -> dict:
        return dict(report) if isinstance(report, dict) else {k: getattr(report, k) for k in ("n", *SAMPLE_METRICS)}

    row = {"lesson": int(lesson), "note": note, "when": time.strftime("%Y-%m-%d %H:%M"), "mean": as_dict(mean)}
    missing = [k for k in SAMPLE_METRICS if k not in row["mean"]]
    if missing:
        raise ValueError(f"the report lacks {', '.join(missing)}: pass what evaluation.resampled_scores returns (.mean)")
    if spread is not None:
        row["spread"] = as_dict(spread)
    rows = load_samples(profile)
    rows[model] = row
    path = _samples_path(profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1, sort_keys=True, allow_nan=True), encoding="utf-8")
    return row


def full_table(profile: str | None = None) -> str:
    """Likelihood and sample metrics side by side: one row per model that has either.

    A model without a likelihood (a GAN) shows "undefined"; numbers with a recorded spread show
    it after a ±. Sorted by lesson."""
    profile = profile or runtime.get_profile()
    nll, samples = load(profile), load_samples(profile)
    names = sorted(set(nll) | set(samples), key=lambda m: ((nll.get(m) or samples.get(m))["lesson"], m))
    head = f"{'lesson':>6}  {'model':<34} {'nats/image':>10} {'kind':<12}" + "".join(f"{k:>15}" for k in SAMPLE_METRICS)
    lines = [f"digits test split, profile={profile}; sample metrics: mean ± spread over random real sets", head]
    for m in names:
        lesson = (nll.get(m) or samples.get(m))["lesson"]
        if m in nll:
            like, kind = f"{nll[m]['nats']:>10.2f}", nll[m]["kind"]
        else:
            like, kind = f"{'--':>10}", "undefined"
        cells = ""
        for k in SAMPLE_METRICS:
            if m not in samples:
                cells += f"{'--':>15}"
                continue
            v, sd = samples[m]["mean"][k], samples[m].get("spread", {}).get(k)
            text = f"{v:.2f}" if k in ("frechet", "kernel") else f"{v:.3f}"
            if sd is not None and math.isfinite(sd):
                text += f"±{sd:.2f}" if k in ("frechet", "kernel") else f"±{sd:.3f}"
            cells += f"{text:>15}"
        lines.append(f"{lesson:>6}  {m:<34} {like} {kind:<12}{cells}")
    notes = [f"  {m}: {samples[m]['note']}" for m in names if m in samples and samples[m].get("note")]
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines)


def show_full(profile: str | None = None) -> None:
    """Print :func:`full_table` of the current profile."""
    print(full_table(profile))
