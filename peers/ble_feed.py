"""A bleak scanner backend fed by its caller: the tests and benchmarks hand advertisements to the `ble` driver's
bleak code at the seam every real backend calls, in place of a radio this machine does not have."""

from __future__ import annotations

from typing import Any, Literal

from bleak.backends.scanner import AdvertisementData, AdvertisementDataCallback, BaseBleakScanner


class FeedScanner(BaseBleakScanner):
    """Advertisements handed in by the caller (tests, benchmarks) at the seam every backend calls:
    `create_or_update_device` then `call_detection_callbacks`, exactly as the BlueZ and Bumble backends do."""

    def __init__(self, detection_callback: AdvertisementDataCallback | None, service_uuids: list[str] | None,
                 scanning_mode: Literal["active", "passive"], **kwargs: Any) -> None:
        super().__init__(detection_callback, service_uuids)
        self.scanning = False
        self.starts = 0

    async def start(self) -> None:
        self.seen_devices = {}
        self.scanning = True
        self.starts += 1

    async def stop(self) -> None:
        self.scanning = False

    def feed(self, address: str, adv: AdvertisementData) -> None:
        if self.scanning:
            device = self.create_or_update_device(address, address, adv.local_name, None, adv)
            self.call_detection_callbacks(device, adv)
