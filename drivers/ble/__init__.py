"""BLE sensing: the beacons and sensor tags heard in the venue (codecs in frames.py, the scanner driver beside it)."""
