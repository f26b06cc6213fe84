"""The `[dashboard]` section: whether the daemon serves the page, where each of the show's zones sits on the venue
map (plan units, 0-100 across and down), and an optional floor-plan image drawn beneath them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gateway import preflight
from gateway.schema import Problem, check_slug, setting

# The floor plan is read once into memory and sent to every dashboard that opens the map: a drawing, not a photo.
MAX_FLOOR_PLAN_BYTES = 2 * 2**20
FLOOR_PLAN_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}

# Zones without a position of their own are laid out in a row across the plan's middle.
ROW_Y, ROW_H, ROW_GAP = 35.0, 30.0, 4.0


@dataclass(frozen=True)
class ZonePlace:
    """One zone's rectangle on the plan; a coordinate not given is the zone's place in the default row."""

    name: str = setting(check=check_slug)
    x: float | None = setting(None, min=0, max=100)
    y: float | None = setting(None, min=0, max=100)
    w: float | None = setting(None, min=1, max=100)
    h: float | None = setting(None, min=1, max=100)


@dataclass(frozen=True)
class Place:
    """A zone's rectangle, every coordinate resolved."""

    name: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class DashboardSection:
    # false: the daemon serves no page (/ and /ui answer 404); the API is unchanged.
    enabled: bool = True
    # A PNG, JPEG or SVG drawn beneath the zones (relative to the configuration file's directory), at most
    # MAX_FLOOR_PLAN_BYTES.
    floor_plan: str | None = None
    zones: list[ZonePlace] = field(default_factory=list)

    def problems(self) -> list[Problem]:
        out = []
        names = [z.name for z in self.zones]
        for i, name in enumerate(names):
            if name in names[:i]:
                out.append(Problem(f"zones[{i}].name", f"{name!r} is placed twice (allowed: each zone once)"))
        for i, z in enumerate(self.zones):
            for start, size in (("x", "w"), ("y", "h")):
                a, b = getattr(z, start), getattr(z, size)
                if a is not None and b is not None and a + b > 100:
                    out.append(Problem(f"zones[{i}].{size}", f"{start} + {size} is {a + b:g}, off the plan "
                                                              "(allowed: at most 100)"))
        if self.floor_plan is not None and Path(self.floor_plan).suffix.lower() not in FLOOR_PLAN_TYPES:
            out.append(Problem("floor_plan", f"{self.floor_plan!r} is not an image the page can draw (allowed: "
                                             f"{', '.join(FLOOR_PLAN_TYPES)})"))
        return out

    def zone_problems(self, show_zones: list[str]) -> list[Problem]:
        """Each zone placed is one of the show's (`show.zones`)."""
        allowed = ", ".join(show_zones) or "none: add [[show.zones]] first"
        return [Problem(f"dashboard.zones[{i}].name", f"{z.name!r} is not a zone of the show (allowed: {allowed})")
                for i, z in enumerate(self.zones) if z.name not in show_zones]

    def places(self, show_zones: list[str]) -> list[Place]:
        """Every show zone's rectangle, in the show's order."""
        given = {z.name: z for z in self.zones}
        n = max(len(show_zones), 1)
        width = (100 - ROW_GAP * (n + 1)) / n
        out = []
        for i, name in enumerate(show_zones):
            z = given.get(name, ZonePlace(name))
            out.append(Place(name, z.x if z.x is not None else round(ROW_GAP + i * (width + ROW_GAP), 2),
                             z.y if z.y is not None else ROW_Y, z.w if z.w is not None else round(width, 2),
                             z.h if z.h is not None else ROW_H))
        return out


def _kind(data: bytes, suffix: str) -> bool:
    """The file's first bytes are the type its name says."""
    if suffix == ".png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if suffix in (".jpg", ".jpeg"):
        return data.startswith(b"\xff\xd8\xff")
    return b"<svg" in data[:4096]


def read_floor_plan(path: Path) -> tuple[bytes, str]:
    """The image's bytes and media type; ValueError says what is wrong and what is allowed."""
    content_type = FLOOR_PLAN_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise ValueError(f"{path} is not an image the page can draw (allowed: {', '.join(FLOOR_PLAN_TYPES)})")
    problems = preflight.readable_file(path, "", "the floor plan")
    if problems:
        raise ValueError(problems[0].message)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FLOOR_PLAN_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"the floor plan {path} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_FLOOR_PLAN_BYTES:
        raise ValueError(f"the floor plan {path} is larger than {MAX_FLOOR_PLAN_BYTES // 2**20} MB (allowed: an "
                         "image up to that size)")
    if not _kind(data, path.suffix.lower()):
        raise ValueError(f"the floor plan {path} is not the {content_type} its name says (allowed: "
                         f"{', '.join(FLOOR_PLAN_TYPES)} files)")
    return data, content_type


def floor_plan_problems(base: Path, dashboard: DashboardSection | None) -> list[Problem]:
    """What `check-config` says of the floor plan on this box: a file that is missing, unreadable, too large or not
    the image its name says."""
    if dashboard is None or dashboard.floor_plan is None or not dashboard.enabled \
            or Path(dashboard.floor_plan).suffix.lower() not in FLOOR_PLAN_TYPES:  # (the file's own check says so)
        return []
    try:
        read_floor_plan(base / dashboard.floor_plan)
    except ValueError as exc:
        return [Problem("dashboard.floor_plan", str(exc))]
    return []
