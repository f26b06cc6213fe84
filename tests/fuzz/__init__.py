"""Fuzz targets: every parser of untrusted bytes or documents, run by hypothesis against its documented contract.

In the suite each target runs a short budget (`tests/fuzz/budget.py`); `make fuzz` (`python -m tests.fuzz`) runs
them, and the decoders' own any-bytes properties in their test files (`budget.DECODER_PROPERTIES`), with a long
budget in rounds and prints how many inputs each one ran.
"""
