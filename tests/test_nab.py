"""The NAB scorer against NAB's published per-row scores, its normalisation and threshold sweep, the event-level
metrics on hand-made cases, the detector's causality, and the `python -m models.nab` command on a NAB fixture."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from models.nab import corpus as nab
from models.nab import detector, scorer
from models.nab.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "nab"
EC2 = "realKnownCause/ec2_request_latency_system_failure.csv"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
# NAB wrote its results with Python 2's str(float): 12 significant digits, so values below 2 in magnitude are
# rounded by at most 5e-12. 1e-9 allows that and nothing else: a detection or window misplaced by one row moves
# a score by more than 1e-4.
PUBLISHED_ROUNDING = 1e-9


@pytest.fixture(scope="module")
def fixture() -> nab.Corpus:
    return nab.load(FIXTURE)


def five_minute_rows(n: int) -> NDArray[np.datetime64]:
    return np.datetime64("2024-01-01T00:00:00") + np.arange(n) * np.timedelta64(5, "m")


def test_the_scaled_sigmoid_has_nabs_anchor_points() -> None:
    s = scorer.scaled_sigmoid(np.array([-1.0, -0.5, 0.0, 1.0, 3.0, 3.01]))
    assert s[:4] == pytest.approx([0.98661, 0.84828, 0.0, -0.98661], abs=1e-5)
    assert s[4] > -1.0 and s[5] == -1.0


@pytest.mark.parametrize(("rows", "expected"), [(4032, 604), (22695, 750), (5000, 750), (4999, 749), (10, 1)])
def test_the_probationary_period_is_15_percent_capped_at_750_rows(rows: int, expected: int) -> None:
    assert scorer.probation_length(rows) == expected


@pytest.mark.parametrize("det", ["numenta", "windowedGaussian"])
@pytest.mark.parametrize("profile", PROFILES)
def test_the_scorer_reproduces_nabs_published_per_row_scores(fixture: nab.Corpus, det: str, profile: str) -> None:
    result = fixture.published(det)[EC2]
    lay = scorer.layout(fixture.series[EC2].timestamps, fixture.windows[EC2])
    assert np.array_equal(lay.window_of >= 0, result.label == 1)
    ours = scorer.score_file(result.anomaly, lay, fixture.profiles[profile], fixture.thresholds[det][profile])
    assert np.max(np.abs(ours.per_row - result.per_row[profile])) <= PUBLISHED_ROUNDING
    assert ours.raw == pytest.approx(float(result.per_row[profile].sum()), abs=1e-8)


def test_the_null_detector_normalises_to_0_and_a_perfect_one_to_100(fixture: nab.Corpus) -> None:
    lay = scorer.layout(fixture.series[EC2].timestamps, fixture.windows[EC2])
    perfect = np.zeros(lay.rows)
    perfect[lay.starts] = 1.0
    for cost in fixture.profiles.values():
        windows = len(lay.scored_windows)
        null = scorer.score_file(np.full(lay.rows, 0.5), lay, cost, 0.625).raw
        assert scorer.normalised(null, windows, cost) == 0.0
        assert scorer.normalised(scorer.score_file(perfect, lay, cost, 0.5).raw, windows, cost) == pytest.approx(100)
        assert scorer.normalised(scorer.sweep([(perfect, lay)], cost).best[1], windows, cost) == pytest.approx(100)


def test_the_sweep_gives_the_score_of_thresholding_at_every_threshold(fixture: nab.Corpus) -> None:
    rng = np.random.default_rng(7)
    ec2 = scorer.layout(fixture.series[EC2].timestamps, fixture.windows[EC2])
    stamps = five_minute_rows(3000)
    spans = [(900, 1000), (2000, 2000), (2500, 2600)]  # a one-row window too
    other = scorer.layout(stamps, [(stamps[a], stamps[b]) for a, b in spans])
    files = [(np.round(rng.random(ec2.rows) ** 8, 3), ec2), (np.round(rng.random(3000) ** 8, 3), other)]
    for cost in fixture.profiles.values():
        swept = scorer.sweep(files, cost)
        assert np.all(np.diff(swept.thresholds) < 0)
        for threshold, raw in list(zip(swept.thresholds, swept.raw, strict=True))[1::37]:
            assert raw == pytest.approx(sum(scorer.score_file(a, lay, cost, threshold).raw for a, lay in files))
        assert swept.best[1] == swept.raw.max()


def test_events_count_alarm_runs_and_windows_without_point_adjustment() -> None:
    stamps = five_minute_rows(100)
    lay = scorer.layout(stamps, [(stamps[20], stamps[29]), (stamps[60], stamps[69])], percent=0.0)
    anomaly = np.zeros(100)
    anomaly[[10, 11]] = 0.9  # one false alarm of two rows
    anomaly[18:23] = 0.8  # runs into window 1 from before it: detected at its first row
    anomaly[25] = 1.0  # a second alarm inside window 1: another true alarm, still one window
    anomaly[40] = 0.6  # a false alarm
    ev = scorer.events(anomaly, lay, stamps, 0.5)
    assert (ev.alarms, ev.true_alarms, ev.windows, ev.detected) == (4, 2, 2, 1)
    assert (ev.precision, ev.recall, ev.f1) == (0.5, 0.5, 0.5)
    assert ev.delay_rows == (0.0,) and ev.delay_minutes == (0.0,)
    anomaly[63] = 0.7  # window 2 found 3 rows in
    ev = scorer.events(anomaly, lay, stamps, 0.5)
    assert (ev.alarms, ev.true_alarms, ev.detected) == (5, 3, 2)
    assert ev.delay_rows == (0.0, 3.0) and ev.delay_minutes == (0.0, 15.0)
    assert ev.mean_delay_minutes == 7.5
    assert scorer.events(anomaly, lay, stamps, 0.95).alarms == 1  # only row 25 reaches 0.95
    nothing = scorer.events(np.zeros(100), lay, stamps, 0.5)
    assert (nothing.precision, nothing.recall, nothing.f1) == (0.0, 0.0, 0.0)


def test_events_ignore_alarms_in_the_probationary_period() -> None:
    stamps = five_minute_rows(1000)
    lay = scorer.layout(stamps, [(stamps[500], stamps[520])])  # probation: rows 0..149
    anomaly = np.zeros(1000)
    anomaly[[5, 100, 149]] = 1.0
    assert scorer.events(anomaly, lay, stamps, 0.5).alarms == 0
    anomaly[150] = 1.0
    assert scorer.events(anomaly, lay, stamps, 0.5).alarms == 1


@pytest.mark.parametrize("params", [detector.Params(), detector.Params(refit=500)], ids=["fixed", "refitted"])
def test_the_detector_is_causal(fixture: nab.Corpus, params: detector.Params) -> None:
    values = fixture.series[EC2].values
    probation = scorer.probation_length(len(values))
    scores = detector.score_series(values, probation, params)
    for t in (300, probation, 2000, 3500):
        changed = values.copy()
        changed[t:] += np.linspace(0.0, 80.0, len(values) - t)
        assert np.array_equal(detector.score_series(changed, probation, params)[:t], scores[:t])


def test_the_detector_scores_in_0_1_stays_quiet_in_probation_and_alarms_on_a_level_shift() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    values = 50 + 5 * np.sin(np.arange(n) * 2 * np.pi / 288) + rng.normal(0, 1, n)
    values[4000:] += 12
    scores = detector.score_series(values, 750)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert not scores[:750].any()
    alarms = np.flatnonzero(scores >= detector.FIXED_THRESHOLD)
    assert any(4000 <= a < 4010 for a in alarms)
    assert np.count_nonzero(alarms < 4000) <= 3  # a few false alarms over 3250 normal rows at most


def test_the_command_refuses_a_directory_that_is_not_nab(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "models.nab", str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2
    assert "not a NAB directory" in run.stderr


def test_the_command_refuses_published_results_that_do_not_match_the_data(tmp_path: Path) -> None:
    copy = tmp_path / "nab"
    shutil.copytree(FIXTURE, copy)
    results = copy / "results" / "numenta" / "realKnownCause" / f"numenta_{EC2.split('/')[1]}"
    results.write_text("\n".join(results.read_text().splitlines()[:-5]) + "\n")
    assert main([str(copy)]) == 2


def test_the_command_checks_the_published_results_and_writes_ours(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(FIXTURE), "--write-results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for det in ("numenta", "windowedGaussian"):
        line = next(x for x in out.splitlines() if x.strip().startswith(det) and "columns" in x)
        assert float(line.rsplit(" ", 1)[1]) <= PUBLISHED_ROUNDING
    assert any(x.startswith("ours (fixed 0.2)") for x in out.splitlines())
    written = tmp_path / "equipmentAnomaly" / "realKnownCause" / f"equipmentAnomaly_{EC2.split('/')[1]}"
    header, columns = nab.read_columns(written)
    assert header[:4] == ["timestamp", "value", "anomaly_score", "label"]
    assert len(columns[0]) == 4032
    assert main([str(FIXTURE), "--profile", "nonsense"]) == 2
