"""Developer tools that are not part of the box: `make vendor` (vendor_ui.py)."""
