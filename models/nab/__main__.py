"""`python -m models.nab PATH`: run the project's anomaly method on a NAB-format directory, check the scorer against
the published results found there, and print NAB scores and event-level metrics beside the published detectors."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from models.nab import corpus as nab
from models.nab import detector, scorer

OURS = "equipmentAnomaly"  # our detector's name in NAB's results layout
SHOWN_FIRST = ("numenta", "windowedGaussian", "random", "null")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Entry:
    """One detector's anomaly scores on the files it covers, and the threshold per profile it is scored at."""

    name: str
    label: str
    anomaly: dict[str, scorer.FloatArray]
    thresholds: dict[str, float]


def run_ours(corpus: nab.Corpus, layouts: dict[str, scorer.Layout],
             params: detector.Params) -> tuple[dict[str, scorer.FloatArray], float]:
    scores: dict[str, scorer.FloatArray] = {}
    started = time.perf_counter()
    for name, series in corpus.series.items():
        progress(f"  {name}: {len(series.values)} rows")
        scores[name] = detector.score_series(series.values, layouts[name].probation, params)
    return scores, time.perf_counter() - started


def check_reproduction(corpus: nab.Corpus, layouts: dict[str, scorer.Layout],
                       published: dict[str, dict[str, nab.Published]]) -> list[str]:
    """Recompute every published S(t) column at that detector's thresholds.json threshold; one line per detector
    with the largest difference, plus notes on label columns that disagree with the labels file."""
    lines: list[str] = []
    notes: list[str] = []
    for det, results in published.items():
        worst, columns, missing = 0.0, 0, set()
        for name, result in results.items():
            lay = layouts[name]
            inside = (lay.window_of >= 0).astype(np.float64)
            if result.label.shape == inside.shape and np.any(result.label != inside):
                notes.append(f"  note: {det}/{name}: its label column differs from the labels file in "
                             f"{int(np.count_nonzero(result.label != inside))} rows")
            for profile, column in result.per_row.items():
                threshold = corpus.thresholds.get(det, {}).get(profile)
                cost = corpus.profiles.get(profile)
                if threshold is None or cost is None:
                    missing.add(profile)
                    continue
                ours = scorer.score_file(result.anomaly, lay, cost, threshold).per_row
                worst = max(worst, float(np.max(np.abs(ours - column))))
                columns += 1
        gap = f" (no threshold or profile for {', '.join(sorted(missing))})" if missing else ""
        lines.append(f"  {det:18s} {columns:3d} columns  largest |difference| {worst:.1e}{gap}")
    return lines + notes


def nab_scores(entry: Entry, corpus: nab.Corpus, layouts: dict[str, scorer.Layout],
               profile: str) -> tuple[float | None, float, float]:
    """(score at the entry's threshold, best score over the sweep, best threshold) for one profile."""
    cost = corpus.profiles[profile]
    files = [(entry.anomaly[name], layouts[name]) for name in entry.anomaly]
    windows = sum(len(lay.scored_windows) for _, lay in files)
    threshold = entry.thresholds.get(profile)
    at = None
    if threshold is not None:
        raw = sum(scorer.score_file(a, lay, cost, threshold).raw for a, lay in files)
        at = scorer.normalised(raw, windows, cost)
    best_threshold, best_raw = scorer.sweep(files, cost).best
    return at, scorer.normalised(best_raw, windows, cost), best_threshold


def event_metrics(entry: Entry, corpus: nab.Corpus, layouts: dict[str, scorer.Layout],
                  threshold: float) -> scorer.Events:
    total = scorer.NO_EVENTS
    for name, anomaly in entry.anomaly.items():
        total = total + scorer.events(anomaly, layouts[name], corpus.series[name].timestamps, threshold)
    return total


def show_threshold(value: float | None) -> str:
    return "n/a" if value is None else "never" if not np.isfinite(value) else f"{value:.4g}"


def print_tables(entries: list[Entry], corpus: nab.Corpus, layouts: dict[str, scorer.Layout],
                 profiles: Sequence[str]) -> None:
    print("\nNormalised NAB score on these files (null detector = 0, perfect = 100)")
    print(f"{'':28s}" + "".join(f"{p:^34s}" for p in profiles))
    print(f"{'detector':28s}" + "".join(f"{'at its threshold':>18s}{'best (sweep)':>16s}" for _ in profiles))
    for entry in entries:
        cells = []
        for profile in profiles:
            at, best, best_threshold = nab_scores(entry, corpus, layouts, profile)
            at_text = "n/a" if at is None else f"{at:.1f} @{show_threshold(entry.thresholds.get(profile))}"
            best_text = f"{best:.1f} @{show_threshold(best_threshold)}"
            cells.append(f"{at_text:>18s}{best_text:>16s}")
        share = "" if len(entry.anomaly) == len(corpus.series) else f" ({len(entry.anomaly)} files)"
        print(f"{entry.label + share:28s}" + "".join(cells))
    first = profiles[0]
    print(f"\nEvent level, no point adjustment, at each detector's {first} threshold "
          "(alarm = a run of rows at or above it; true = it overlaps a window)")
    print(f"{'detector':28s}{'alarms':>7s}{'true':>6s}{'precision':>10s}{'windows':>9s}{'recall':>8s}{'F1':>6s}"
          f"{'mean delay':>12s}{'(rows)':>8s}")
    for entry in entries:
        threshold = entry.thresholds.get(first)
        if threshold is None:
            print(f"{entry.label:28s}  no {first} threshold")
            continue
        ev = event_metrics(entry, corpus, layouts, threshold)
        delay = "-" if not ev.delay_rows else f"{ev.mean_delay_minutes:.0f} min"
        rows = "-" if not ev.delay_rows else f"{ev.mean_delay_rows:.0f}"
        print(f"{entry.label:28s}{ev.alarms:7d}{ev.true_alarms:6d}{ev.precision:10.2f}"
              f"{f'{ev.detected}/{ev.windows}':>9s}{ev.recall:8.2f}{ev.f1:6.2f}{delay:>12s}{rows:>8s}")


def write_results(directory: Path, corpus: nab.Corpus, layouts: dict[str, scorer.Layout],
                  anomaly: dict[str, scorer.FloatArray], threshold: float) -> None:
    for name, series in corpus.series.items():
        lay = layouts[name]
        per_row = {p: scorer.score_file(anomaly[name], lay, cost, threshold).per_row
                   for p, cost in corpus.profiles.items()}
        path = nab.write_results(directory, OURS, series, anomaly[name], (lay.window_of >= 0).astype(np.float64),
                                 per_row)
        progress(f"  wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.nab", description=__doc__)
    parser.add_argument("path", type=Path, help="a NAB-format directory (data/, labels/combined_windows.json, "
                        "optionally config/ and results/)")
    parser.add_argument("--profile", action="append", help="a cost profile to show (repeatable; default: all)")
    parser.add_argument("--threshold", type=float, default=detector.FIXED_THRESHOLD,
                        help=f"our detector's alarm threshold, a score in (0, 1] (default "
                        f"{detector.FIXED_THRESHOLD:.1f}: a tail probability of {detector.Params().alarm_tail}); "
                        "its hysteresis alarms at it and it is scored at it")
    parser.add_argument("--write-results", type=Path, metavar="DIR",
                        help=f"write our per-row results in NAB's results format under DIR/{OURS}/")
    args = parser.parse_args(argv)
    try:
        corpus = nab.load(args.path)
    except nab.NotNabDirectory as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not 0.0 < args.threshold <= 1.0:
        print("error: --threshold must be in (0, 1]", file=sys.stderr)
        return 2
    params = replace(detector.Params(), alarm_tail=10.0 ** (-10.0 * args.threshold))
    profiles: list[str] = args.profile or list(corpus.profiles)
    unknown = [p for p in profiles if p not in corpus.profiles]
    if unknown:
        print(f"error: unknown profile {', '.join(unknown)} (have {', '.join(corpus.profiles)})", file=sys.stderr)
        return 2
    layouts = {name: scorer.layout(s.timestamps, corpus.windows[name]) for name, s in corpus.series.items()}
    rows = sum(len(s.values) for s in corpus.series.values())
    windows = sum(len(lay.scored_windows) for lay in layouts.values())
    progress(f"running {OURS} on {len(corpus.series)} files")
    ours, elapsed = run_ours(corpus, layouts, params)
    found = corpus.detectors()
    order = [d for d in SHOWN_FIRST if d in found] + [d for d in found if d not in SHOWN_FIRST and d != OURS]
    published: dict[str, dict[str, nab.Published]] = {}
    for det in order:
        progress(f"reading published results of {det}")
        try:
            published[det] = corpus.published(det)
        except nab.NotNabDirectory as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    published = {det: results for det, results in published.items() if results}

    print(f"NAB-format directory {args.path}: {len(corpus.series)} files, {rows} rows, {windows} windows")
    print(f"our detector ({OURS}): {elapsed:.2f} s for all files ({1e6 * elapsed / max(rows, 1):.1f} us a row)")
    if published:
        print("\nScorer check: published S(t) columns recomputed at each detector's thresholds.json threshold")
        for line in check_reproduction(corpus, layouts, published):
            print(line)
    entries = [Entry(OURS, f"ours (fixed {args.threshold:.3g})", ours, dict.fromkeys(profiles, args.threshold))]
    entries += [Entry(det, det, {n: r.anomaly for n, r in results.items()}, corpus.thresholds.get(det, {}))
                for det, results in published.items()]
    print_tables(entries, corpus, layouts, profiles)
    print("\nat its threshold: ours at the fixed threshold above, chosen from the likelihood's meaning; published "
          "detectors at NAB's\nthresholds.json (NAB's optimum over its whole corpus). best (sweep): the threshold "
          "NAB's optimiser would pick on\nthese files alone, for every detector alike (optimistic: tuned on the "
          "data it is scored on).")
    if args.write_results:
        write_results(args.write_results, corpus, layouts, ours, args.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
