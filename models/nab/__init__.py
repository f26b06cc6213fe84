"""The Numenta Anomaly Benchmark: its corpus layout, its scorer, and the project's anomaly method run on it."""
