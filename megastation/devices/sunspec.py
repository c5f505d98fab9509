"""SunSpec over Modbus: find the map, walk its model chain, read models with scale factors.

A SunSpec device holds "SunS" (0x5375 0x6E53) at register 40000 (or 0, or 50000), then
a chain of models, each ``ID``, ``L`` (length of the body in registers) and the body;
the chain ends with ID 0xFFFF. The point layout of each model (name, type, size, scale
factor) comes from the SunSpec Alliance's JSON definitions shipped by pysunspec2; the
Modbus I/O is our own (:class:`megastation.devices.modbus.ModbusLink`): pysunspec2's
client is synchronous, and the control loop needs asyncio reads bounded by a timeout.

Values are ``raw x 10^sf``; a point whose raw value or scale factor is "not implemented"
reads ``None``. Only a model's fixed top-level points are read (repeating groups such
as model 160's modules are not needed by the drivers).
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from dataclasses import dataclass
from typing import Any

from megastation.devices.modbus import SIZES, DeviceFault, ModbusLink, decode, encode

MARKER = [0x5375, 0x6E53]  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)
END_ID = 0xFFFF
MAX_MODELS = 100  # a chain longer than this is garbage


@dataclass(frozen=True)
class Point:
    name: str
    type: str
    offset: int  # registers from the model's ID register
    size: int
    sf: str | int | None  # name of the scale-factor point, a fixed exponent, or None
    units: str = ""
    writable: bool = False


@dataclass(frozen=True)
class ModelDef:
    id: int
    name: str
    points: dict[str, Point]


@functools.cache
def model_def(model_id: int) -> ModelDef | None:
    """The definition of a SunSpec model (pysunspec2's JSON), or None if not known."""
    path = importlib.resources.files("sunspec2") / "models" / "json" / f"model_{model_id}.json"
    if not path.is_file():
        return None
    group = json.loads(path.read_text(encoding="utf-8"))["group"]
    points: dict[str, Point] = {}
    offset = 0
    for p in group["points"]:
        size = int(p.get("size") or SIZES.get(p["type"], 1))
        points[p["name"]] = Point(
            p["name"], p["type"], offset, size, p.get("sf"), p.get("units", ""),
            p.get("access") == "RW",
        )  # fmt: skip
        offset += size
    return ModelDef(model_id, group["name"], points)


@dataclass(frozen=True)
class ModelRef:
    """A model found on a device: its ID register address and body length."""

    id: int
    address: int  # of the ID register
    length: int  # L: registers after ID and L

    @property
    def name(self) -> str:
        d = model_def(self.id)
        return d.name if d else "unknown"


async def find_base(link: ModbusLink, bases: tuple[int, ...] = BASE_ADDRESSES) -> int:
    """The address of the "SunS" marker; DeviceFault if no base holds it."""
    tried = []
    for base in bases:
        try:
            regs = await link.read(base, 2)
        except DeviceFault as exc:
            if "exception" not in str(exc):  # a timeout or a dead link: no point going on
                raise
            tried.append(f"{base}: {exc}")
            continue
        if regs == MARKER:
            return base
        tried.append(f"{base}: {regs[0]:#06x} {regs[1]:#06x}")
    raise DeviceFault("no SunSpec marker 'SunS' at " + "; ".join(tried))


async def model_chain(link: ModbusLink, base: int) -> list[ModelRef]:
    """Every model after the marker at ``base``, in order."""
    models: list[ModelRef] = []
    addr = base + 2
    for _ in range(MAX_MODELS):
        mid, length = await link.read(addr, 2)
        if mid == END_ID:
            return models
        if mid == 0 or addr + 2 + length > 65536:
            raise DeviceFault(f"SunSpec chain broken at {addr}: ID {mid}, L {length}")
        models.append(ModelRef(mid, addr, length))
        addr += 2 + length
    raise DeviceFault(f"SunSpec chain has no end marker within {MAX_MODELS} models")


def decode_model(ref: ModelRef, regs: list[int]) -> dict[str, Any]:
    """Point values of one model from its registers (``regs[0]`` is the ID register).

    Numbers are scaled (``raw x 10^sf``); "not implemented" (raw or scale factor) is
    None; strings are stripped text. Points beyond the device's model length are absent.
    """
    d = model_def(ref.id)
    if d is None:
        return {}
    raw: dict[str, Any] = {}
    for p in d.points.values():
        if p.offset + p.size > len(regs):
            continue
        chunk = regs[p.offset : p.offset + p.size]
        if p.type == "string":
            b = b"".join(w.to_bytes(2, "big") for w in chunk)
            raw[p.name] = b.split(b"\0", 1)[0].decode("latin-1").strip()
        elif p.type in SIZES and p.type not in ("pad", "ipaddr"):
            raw[p.name] = decode(chunk, p.type, sunspec=True)
    out: dict[str, Any] = {}
    for p in d.points.values():
        if p.name not in raw:
            continue
        v = raw[p.name]
        if p.sf is not None and v is not None and p.type != "sunssf":
            sf = p.sf if isinstance(p.sf, int) else raw.get(p.sf)
            v = None if sf is None else v * 10.0**sf
        out[p.name] = v
    return out


async def read_model(link: ModbusLink, ref: ModelRef) -> dict[str, Any]:
    """Read and decode one model."""
    regs = await link.read(ref.address, ref.length + 2)
    if regs[0] != ref.id:
        raise DeviceFault(f"model {ref.id} at {ref.address} now reads ID {regs[0]}: map changed")
    return decode_model(ref, regs)


async def write_point(
    link: ModbusLink, ref: ModelRef, name: str, value: float, sf: int | None = None
) -> None:
    """Write ``value`` (scaled by ``10^-sf``) to a point of a model."""
    d = model_def(ref.id)
    p = d.points[name] if d else None
    if p is None:
        raise DeviceFault(f"model {ref.id} has no point {name}")
    raw = value / 10.0**sf if sf else value
    await link.write(ref.address + p.offset, encode(raw, p.type))
