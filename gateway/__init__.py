"""venue-gateway: the core of the venue edge gateway (twin, store, supervisor, API). It knows no hardware."""

__version__ = "0.1.0"
