"""Benchmarks of the gateway: ingest, the twin API and the whole daemon; `python -m bench` runs them all."""
