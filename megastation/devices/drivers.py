"""Modbus drivers for the device protocols of :mod:`megastation.core.devices`.

Each driver polls its device (``poll_interval_s``, in :meth:`ModbusDevice.run`, or on
demand when no poll loop runs) and answers the controller from the last good reading,
so a slow or dead device never blocks the control loop. A reading is used only after
every number in it was checked (finite, implemented, in range). A device is *faulted*
-- with a reason -- when it reports a fault itself, or when its last good reading is
older than ``stale_after_s`` (default ``3 x poll_interval_s + timeout_s``: a single lost
answer is ridden through) or it never gave one. Then:

- :class:`ModbusBattery` reads ``fault`` set and 0 kW (the controller plans without it),
  and it is asked once to go idle when it is still reachable;
- :class:`ModbusPVInverter` / :class:`PVGroup` and :class:`ModbusMeter` raise
  :class:`DeviceFault` (the controller plans PV from the forecast, and the site balance
  from the chargers).

Every poll hands a :class:`DeviceState` to ``on_reading`` (the app records it in the
store for `megastation devices` and `status`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from megastation.core.clock import Clock
from megastation.core.config import DeviceConfig, RegisterSpec
from megastation.core.devices import BatteryReading, GridReading
from megastation.devices import sunspec
from megastation.devices.modbus import DeviceFault, ModbusLink, checked, decode, encode

log = logging.getLogger(__name__)

BATTERY_MODELS = (802, 713, 714, 124)
PV_MODELS = (101, 102, 103, 111, 112, 113, 701)
METER_MODELS = (201, 202, 203, 204, 211, 212, 213, 214)
PV_NEGATIVE_TOLERANCE = 0.02  # PV down to -2 % of max_power_kw (night draw) reads 0
STORCTL_CHARGE_DISCHARGE = 3  # 124 StorCtl_Mod: both the charge and discharge limits apply


@dataclass
class DeviceState:
    """What a device showed at its latest poll (for the store and the CLI)."""

    name: str
    kind: str
    address: str
    model: str
    time: datetime  # of this poll
    reading_at: datetime | None  # of the last good reading
    values: dict[str, Any] = field(default_factory=dict)  # the last good reading
    fault: str | None = None
    simulated: bool = False


class _RegisterReader:
    """Reads the quantities of a register map (a profile or an inline map)."""

    def __init__(self, link: ModbusLink, config: DeviceConfig) -> None:
        self.link = link
        self.config = config

    async def value(self, name: str) -> float | None:
        spec = self.config.registers.get(name)
        if spec is None:
            return None
        return await self._read(name, spec)

    async def _read(self, name: str, spec: RegisterSpec) -> float:
        n = sunspec.SIZES[spec.type]
        regs = await self.link.read(spec.address, n, function=spec.function)
        raw = decode(regs, spec.type, word_order=self.config.word_order,
                     byte_order=self.config.byte_order)  # fmt: skip
        v = checked(name, raw, -math.inf, math.inf) * spec.scale
        if spec.sf_address is not None:
            sf_regs = await self.link.read(spec.sf_address, 1, function=spec.function)
            sf = decode(sf_regs, "int16", sunspec=True)
            v *= 10.0 ** checked(f"{name} scale factor", sf, -10, 10)
        return v

    async def write(self, name: str, value: float) -> None:
        spec = self.config.registers[name]
        raw = value / spec.scale
        await self.link.write(spec.address, encode(raw, spec.type, word_order=self.config.word_order,
                                                   byte_order=self.config.byte_order))  # fmt: skip


class _SunSpecReader:
    """Finds a device's SunSpec map once and reads its models."""

    def __init__(self, link: ModbusLink, config: DeviceConfig) -> None:
        self.link = link
        self.config = config
        self.base: int | None = None
        self.models: list[sunspec.ModelRef] = []

    async def discover(self) -> list[sunspec.ModelRef]:
        if self.base is None:
            bases = (
                (self.config.sunspec_base,)
                if self.config.sunspec_base is not None
                else sunspec.BASE_ADDRESSES
            )
            base = await sunspec.find_base(self.link, bases)
            self.models = await sunspec.model_chain(self.link, base)
            self.base = base
        return self.models

    def find(self, ids: tuple[int, ...]) -> dict[int, sunspec.ModelRef]:
        return {m.id: m for m in self.models if m.id in ids}

    async def read(self, ref: sunspec.ModelRef) -> dict[str, Any]:
        try:
            return await sunspec.read_model(self.link, ref)
        except DeviceFault as exc:
            if "map changed" in str(exc):
                self.base = None  # walk the chain again next time
            raise


class ModbusDevice:
    """Polling, fault and staleness shared by the drivers."""

    kind = ""

    def __init__(
        self,
        config: DeviceConfig,
        clock: Clock,
        *,
        max_power_kw: float,
        on_reading: Callable[[DeviceState], Any] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.clock = clock
        self.max_power_kw = config.max_power_kw or max_power_kw  # beyond it a reading is garbage
        self.on_reading = on_reading
        self.link = ModbusLink(config.host, config.port, config.unit_id, timeout_s=config.timeout_s)
        self.sunspec = _SunSpecReader(self.link, config) if config.model == "sunspec" else None
        self.registers = None if self.sunspec else _RegisterReader(self.link, config)
        self.values: dict[str, Any] = {}  # the last good reading
        self.good_at: datetime | None = None
        self.polled_at: datetime | None = None
        self.error: str | None = None  # of the last poll
        self.device_fault: str | None = None  # the device says it is faulted
        self._running = False
        self._poll_lock = asyncio.Lock()
        self._fault_logged: str | None = None

    # ---------------------------------------------------------------- polling

    async def _measure(self) -> tuple[dict[str, Any], str | None]:
        """One reading: checked values and a fault the device reports (or None)."""
        raise NotImplementedError

    async def poll(self) -> DeviceState:
        """Read the device once (bounded by ``timeout_s`` per request) and update its state."""
        async with self._poll_lock:
            now = self.clock.now()
            try:
                values, device_fault = await self._measure()
            except DeviceFault as exc:
                self.error = str(exc)
            except Exception as exc:  # a driver bug must not stop the poll loop
                log.exception("%s: poll failed", self.name)
                self.error = f"{type(exc).__name__}: {exc}"
            else:
                self.values, self.good_at, self.error = values, now, None
                self.device_fault = device_fault
            self.polled_at = now
            state = self.state(now)
            await self._on_fault_change(state.fault)
        if self.on_reading is not None:
            try:
                self.on_reading(state)
            except Exception as exc:
                log.warning("%s: recording the reading failed: %s", self.name, exc)
        return state

    async def _on_fault_change(self, fault: str | None) -> None:
        if fault == self._fault_logged:
            return
        if fault and not self._fault_logged:
            log.warning("device %s (%s %s) faulted: %s", self.name, self.kind,
                        self.config.address, fault)  # fmt: skip
        elif fault:
            log.debug("device %s still faulted: %s", self.name, fault)
        else:
            log.info("device %s (%s) reads again", self.name, self.kind)
        self._fault_logged = fault

    async def run(self) -> None:
        """Poll every ``poll_interval_s`` of the clock until cancelled."""
        self._running = True
        try:
            while True:
                await self.poll()
                await self.clock.sleep(self.config.poll_interval_s)
        finally:
            self._running = False
            self.link.close()

    async def _fresh(self) -> None:
        """Poll now if no poll loop runs and the last poll is a poll interval old."""
        if self._running:
            return
        now = self.clock.now()
        if (
            self.polled_at is None
            or (now - self.polled_at).total_seconds() >= self.config.poll_interval_s
        ):
            await self.poll()

    def fault(self, now: datetime | None = None) -> str | None:
        """Why the device cannot be used now, or None."""
        now = now or self.clock.now()
        if self.device_fault:
            return self.device_fault
        if self.good_at is None:
            return self.error or "no reading yet"
        age = (now - self.good_at).total_seconds()
        if age > self.config.stale_s:
            return f"stale: no good reading for {age:.0f} s ({self.error or 'no answer'})"
        return None

    def state(self, now: datetime | None = None) -> DeviceState:
        now = now or self.clock.now()
        return DeviceState(
            self.name, self.kind, self.config.address, self.config.model, now, self.good_at,
            dict(self.values), self.fault(now),
        )  # fmt: skip

    async def check(self) -> dict[str, Any]:
        """Connect once and say what was found: SunSpec models, values, fault."""
        out: dict[str, Any] = {"name": self.name, "kind": self.kind,
                               "address": self.config.address, "model": self.config.model}  # fmt: skip
        try:
            if self.sunspec is not None:
                models = await self.sunspec.discover()
                out["sunspec_base"] = self.sunspec.base
                out["models"] = [
                    {"id": m.id, "name": m.name, "address": m.address, "length": m.length}
                    for m in models
                ]
                common = self.sunspec.find((1,))
                if 1 in common:
                    c = await self.sunspec.read(common[1])
                    out["common"] = {k: c.get(k) for k in ("Mn", "Md", "Vr", "SN")}
            elif self.config.profile_description:
                out["profile"] = self.config.profile_description
        except DeviceFault as exc:
            out["fault"] = str(exc)
            out["values"] = {}
            self.link.close()
            return out
        state = await self.poll()
        out["values"] = state.values
        out["fault"] = state.fault
        out["ranges"] = self.ranges()
        self.link.close()
        return out

    def ranges(self) -> dict[str, str]:
        return {"power_kw": f"[-{self.max_power_kw:g}, {self.max_power_kw:g}]"}

    def _power_kw(self, name: str, watts: float | None, *, lo_frac: float = -1.0) -> float:
        kw = checked(name, None if watts is None else watts / 1000.0,
                     lo_frac * self.max_power_kw, self.max_power_kw)  # fmt: skip
        return kw

    async def _model(self, ids: tuple[int, ...]) -> tuple[int, dict[str, Any]]:
        """The first of ``ids`` the device has (in that order), read."""
        assert self.sunspec is not None
        await self.sunspec.discover()
        found = self.sunspec.find(ids)
        for mid in ids:
            if mid in found:
                return mid, await self.sunspec.read(found[mid])
        have = ", ".join(str(m.id) for m in self.sunspec.models) or "none"
        raise DeviceFault(f"no SunSpec model {'/'.join(map(str, ids))} (device has {have})")


# --------------------------------------------------------------------------- battery


class ModbusBattery(ModbusDevice):
    """A battery (SunSpec 802/713/714 for measurements, 124 for control; or a register map).

    SoC from 802 ``SoC``, else 713 ``SoC``, else 124 ``ChaState``; power from 802 ``W``,
    else 714 ``DCW``, else (not measured) the set point it was last given. Control by
    124: ``StorCtl_Mod`` = charge and discharge limits, ``OutWRte``/``InWRte`` the same
    power as a window (discharge P: out = P, in = -P, in % of ``WChaMax``) and
    ``InOutWRte_RvrtTms`` = ``revert_s``, so the device reverts to its own mode when
    megastation stops telling it. A register map writes ``setpoint_w``.
    """

    kind = "battery"

    def __init__(self, config: DeviceConfig, clock: Clock, **kwargs: Any) -> None:
        super().__init__(config, clock, **kwargs)
        self.setpoint_kw = 0.0  # last set point written (> 0 discharge)
        self._sign = -1.0 if config.sign == "charge_positive" else 1.0
        self._storctl_set = False
        self._hb: tuple[int, datetime] | None = None  # 802 heartbeat, when it last moved

    async def _measure(self) -> tuple[dict[str, Any], str | None]:
        fault = None
        if self.sunspec is not None:
            await self.sunspec.discover()
            found = self.sunspec.find(BATTERY_MODELS)
            if not found:
                have = ", ".join(str(m.id) for m in self.sunspec.models) or "none"
                raise DeviceFault(f"no SunSpec storage model 802/713/124 (device has {have})")
            m = {mid: await self.sunspec.read(ref) for mid, ref in found.items()}
            soc = None
            for mid, point in ((802, "SoC"), (713, "SoC"), (124, "ChaState")):
                if mid in m:
                    soc = m[mid].get(point)
                    soc_src = f"{mid} {point}"
                    break
            soc = checked(f"SoC ({soc_src})", soc, 0.0, 100.0)
            power_w = None
            for mid, point in ((802, "W"), (714, "DCW")):
                if mid in m and m[mid].get(point) is not None:
                    power_w = m[mid][point]
                    break
            if 802 in m and m[802].get("State") == 99:
                fault = "the battery reports FAULT (802 State)"
            elif 802 in m:
                fault = self._heartbeat(m[802].get("Hb"))
            if 124 in m:
                w_max = m[124].get("WChaMax")
                if w_max is not None:
                    checked("WChaMax (124)", w_max, 1.0, 10 * self.max_power_kw * 1000)
        else:
            assert self.registers is not None
            soc = checked("soc_pct", await self.registers.value("soc_pct"), 0.0, 100.0)
            power_w = await self.registers.value("power_w")
        values: dict[str, Any] = {"soc_pct": round(soc, 3)}
        if power_w is not None:
            values["power_kw"] = self._power_kw("power", self._sign * power_w)
            values["power_measured"] = True
        else:
            values["power_kw"] = self.setpoint_kw
            values["power_measured"] = False  # the set point it was given
        return values, fault

    def _heartbeat(self, hb: int | None) -> str | None:
        """802 ``Hb`` counts seconds: a value that stops moving means frozen readings."""
        now = self.clock.now()
        if hb is None:
            return None
        if self._hb is None or self._hb[0] != hb:
            self._hb = (hb, now)
            return None
        still_s = (now - self._hb[1]).total_seconds()
        if still_s > self.config.stale_s:
            return f"frozen: heartbeat (802 Hb) has not moved for {still_s:.0f} s"
        return None

    async def _on_fault_change(self, fault: str | None) -> None:
        went_bad = fault is not None and self._fault_logged is None
        await super()._on_fault_change(fault)
        if went_bad and self.good_at is not None:
            try:  # ask it to go idle if it still listens; the controller stops steering it
                await self._write_kw(0.0)
            except Exception as exc:
                log.debug("%s: idle request failed: %s", self.name, exc)

    async def read(self) -> BatteryReading:
        await self._fresh()
        now = self.clock.now()
        f = self.fault(now)
        soc = self.values.get("soc_pct", 0.0) / 100.0
        kw = 0.0 if f else float(self.values.get("power_kw", 0.0))
        return BatteryReading(soc, kw, self.good_at or now, f)

    async def set_power_kw(self, power_kw: float) -> None:
        kw = float(power_kw)
        if not math.isfinite(kw):
            raise DeviceFault(f"{self.name}: set point {power_kw!r} is not a number")
        kw = min(max(kw, -self.max_power_kw), self.max_power_kw)
        await self._write_kw(kw)
        self.setpoint_kw = kw
        if not self.values.get("power_measured", True):
            self.values["power_kw"] = kw

    async def _write_kw(self, kw: float) -> None:
        if self.sunspec is None:
            assert self.registers is not None
            if "setpoint_w" not in self.config.registers:
                raise DeviceFault(
                    f"{self.name}: not steerable (the register map has no setpoint_w)"
                )
            await self.registers.write("setpoint_w", self._sign * kw * 1000.0)
            return
        await self.sunspec.discover()
        ref = self.sunspec.find((124,)).get(124)
        if ref is None:
            raise DeviceFault(f"{self.name}: not steerable (no SunSpec model 124)")
        m = await self.sunspec.read(ref)
        w_max = checked("WChaMax (124)", m.get("WChaMax"), 1.0, 10 * self.max_power_kw * 1000)
        sf = m.get("InOutWRte_SF")
        sf = int(checked("InOutWRte_SF (124)", sf, -10, 10))
        pct = max(-100.0, min(100.0, kw * 1000.0 / w_max * 100.0))
        out_pct, in_pct = pct, -pct  # discharge P: out = P, in = -P; charge: the reverse
        d = sunspec.model_def(124)
        assert d is not None
        p = d.points
        regs = [
            *sunspec.encode(out_pct / 10.0**sf, "int16"),
            *sunspec.encode(in_pct / 10.0**sf, "int16"),
        ]
        if p["InWRte"].offset != p["OutWRte"].offset + 1:  # the model's layout, as defined
            raise DeviceFault("model 124 layout: OutWRte and InWRte not adjacent")
        await self.link.write(ref.address + p["OutWRte"].offset, regs)
        revert = m.get("InOutWRte_RvrtTms")  # None: the device has no revert timer
        if self.config.revert_s and revert is not None and revert != self.config.revert_s:
            await self.link.write(ref.address + p["InOutWRte_RvrtTms"].offset,
                                  sunspec.encode(self.config.revert_s, "uint16"))  # fmt: skip
        if not self._storctl_set or m.get("StorCtl_Mod") != STORCTL_CHARGE_DISCHARGE:
            await self.link.write(ref.address + p["StorCtl_Mod"].offset,
                                  [STORCTL_CHARGE_DISCHARGE])  # fmt: skip
            self._storctl_set = True

    def ranges(self) -> dict[str, str]:
        return {"soc_pct": "[0, 100]", **super().ranges()}


# --------------------------------------------------------------------------- PV


class ModbusPVInverter(ModbusDevice):
    """A PV inverter: SunSpec 101-103 / 111-113 / 701 ``W``, or a register map's ``power_w``."""

    kind = "pv"

    async def _measure(self) -> tuple[dict[str, Any], str | None]:
        fault = None
        if self.sunspec is not None:
            mid, m = await self._model(PV_MODELS)
            watts = m.get("W")
            if mid < 200 and m.get("St") == 7:
                fault = f"the inverter reports FAULT ({mid} St)"
            src = f"W ({mid})"
        else:
            assert self.registers is not None
            watts = await self.registers.value("power_w")
            src = "power_w"
        if watts is not None and self.config.sign == "generation_negative":
            watts = -watts
        kw = self._power_kw(src, watts, lo_frac=-PV_NEGATIVE_TOLERANCE)
        return {"power_kw": max(kw, 0.0)}, fault

    async def read_pv_kw(self) -> float:
        await self._fresh()
        f = self.fault()
        if f:
            raise DeviceFault(f"PV inverter {self.name}: {f}")
        return float(self.values["power_kw"])

    def ranges(self) -> dict[str, str]:
        lo = -PV_NEGATIVE_TOLERANCE * self.max_power_kw
        return {"power_kw": f"[{lo:g}, {self.max_power_kw:g}] (small negatives read 0)"}


class PVGroup:
    """Several PV inverters read as one PV meter: their sum. One faulted inverter faults
    the sum (a partial sum would look like a cloud to the nowcast)."""

    def __init__(self, inverters: list[ModbusPVInverter]) -> None:
        self.inverters = inverters

    async def read_pv_kw(self) -> float:
        values = await asyncio.gather(*(i.read_pv_kw() for i in self.inverters),
                                      return_exceptions=True)  # fmt: skip
        for v in values:
            if isinstance(v, BaseException):
                raise v
        return float(sum(values))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- meter


class ModbusMeter(ModbusDevice):
    """The grid meter: SunSpec 201-204 / 211-214 ``W`` (or a register map's ``power_w``, or
    ``import_w`` and ``export_w``); ``sign`` says whether the device counts import or
    export as positive."""

    kind = "meter"

    async def _measure(self) -> tuple[dict[str, Any], str | None]:
        if self.sunspec is not None:
            mid, m = await self._model(METER_MODELS)
            watts, src = m.get("W"), f"W ({mid})"
        else:
            assert self.registers is not None
            src = "power_w"
            watts = await self.registers.value("power_w")
            if "power_w" not in self.config.registers:
                imp = checked("import_w", await self.registers.value("import_w"), 0, math.inf)
                exp = checked("export_w", await self.registers.value("export_w"), 0, math.inf)
                watts = imp - exp
        if watts is not None and self.config.sign == "export_positive":
            watts = -watts
        return {"net_import_kw": self._power_kw(src, watts)}, None

    async def read(self) -> GridReading:
        await self._fresh()
        now = self.clock.now()
        f = self.fault(now)
        if f:
            raise DeviceFault(f"grid meter {self.name}: {f}")
        net = float(self.values["net_import_kw"])
        return GridReading(max(net, 0.0), max(-net, 0.0), self.good_at or now)


DRIVERS: dict[str, type[ModbusDevice]] = {
    "battery": ModbusBattery,
    "pv": ModbusPVInverter,
    "meter": ModbusMeter,
}
