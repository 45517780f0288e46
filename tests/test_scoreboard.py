"""The running scoreboard of digits test NLLs: recorded per profile, printed with units."""

import math

import pytest

from course_lib import scoreboard


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    return tmp_path


def test_record_and_table(cache):
    scoreboard.record("PixelCNN", lesson=2, nats=80.0, kind="exact")
    scoreboard.record("RealNVP", lesson=4, nats=95.0, kind="upper bound")
    rows = scoreboard.load()
    assert rows["PixelCNN"]["bits_per_dim"] == pytest.approx(80.0 / (64 * math.log(2)))
    text = scoreboard.table()
    assert text.index("PixelCNN") < text.index("RealNVP")
    assert "upper bound" in text and "profile=smoke" in text
    assert "independent pixels" in text and "run lesson 3" in text  # expected, not yet run
    assert f"{64 * math.log(17):.2f}" in text  # the uniform baseline, a fact not a result
    assert (cache / "scoreboard-smoke.json").exists()
    assert scoreboard.load("cpu") == {}  # profiles never mix


def test_bad_input_is_refused(cache):
    with pytest.raises(ValueError, match="kind"):
        scoreboard.record("x", lesson=1, nats=1.0, kind="bound")
    with pytest.raises(ValueError, match="positive"):
        scoreboard.record("x", lesson=1, nats=float("nan"), kind="exact")


def test_sample_metrics_beside_likelihood(cache):
    from course_lib import evaluation as ev

    fields = dict(n=300, frechet=1.5, kernel=3.0, precision=0.9, recall=0.8, density=0.9, coverage=0.8,
                  confident=0.95, balance=0.05, copies=0.04)
    spread = {k: 0.1 for k in fields}
    scoreboard.record("PixelCNN", lesson=2, nats=80.0, kind="exact")
    scoreboard.record_samples("PixelCNN", lesson=2, mean=ev.SampleReport(**fields), spread=spread)
    scoreboard.record_samples("GAN (MLP)", lesson=7, mean=fields)
    text = scoreboard.full_table()
    gan = next(line for line in text.splitlines() if "GAN (MLP)" in line)
    assert "undefined" in gan and "1.50" in gan
    pix = next(line for line in text.splitlines() if "PixelCNN" in line)
    assert "80.00" in pix and "1.50±0.10" in pix and "exact" in pix
    assert (cache / "scoreboard-samples-smoke.json").exists()
    assert "GAN (MLP)" not in scoreboard.load()  # the likelihood table is unchanged
    with pytest.raises(ValueError, match="lacks"):
        scoreboard.record_samples("x", lesson=9, mean={"frechet": 1.0})
