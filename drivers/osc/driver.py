"""The `osc` driver: OSC in over UDP and OSC 1.1 SLIP over TCP, OSC feedback out to configured destinations.

python-osc decodes the messages and builds the packets; the bundles (drivers.osc.packets), the transports and the
scheduling are ours, because python-osc's own asyncio server sleeps until a bundle's timetag and would freeze the
loop. A bundle with a future timetag is put on `loop.call_at` and nothing else waits for it, up to `max_pending`
messages at once. Only sources on the allow list are obeyed. What a sender gets wrong is counted, every time, and
told (log line and alert) at a bounded rate: a flood of bad input costs little and fills neither log nor network.

Addresses: `/vg/preset/{name}/fire` (optional args: zone names), `/vg/effect/stop`, `/vg/blackout` (wristbands
and every DMX level to 0), `/vg/tempo ,f BPM`, `/vg/tempo/tap`, `/vg/dmx/{universe}/{channel} ,i|f` (0-255, or
0.0-1.0), `/vg/cue/arm|fire|skip ,s CUE` (the timecode cue list) and `/vg/ping` (answered with `/vg/out/pong`).
Every effect fired, from here or elsewhere, is told as `/vg/out/effect/fired ,ss PRESET EFFECT_ID` (and
`/vg/out/alert ,ss not_sent TEXT` for a transmitter that could not send it); the core's alerts (a zone near or over
its sound-level limit, an equipment anomaly) go out as `/vg/out/alert ,ss KIND TEXT` too, each zone's crowd energy
from the audience-mood model as `/vg/out/zone/{zone}/energy ,f` (0..1, every inference cycle), and what each zone
shows now (live look or effect) as `/vg/out/zone/{zone}/look ,ffff R G B INTENSITY` on change, at most
`[show.feedback] rate_hz` times a second. Routes in the configuration map any other address
pattern (a console's own cue messages) to one of these, with fixed arguments, the incoming ones, or one of them kept
(`arg`) and mapped from a range onto 0.0..1.0 (`range`: a fader's level); anything else is answered with
`/vg/out/alert ,ss KIND TEXT`.
The addresses are tables, `INBOUND` (with their handlers) and `OUTBOUND` (`drivers/osc/addresses.py`); docs/osc.md
documents each of them.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from drivers import allow
from drivers.allow import AllowList
from drivers.osc import slip
from drivers.osc.addresses import (
    ALERT,
    FIRED,
    INBOUND,
    PONG,
    ZONE_ENERGY,
    ZONE_LOOK,
    handles,
    message,
    template_has_parts,
)
from drivers.osc.packets import Malformed, TooDeep, timed_messages
from drivers.osc.routes import Route, RouteOptions
from drivers.throttle import Throttle
from gateway.driver import (
    Driver,
    DriverContext,
    EffectError,
    Fired,
    NotReady,
    Problem,
    Reading,
    UnknownPreset,
    parse_listen,
    setting,
)

READ_BATCH = 64
REFUSALS = ("bad_arguments", "bad_address", "unknown_preset", "unknown_cue")  # a message refused: counted `refused`
RECEIVE_BUFFER = 4 * 1024 * 1024  # room for bursts from a console while a frame is being sent
ALERTS_PER_WINDOW, ALERT_WINDOW_S = 10, 10.0  # alerts of one kind about what was sent; the rest counted, not told
MALFORMED_LOG_S = 10.0  # malformed packets: a line at most this often, with the number not logged
TEXT_MAX = 300  # characters of a sender's own input (an address, its arguments) quoted in an alert

@dataclass(frozen=True)
class OscOptions:
    listen: str = "0.0.0.0:9000"
    tcp: bool = True  # OSC 1.1: SLIP-framed packets over TCP on the same port
    allow: list[str] = field(default_factory=lambda: ["127.0.0.0/8"])  # networks whose messages are obeyed
    destinations: list[str] = field(default_factory=list)  # "host:port" that get /vg/out/... feedback
    zone_looks: bool = True  # what each zone shows to the destinations (/vg/out/zone/{zone}/look)
    routes: list[RouteOptions] = field(default_factory=list)
    horizon_s: float = setting(60.0, min=0, max=3600)  # a bundle timed further ahead is refused
    max_pending: int = setting(1024, min=0, max=65536)  # timed messages waiting at once; more are refused

    def problems(self) -> list[Problem]:
        out = []
        for key in ("listen",):
            try:
                parse_listen(self.listen)
            except ValueError as exc:
                out.append(Problem(key, str(exc)))
        out.extend(allow.problems(self.allow))
        for i, dest in enumerate(self.destinations):
            try:
                parse_listen(dest)
            except ValueError:
                out.append(Problem(f"destinations[{i}]", f"{dest!r} is not host:port"))
        return out


class OscDriver(Driver[OscOptions]):
    Options = OscOptions

    def __init__(self, ctx: DriverContext, options: OscOptions) -> None:
        super().__init__(ctx, options)
        self.counts: Counter[str] = Counter()
        self._allow = AllowList(options.allow)  # the answer per source address, remembered
        self._routes = [Route(i, r) for i, r in enumerate(options.routes)]
        # Addresses without parts are looked up, the others matched in turn.
        self._exact = {a.template: h for a, h in INBOUND if not template_has_parts(a.template)}
        self._patterns = [(a.regex(), h) for a, h in INBOUND if template_has_parts(a.template)]
        self._destinations = [parse_listen(d) for d in options.destinations]
        self._udp: socket.socket | None = None
        self._tcp: asyncio.Server | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._told: dict[str, Throttle] = {}  # alert kind -> how often it may be told
        self._malformed_lines = Throttle(1, MALFORMED_LOG_S)
        self._clients: set[asyncio.StreamWriter] = set()
        self._undo: list[Callable[[], Any]] = []  # what attach registered
        self._undo_poll: Callable[[], Any] | None = None

    async def start(self) -> None:
        host, port = parse_listen(self.options.listen)
        loop = asyncio.get_running_loop()
        try:
            udp = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            udp.setblocking(False)
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            udp.bind((host, port))
            self._udp = udp
            loop.add_reader(udp.fileno(), self._readable)
            self._undo_poll = self.ctx.frames.poll_before(self._readable)
            if self.options.tcp:
                self._tcp = await asyncio.start_server(self._tcp_client, host, port)
        except OSError as exc:
            await self.stop()
            raise NotReady(f"cannot listen for OSC on {self.options.listen}: {exc.strerror or exc}") from None
        self.ctx.log.info("OSC on udp%s %s", "+tcp" if self.options.tcp else "", self.options.listen)

    def attach(self) -> None:
        super().attach()
        self._undo = [self.ctx.show.on_fire(self._fired),
                      self.ctx.on_alert(lambda kind, text, doc: self.tell(kind, text)),
                      self.ctx.on_readings(self._readings)]

    def detach(self) -> None:
        for undo in self._undo:
            undo()
        self._undo = []
        super().detach()

    async def run(self) -> None:
        """Each zone's look to the destinations as it changes; otherwise everything happens as it arrives."""
        if self._destinations and self.options.zone_looks:
            await self.ctx.show.looks.follow(self._zone_looks)
        await asyncio.Future()

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for client in list(self._clients):  # a stopped driver obeys nobody: close the open connections too
            client.close()
        if self._undo_poll is not None:
            self._undo_poll()
            self._undo_poll = None
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not self._allow.allows(peer[0]):  # refused before a byte of it is read
            self.counts["not_allowed"] += 1
            writer.close()
            return
        decoder = slip.Decoder()
        self._clients.add(writer)
        try:
            while data := await reader.read(65536):
                for packet in decoder.feed(data):
                    self.packet(packet, peer[0])
        except ConnectionError:
            pass
        finally:
            self._clients.discard(writer)
            self.counts["slip_dropped"] += decoder.dropped
            writer.close()

    # -- what arrives ----------------------------------------------------------------------------------
    def _readable(self) -> None:
        """Take up to a batch of datagrams per wake-up: one per loop pass (what asyncio's datagram transport
        does) handles a third of the messages a second that this does. The frame clock calls it too, at the start of
        every frame, so a message that arrived before the slot is in that frame however busy the loop was. What the
        batch set in DMX universes goes out (on change) when it ends: one frame for the whole batch."""
        udp = self._udp
        if udp is None:
            return
        try:
            for _ in range(READ_BATCH):
                try:
                    data, addr = udp.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # e.g. ICMP port unreachable from a feedback destination: nothing to read
                    return
                self.packet(data, addr[0])
        finally:  # the DMX outputs send what the batch set now, before what the loop has queued behind it
            self.ctx.dmx.tell_now()

    def packet(self, data: bytes, source: str) -> None:
        """One OSC packet (a message or a bundle) from `source`."""
        if not self._allow.allows(source):
            self.counts["not_allowed"] += 1
            return
        now = time.time()
        try:
            timed = timed_messages(data, now)
        except Malformed as exc:
            if isinstance(exc, TooDeep):
                self.counts["too_deep"] += 1
            else:
                self.counts["malformed"] += 1
            if (held := self._malformed_lines(time.monotonic())) is not None:
                self.ctx.log.info("OSC malformed: %d bytes from %s: %s%s", len(data), source, exc,
                                  f" ({held} more malformed packets not logged)" if held else "")
            return
        for at, msg in timed:
            delay = at - now
            if delay <= 0.0005:
                self.handle(msg.address, list(msg.params))
            elif delay > self.options.horizon_s:
                self.counts["beyond_horizon"] += 1
                self.alert("beyond_horizon", f"{msg.address} is timed {delay:.0f} s ahead "
                                              f"(at most {self.options.horizon_s:.0f} s)")
            elif len(self._timers) >= self.options.max_pending:
                self.counts["pending_full"] += 1
                self.alert("pending_full", f"{msg.address} is timed {delay:.0f} s ahead and "
                                            f"{self.options.max_pending} timed messages are waiting already")
            else:  # monotonic time from here: a wall-clock step does not move it
                self.counts["scheduled"] += 1
                self._schedule(delay, msg.address, list(msg.params))

    def _schedule(self, delay: float, address: str, args: list[Any]) -> None:
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self.handle(address, args)

        timer = loop.call_at(loop.time() + delay, fire)
        self._timers.add(timer)

    def handle(self, address: str, args: list[Any]) -> None:
        self.counts["received"] += 1
        for route in self._routes:
            if route.regex.match(address):
                mapped = route.map(args)
                if mapped is None:  # refused, never clamped, and the sender told which route
                    self.alert("bad_arguments", f"{address}: {route.label}; got {_listed(args)}")
                    return
                address, args = route.to, mapped
                self.counts["routed"] += 1
                break
        try:
            self._dispatch(address, args)
        except UnknownPreset as exc:
            self.alert("unknown_preset", str(exc))
        except (EffectError, TypeError, ValueError) as exc:
            self.alert("bad_arguments", f"{address}: {exc}")

    def _dispatch(self, address: str, args: list[Any]) -> None:
        handler = self._exact.get(address)
        if handler is not None:
            handler(self, (), args)
            return
        for regex, handler in self._patterns:
            if match := regex.match(address):
                handler(self, match.groups(), args)
                return
        self.counts["unknown"] += 1
        self.alert("unknown_address", address)

    # -- the addresses it obeys (INBOUND) ----------------------------------------------------------------
    @handles("/vg/dmx/{universe}/{channel}", ",i", ",f")
    def _on_dmx(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self._dmx(int(parts[0]), int(parts[1]), args)

    @handles("/vg/preset/{name}/fire", ",", ",s...")
    def _on_preset(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self.ctx.show.fire(parts[0], zones=[str(a) for a in args] or None)

    @handles("/vg/effect/stop", ",")
    def _on_stop(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self.ctx.show.stop()

    @handles("/vg/blackout", ",")
    def _on_blackout(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self.ctx.show.stop()
        self.ctx.dmx.blackout()

    @handles("/vg/tempo", ",f", ",i")
    def _on_tempo(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self.ctx.show.set_tempo(float(args[0]) if args else 0.0)

    @handles("/vg/tempo/tap", ",")
    def _on_tap(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self.ctx.show.tap()

    @handles("/vg/cue/arm", ",s")
    def _on_cue_arm(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self._cue("arm", args)

    @handles("/vg/cue/fire", ",s")
    def _on_cue_fire(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self._cue("fire", args)

    @handles("/vg/cue/skip", ",s")
    def _on_cue_skip(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self._cue("skip", args)

    @handles("/vg/ping", ",")
    def _on_ping(self, parts: tuple[str, ...], args: list[Any]) -> None:
        self.send(PONG.template)

    def _fired(self, fired: Fired) -> None:
        self.send(FIRED.template, fired.preset or fired.effect.kind, fired.effect_id)
        for name, status in fired.not_sent().items():
            self.alert("not_sent", f"effect {fired.effect_id}: {name} {status}")

    def _cue(self, action: str, args: list[Any]) -> None:
        """Arm, fire or skip a cue of the cue list by its id; a cue the list does not have is told `unknown_cue`,
        what the show refuses (a cue fired too soon after the last effect in its zones) `bad_arguments`."""
        if len(args) != 1 or not isinstance(args[0], str):
            raise ValueError(f"takes one string, a cue's id; got {_listed(args)}")
        cues = self.ctx.show.cues
        try:
            {"arm": cues.arm, "fire": cues.fire, "skip": cues.skip}[action](args[0])
        except UnknownPreset:
            raise
        except LookupError as exc:  # the cue list's UnknownCue
            self.alert("unknown_cue", f"/vg/cue/{action}: {exc}")

    def _dmx(self, universe: int, channel: int, args: list[Any]) -> None:
        value = args[0] if args else None
        if isinstance(value, float) and 0.0 <= value <= 1.0:
            value = round(value * 255)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255 or len(args) != 1:
            # One rule for every argument that is not a level: refused, never clamped, and the sender told.
            self.alert("bad_arguments", f"/vg/dmx/{universe}/{channel} takes one int (0-255) or float (0-1); "
                                         f"got {_listed(args)}")
            return
        try:
            self.ctx.dmx.set_channel(universe, channel, value)
        except (KeyError, ValueError) as exc:
            self.alert("bad_address", str(exc).strip("'\""))

    # -- what goes out ---------------------------------------------------------------------------------
    def send(self, address: str, *args: Any) -> None:
        if self._udp is None:
            return
        payload = message(address, *args)
        for destination in self._destinations:
            try:
                self._udp.sendto(payload, destination)
            except OSError:  # a full send buffer or an unreachable console: feedback is best effort
                self.counts["send_errors"] += 1
                continue
            self.counts["sent"] += 1

    def _zone_looks(self, looks: dict[str, Any]) -> None:
        """The zones whose look changed (the show's ZoneLook: colour 0..1 at full intensity, intensity 0..1)."""
        for zone, look in looks.items():
            self.send(ZONE_LOOK.template.format(zone=zone), *look.colour, look.intensity)

    def _readings(self, readings: Sequence[Reading], owner: str | None) -> None:
        for r in readings:  # the audience-mood model's `mood:<zone>` assets
            if r.metric == "energy" and r.asset.startswith("mood:"):
                self.send(ZONE_ENERGY.template.format(zone=r.asset[5:]), float(r.value))

    def tell(self, kind: str, text: str) -> None:
        """An alert to the log and every destination: the core's, each one, and the driver's own let through."""
        self.ctx.log.info("OSC %s: %s", kind, text)
        self.send(ALERT.template, kind, text)

    def alert(self, kind: str, text: str) -> None:
        """The driver's own alert, about what it was sent or could not do with it: at most ALERTS_PER_WINDOW of a kind
        in ALERT_WINDOW_S are told (the next one told says how many were not), what the sender sent quoted up to
        TEXT_MAX characters."""
        if kind in REFUSALS:
            self.counts["refused"] += 1
        throttle = self._told.get(kind) or self._told.setdefault(kind, Throttle(ALERTS_PER_WINDOW, ALERT_WINDOW_S))
        held = throttle(time.monotonic())
        if held is None:
            self.counts["alerts_held"] += 1
            return
        text = text if len(text) <= TEXT_MAX else text[:TEXT_MAX] + "..."
        self.tell(kind, f"{text} ({held} more {kind} alerts not told)" if held else text)

    def health(self) -> dict[str, Any]:
        return {"listen": self.options.listen, "pending_timed": len(self._timers), **self.counts}


def _listed(args: list[Any]) -> str:
    """A message's arguments as an alert quotes them, cut short: a sender may send many, or arrays within arrays."""
    text = ", ".join(repr(a)[:TEXT_MAX] for a in args[:8])
    return (text + (", ..." if len(args) > 8 else "")) or "nothing"
