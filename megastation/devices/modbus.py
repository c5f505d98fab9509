"""Modbus TCP: one connection per device, reads and writes with a timeout, value decoding.

:class:`ModbusLink` wraps pymodbus's asyncio client. Every read or write is bounded by
``timeout_s`` (connect included); whatever goes wrong -- refused, timed out, a Modbus
exception response, a dropped connection -- raises :class:`DeviceFault` with a reason an
operator can act on, and the next call reconnects.

Decoding (:func:`decode`, :func:`encode`) is pure: raw 16-bit registers in, a number out,
with the device's word order (which register of a 32/64-bit value comes first) and byte
order (within a register). In SunSpec mode the "not implemented" values give ``None``
(int16 0x8000, uint16 0xFFFF, int32 0x80000000, uint32 0xFFFFFFFF, acc32 0, float NaN);
:func:`checked` turns ``None``, NaN, infinities and out-of-range values into a
:class:`DeviceFault` naming the quantity, so no unchecked number reaches the controller.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Sequence

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

MAX_READ = 125  # registers per read request (Modbus limit)

# SunSpec "not implemented" raw values by type (acc32/acc64 0 = not accumulated)
_NOT_IMPLEMENTED = {
    "int16": 0x8000,
    "sunssf": 0x8000,
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "count": 0xFFFF,
    "int32": 0x80000000,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "acc32": 0,
    "int64": 0x8000000000000000,
    "uint64": 0xFFFFFFFFFFFFFFFF,
    "acc64": 0,
}
SIZES = {
    "int16": 1, "uint16": 1, "sunssf": 1, "enum16": 1, "bitfield16": 1, "count": 1, "pad": 1,
    "int32": 2, "uint32": 2, "acc32": 2, "float32": 2, "enum32": 2, "bitfield32": 2,
    "ipaddr": 2, "int64": 4, "uint64": 4, "acc64": 4, "float64": 4,
}  # fmt: skip
_SIGNED = {"int16", "sunssf", "int32", "int64"}
_EXC_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


class DeviceFault(Exception):
    """A device did not answer, refused, or answered garbage; ``str()`` is the reason."""


def _words_to_int(regs: Sequence[int], word_order: str, byte_order: str) -> int:
    words = list(regs) if word_order == "big" else list(reversed(regs))
    v = 0
    for w in words:
        w &= 0xFFFF
        if byte_order == "little":
            w = ((w & 0xFF) << 8) | (w >> 8)
        v = (v << 16) | w
    return v


def decode(
    regs: Sequence[int],
    typ: str,
    *,
    word_order: str = "big",
    byte_order: str = "big",
    sunspec: bool = False,
) -> float | int | None:
    """The value of ``typ`` held in ``regs`` (raw, before any scale factor).

    ``None`` when ``sunspec`` and the raw value is SunSpec's "not implemented" for the
    type (or a float is NaN).
    """
    n = SIZES[typ]
    if len(regs) < n:
        raise ValueError(f"{typ} needs {n} registers, got {len(regs)}")
    raw = _words_to_int(regs[:n], word_order, byte_order)
    if typ in ("float32", "float64"):
        fmt = ">f" if typ == "float32" else ">d"
        value = struct.unpack(fmt, raw.to_bytes(4 * n // 2, "big"))[0]
        return None if sunspec and math.isnan(value) else value
    if sunspec and _NOT_IMPLEMENTED.get(typ) == raw:
        return None
    if typ in _SIGNED and raw >= 1 << (16 * n - 1):
        raw -= 1 << (16 * n)
    return raw


def encode(
    value: float, typ: str, *, word_order: str = "big", byte_order: str = "big"
) -> list[int]:
    """Registers holding ``value`` as ``typ`` (integers rounded; out of range refused)."""
    n = SIZES[typ]
    if typ in ("float32", "float64"):
        fmt = ">f" if typ == "float32" else ">d"
        raw = int.from_bytes(struct.pack(fmt, float(value)), "big")
    else:
        iv = round(value)
        lo, hi = (
            (-(1 << (16 * n - 1)), (1 << (16 * n - 1)) - 1)
            if typ in _SIGNED
            else (0, (1 << (16 * n)) - 1)
        )
        if not lo <= iv <= hi:
            raise DeviceFault(f"{value} does not fit a {typ}")
        raw = iv & ((1 << (16 * n)) - 1)
    words = [(raw >> (16 * (n - 1 - i))) & 0xFFFF for i in range(n)]
    if byte_order == "little":
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words if word_order == "big" else list(reversed(words))


def checked(name: str, value: float | None, lo: float, hi: float) -> float:
    """``value`` as a finite float within ``[lo, hi]``, else a :class:`DeviceFault`."""
    if value is None:
        raise DeviceFault(f"{name}: not implemented by the device")
    v = float(value)
    if not math.isfinite(v):
        raise DeviceFault(f"{name}: not a finite number ({v})")
    if not lo <= v <= hi:
        raise DeviceFault(f"{name}: {v:g} out of range [{lo:g}, {hi:g}]")
    return v


class ModbusLink:
    """One Modbus TCP connection to ``host:port``, unit ``unit_id``; reconnects on demand."""

    def __init__(self, host: str, port: int, unit_id: int, *, timeout_s: float = 2.0) -> None:
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.timeout_s = timeout_s  # bound on each connect, read and write [s]
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()  # one request at a time on the connection

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}/{self.unit_id}"

    async def _connected(self) -> AsyncModbusTcpClient:
        c = self._client
        if c is not None and c.connected:
            return c
        if c is not None:
            c.close()
        c = AsyncModbusTcpClient(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        self._client = c
        try:
            ok = await asyncio.wait_for(c.connect(), self.timeout_s)
        except (TimeoutError, OSError, ModbusException) as exc:
            ok = False
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            why = "connection refused or unreachable"
        if not ok:
            c.close()
            self._client = None
            raise DeviceFault(f"cannot connect to {self.host}:{self.port} ({why})")
        return c

    async def _call(self, what: str, fn: str, *args, **kwargs):
        async with self._lock:
            c = await self._connected()
            try:
                resp = await asyncio.wait_for(
                    getattr(c, fn)(*args, device_id=self.unit_id, **kwargs), self.timeout_s + 0.5
                )
            except TimeoutError:
                self.close()
                raise DeviceFault(f"timeout after {self.timeout_s:g} s {what}") from None
            except ModbusException as exc:
                self.close()
                text = str(exc)
                if "No response" in text or "timeout" in text.lower():
                    raise DeviceFault(f"timeout after {self.timeout_s:g} s {what}") from None
                raise DeviceFault(f"{what}: {text}") from None
            except (OSError, ConnectionError) as exc:
                self.close()
                raise DeviceFault(f"{what}: connection lost ({exc})") from None
        if resp.isError():
            code = getattr(resp, "exception_code", None)
            name = _EXC_NAMES.get(code, "error") if code is not None else "error"
            raise DeviceFault(f"Modbus exception {code} ({name}) {what}")
        return resp

    async def read(self, address: int, count: int, *, function: str = "holding") -> list[int]:
        """``count`` registers from ``address`` (several requests if more than 125)."""
        fn = "read_holding_registers" if function == "holding" else "read_input_registers"
        out: list[int] = []
        a = address
        while len(out) < count:
            n = min(MAX_READ, count - len(out))
            resp = await self._call(f"reading {function} {a}+{n}", fn, a, count=n)
            regs = list(resp.registers)
            if len(regs) < n:
                raise DeviceFault(f"reading {function} {a}+{n}: got {len(regs)} registers")
            out.extend(regs[:n])
            a += n
        return out

    async def write(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from ``address``."""
        await self._call(
            f"writing {address}+{len(values)}", "write_registers", address, list(values)
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
