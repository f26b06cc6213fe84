"""The peers' pytest fixtures (a plugin of tests/conftest.py): `mosquitto`, a broker of the test's own, and `ola`,
olad as an Art-Net and sACN receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peers.mosquitto import Mosquitto
from peers.ola import Ola, running_olad


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as broker:
        yield broker


@pytest.fixture
def ola(tmp_path: Path) -> Iterator[Ola]:
    with running_olad(tmp_path) as peer:
        yield peer
