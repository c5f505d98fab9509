"""SunSpec devices served by pymodbus's Modbus TCP server in the test process.

:class:`SunSpecImage` lays out a SunSpec map (marker, models from pysunspec2's
definitions with every point "not implemented" until set, end marker). :class:`DeviceServer`
serves one image on 127.0.0.1 (a free port) and lets a test break it: ``mode`` =
``"timeout"`` (never answers), ``"exception"`` (Modbus exception 4, device failure).
Subclasses are live devices: :class:`BatteryServer` integrates its state of charge on
the injected clock from the power its SunSpec 124 controls command; :class:`InverterServer`
and :class:`MeterServer` publish what a callable says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from megastation.devices.modbus import _NOT_IMPLEMENTED, encode
from megastation.devices.sunspec import MARKER, model_def


class SunSpecImage:
    """Registers of a SunSpec map starting at ``base``."""

    def __init__(self, base: int, model_ids: list[int]) -> None:
        self.base = base
        self.regs: list[int] = list(MARKER)
        self.models: dict[int, int] = {}  # model id -> address of its ID register
        for mid in model_ids:
            d = model_def(mid)
            assert d is not None, mid
            body = max(p.offset + p.size for p in d.points.values())
            start = len(self.regs)
            self.models[mid] = base + start
            block = [0] * body
            block[0], block[1] = mid, body - 2
            for p in d.points.values():
                if p.name in ("ID", "L"):
                    continue
                ni = _NOT_IMPLEMENTED.get(p.type)
                if ni is not None and p.type not in ("acc32", "acc64"):
                    block[p.offset : p.offset + p.size] = encode(ni, _unsigned(p.type))
            self.regs.extend(block)
        self.regs.extend([0xFFFF, 0])

    def addr(self, model_id: int, point: str) -> int:
        d = model_def(model_id)
        return self.models[model_id] + d.points[point].offset

    def set_raw(self, model_id: int, point: str, raw: int | float | str) -> None:
        d = model_def(model_id)
        p = d.points[point]
        i = self.addr(model_id, point) - self.base
        if p.type == "string":
            b = str(raw).encode().ljust(2 * p.size, b"\0")[: 2 * p.size]
            words = [int.from_bytes(b[k : k + 2], "big") for k in range(0, len(b), 2)]
        else:
            words = encode(
                raw,
                _unsigned(p.type) if raw >= 0x8000 else p.type if p.type != "sunssf" else "int16",
            )
        self.regs[i : i + p.size] = words

    def set(self, model_id: int, point: str, value: float) -> None:
        """Set a point's value with the scale factor already in the image."""
        d = model_def(model_id)
        p = d.points[point]
        sf = 0
        if isinstance(p.sf, str):
            sf = self.get_raw(model_id, p.sf, signed=True)
        self.set_raw(model_id, point, round(value / 10.0**sf))

    def get_raw(self, model_id: int, point: str, *, signed: bool = False) -> int:
        i = self.addr(model_id, point) - self.base
        v = self.regs[i]
        return v - 0x10000 if signed and v >= 0x8000 else v


def _unsigned(typ: str) -> str:
    from megastation.devices.modbus import SIZES

    return {1: "uint16", 2: "uint32", 4: "uint64"}[SIZES[typ]]


class RawImage:
    """Plain registers from ``base`` (a device without SunSpec)."""

    def __init__(self, base: int, n: int) -> None:
        self.base = base
        self.regs = [0] * n

    def put(self, address: int, words: list[int]) -> None:
        self.regs[address - self.base : address - self.base + len(words)] = words


class DeviceServer:
    """One register image on a Modbus TCP server at 127.0.0.1:``port`` (unit 1)."""

    def __init__(self, image: SunSpecImage | RawImage) -> None:
        self.image = image
        self.mode = "ok"  # ok | timeout | exception
        self.requests = 0
        self.writes: list[tuple[int, list[int]]] = []
        self.server: ModbusTcpServer | None = None
        self.port = 0
        self._release = asyncio.Event()  # ends the requests held by "timeout"

    async def start(self) -> DeviceServer:
        dev = SimDevice(
            id=1,
            simdata=[SimData(address=self.image.base, values=self.image.regs,
                             datatype=DataType.REGISTERS)],
            action=self._action,
        )  # fmt: skip
        self.server = ModbusTcpServer([dev], address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._release.set()
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    def update(self) -> None:
        """Refresh live values before a request (subclasses)."""

    def written(self, address: int, values: list[int]) -> None:
        """A write was applied (subclasses)."""

    async def _action(self, fc, start, address, count, registers, values) -> ExcCodes | None:
        self.requests += 1
        if self.mode == "timeout":
            await self._release.wait()
            return ExcCodes.DEVICE_BUSY
        if self.mode == "exception":
            return ExcCodes.DEVICE_FAILURE
        self.update()
        if values:
            off = address - start
            self.image.regs[address - self.image.base : address - self.image.base + len(values)] = (
                list(values)
            )
            self.writes.append((address, list(values)))
            self.written(address, list(values))
            registers[off : off + len(values)] = list(values)
        n = len(self.image.regs)
        registers[:n] = self.image.regs  # the runtime serves from its own copy
        return None


def common(image: SunSpecImage, maker: str, model: str) -> None:
    image.set_raw(1, "Mn", maker)
    image.set_raw(1, "Md", model)
    image.set_raw(1, "SN", "T-0001")
    image.set_raw(1, "Vr", "1.0")


class BatteryServer(DeviceServer):
    """A battery with SunSpec 1, 124 (control) and 802 (SoC, power, state).

    Its power follows the 124 window: with ``StorCtl_Mod`` both bits set, the power
    (> 0 discharge) is the point of ``[-InWRte, OutWRte] x WChaMax`` closest to zero;
    it stops at ``soc_min``/``soc_max``. SoC integrates on ``clock``.
    """

    def __init__(self, clock: Any, *, capacity_kwh: float, max_kw: float, soc_frac: float,
                 base: int = 40000) -> None:  # fmt: skip
        image = SunSpecImage(base, [1, 124, 802])
        common(image, "TestBatt", "SIM-124")
        super().__init__(image)
        self.clock = clock
        self.capacity_kwh = capacity_kwh
        self.max_kw = max_kw
        self.soc_frac = soc_frac
        self.power_kw = 0.0
        self.setpoints: list[tuple[datetime, float]] = []  # the commanded power, in order
        self._t = clock.now()
        for point, raw in (("WChaMax_SF", 1), ("InOutWRte_SF", -2), ("ChaState_SF", -1),
                           ("InOutWRte_RvrtTms", 0), ("StorCtl_Mod", 0), ("InWRte", 10000),
                           ("OutWRte", 10000)):  # fmt: skip
            image.set_raw(124, point, raw)
        image.set(124, "WChaMax", max_kw * 1000)
        for point, raw in (("SoC_SF", -1), ("W_SF", 1), ("State", 3)):
            image.set_raw(802, point, raw)
        self.update()

    def commanded_kw(self) -> float:
        im = self.image
        if im.get_raw(124, "StorCtl_Mod") & 3 != 3:
            return 0.0
        sf = 10.0 ** im.get_raw(124, "InOutWRte_SF", signed=True)
        w_max = im.get_raw(124, "WChaMax") * 10.0 ** im.get_raw(124, "WChaMax_SF", signed=True)
        out_kw = im.get_raw(124, "OutWRte", signed=True) * sf / 100 * w_max / 1000
        in_kw = im.get_raw(124, "InWRte", signed=True) * sf / 100 * w_max / 1000
        lo, hi = -in_kw, out_kw
        return min(max(0.0, lo), hi) if lo <= hi else 0.0

    def update(self) -> None:
        now = self.clock.now()
        dt_h = (now - self._t).total_seconds() / 3600
        self._t = now
        self.soc_frac = min(1.0, max(0.0, self.soc_frac - self.power_kw * dt_h / self.capacity_kwh))
        p = self.commanded_kw()
        if (p > 0 and self.soc_frac <= 0.05) or (p < 0 and self.soc_frac >= 0.99):
            p = 0.0
        self.power_kw = p
        self.image.set(124, "ChaState", self.soc_frac * 100)
        self.image.set(802, "SoC", self.soc_frac * 100)
        self.image.set(802, "W", p * 1000)

    def written(self, address: int, values: list[int]) -> None:
        self.update()
        last = self.setpoints[-1][1] if self.setpoints else 0.0
        if abs(last - self.power_kw) > 1e-6:
            self.setpoints.append((self.clock.now(), self.power_kw))


class InverterServer(DeviceServer):
    """A three-phase PV inverter (SunSpec 1 and 103) publishing ``pv_kw()``."""

    def __init__(self, pv_kw: Callable[[], float], base: int = 40000) -> None:
        image = SunSpecImage(base, [1, 103])
        common(image, "TestPV", "SIM-103")
        super().__init__(image)
        self.pv_kw = pv_kw
        image.set_raw(103, "W_SF", 1)
        image.set_raw(103, "St", 4)  # MPPT
        self.update()

    def update(self) -> None:
        self.image.set(103, "W", self.pv_kw() * 1000)


class MeterServer(DeviceServer):
    """A three-phase meter (SunSpec 1 and 203) publishing ``net_import_kw()`` (+ import)."""

    def __init__(self, net_import_kw: Callable[[], float], base: int = 40000) -> None:
        image = SunSpecImage(base, [1, 203])
        common(image, "TestMeter", "SIM-203")
        super().__init__(image)
        self.net_import_kw = net_import_kw
        image.set_raw(203, "W_SF", 2)
        self.update()

    def update(self) -> None:
        self.image.set(203, "W", self.net_import_kw() * 1000)
