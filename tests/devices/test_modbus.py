"""Register decoding: types, word and byte order, SunSpec "not implemented", checks."""

from __future__ import annotations

import math

import pytest

from megastation.devices.modbus import DeviceFault, checked, decode, encode
from megastation.devices.sunspec import ModelRef, decode_model, model_def


@pytest.mark.parametrize(
    ("typ", "value"),
    [("int16", -1234), ("uint16", 65000), ("int32", -70000), ("uint32", 3_000_000_000),
     ("int64", -(2**40)), ("float32", 1.5), ("float64", -2.25)],
)  # fmt: skip
@pytest.mark.parametrize("word_order", ["big", "little"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
def test_encode_decode_round_trip(typ, value, word_order, byte_order):
    regs = encode(value, typ, word_order=word_order, byte_order=byte_order)
    assert decode(regs, typ, word_order=word_order, byte_order=byte_order) == value


def test_word_order_is_which_register_comes_first():
    assert decode([0x0001, 0x0000], "uint32") == 65536
    assert decode([0x0001, 0x0000], "uint32", word_order="little") == 1
    assert decode([0x3FC0, 0x0000], "float32") == 1.5  # SDM630-style big-endian float
    assert decode([0x0000, 0x3FC0], "float32", word_order="little") == 1.5
    assert decode([0x0100], "uint16", byte_order="little") == 1


@pytest.mark.parametrize(
    ("typ", "regs"),
    [("int16", [0x8000]), ("uint16", [0xFFFF]), ("int32", [0x8000, 0]),
     ("uint32", [0xFFFF, 0xFFFF]), ("acc32", [0, 0]), ("sunssf", [0x8000]),
     ("float32", [0x7FC0, 0])],
)  # fmt: skip
def test_sunspec_not_implemented_values_read_none(typ, regs):
    assert decode(regs, typ, sunspec=True) is None
    assert decode(regs, typ) is not None or typ == "float32"  # outside SunSpec: a number


def test_checked_refuses_none_nan_inf_and_out_of_range():
    assert checked("W", 5.0, 0, 10) == 5.0
    for bad, why in ((None, "not implemented"), (math.nan, "not a finite"),
                     (math.inf, "not a finite"), (11.0, "out of range")):  # fmt: skip
        with pytest.raises(DeviceFault, match=why):
            checked("W", bad, 0, 10)


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(DeviceFault, match="does not fit"):
        encode(40000, "int16")


def test_decode_model_applies_scale_factors_and_not_implemented_sf():
    d = model_def(103)
    regs = [0] * (max(p.offset + p.size for p in d.points.values()))
    regs[0], regs[1] = 103, len(regs) - 2

    def put(name, words):
        p = d.points[name]
        regs[p.offset : p.offset + p.size] = words

    put("W", encode(1234, "int16"))
    put("W_SF", encode(-1, "int16"))
    put("Hz", [5000])
    put("Hz_SF", [0x8000])  # scale factor not implemented: the point is too
    put("WH", encode(0, "uint32"))  # acc32 0: not accumulated
    values = decode_model(ModelRef(103, 40002, len(regs) - 2), regs)
    assert values["W"] == pytest.approx(123.4)
    assert values["Hz"] is None
    assert values["WH"] is None
    assert values["W_SF"] == -1  # scale factors stay exponents
