"""Synchronised wristband effects over BLE advertising: the packet, the reference band."""
