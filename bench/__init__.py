"""Benchmarks of the gateway: ingest, the twin API, the whole daemon, and OSC in -> Art-Net out on the wire;
`python -m bench` runs them all."""
