"""Reads the GGUF that test_export_gguf wrote through the `gguf` package (llama.cpp's own reader) and checks every
metadata value and type, and every tensor's type, shape and values, against what the C test put in.

usage: test_export_gguf_types.py TYPES_GGUF
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import Failures, bf16_bits_to_f32, f32_to_bf16_bits, gguf_tensor_values  # noqa: E402

try:
    import gguf
except ImportError:
    print("test_export_gguf_types: the `gguf` package is missing (pip install -r tests/requirements.txt)")
    sys.exit(1)


def pattern(n):
    # tests/test_export_gguf.c: pattern(i) = ((i % 29) − 14)·0.375 + (i / 29)·0.0625, in float32
    i = np.arange(n)
    return (((i % 29) - 14).astype(np.float32) * np.float32(0.375) + (i // 29).astype(np.float32) * np.float32(0.0625))


def main():
    f = Failures("test_export_gguf_types")
    r = gguf.GGUFReader(sys.argv[1])
    V = gguf.GGUFValueType
    expect = {
        "test.u8": (V.UINT8, 200),
        "test.i8": (V.INT8, -100),
        "test.u16": (V.UINT16, 60000),
        "test.i16": (V.INT16, -30000),
        "test.u32": (V.UINT32, 4000000000),
        "test.i32": (V.INT32, -2000000000),
        "test.f32": (V.FLOAT32, float(np.float32(1e-5))),
        "test.bool_true": (V.BOOL, True),
        "test.bool_false": (V.BOOL, False),
        "test.str": (V.STRING, "gpt-oss 台語"),
        "test.u64": (V.UINT64, 18000000000000000000),
        "test.i64": (V.INT64, -9000000000000000000),
        "test.f64": (V.FLOAT64, 3.141592653589793),
    }
    for key, (typ, val) in expect.items():
        fld = r.fields.get(key)
        if not f.check(fld is not None, f"{key} missing"):
            continue
        f.check(fld.types == [typ], f"{key}: type {fld.types}, expected {typ}")
        f.check(fld.contents() == val, f"{key}: {fld.contents()!r} != {val!r}")
    arrays = {
        "test.arr_i32": (V.INT32, [1, -2, 3, -4, 2147483647]),
        "test.arr_f32": (V.FLOAT32, [0.5, -1.25, float(np.float32(1e30))]),
        "test.arr_u8": (V.UINT8, [0, 1, 254, 255]),
        "test.arr_empty": (V.UINT32, []),
        "test.arr_str": (V.STRING, ["alpha", "", "Ġhello Ċ", "台語 and 華語", "<|return|>"]),
    }
    for key, (et, val) in arrays.items():
        fld = r.fields.get(key)
        if not f.check(fld is not None, f"{key} missing"):
            continue
        f.check(fld.types[0] == V.ARRAY, f"{key}: not an array: {fld.types}")
        f.check(len(fld.types) < 2 or fld.types[1] == et, f"{key}: element type {fld.types}")
        f.check(list(fld.contents()) == val, f"{key}: {fld.contents()!r} != {val!r}")
    nul = r.fields.get("test.arr_str_nul")
    f.check(nul is not None and bytes(nul.parts[nul.data[0]]) == b"a\x00b", "string with a NUL byte")
    f.check(len(r.fields) == 3 + len(expect) + len(arrays) + 1, f"{len(r.fields)} fields (3 header pseudo-fields)")
    f.check(r.alignment == 32, f"alignment {r.alignment}")

    T = gguf.GGMLQuantizationType
    want = {
        "t.f32": (T.F32, [3, 5]),
        "t.f16": (T.F16, [7]),
        "t.bf16": (T.BF16, [4, 3]),
        "t.q8_0": (T.Q8_0, [64, 3]),
        "t.mxfp4": (T.MXFP4, [32, 3, 2]),
    }
    ts = {t.name: t for t in r.tensors}
    f.check(list(ts) == list(want), f"tensor order {list(ts)}")
    for name, (typ, ne) in want.items():
        t = ts.get(name)
        if not f.check(t is not None, f"{name} missing"):
            continue
        f.check(t.tensor_type == typ, f"{name}: type {t.tensor_type.name}")
        f.check([int(x) for x in t.shape] == ne, f"{name}: ne {list(t.shape)} != {ne}")
        f.check(t.data_offset % 32 == 0, f"{name}: data offset {t.data_offset} not aligned")
        n = int(np.prod(ne))
        got = gguf_tensor_values(t).reshape(-1)
        x = pattern(n)
        if typ == T.F32:
            f.check(np.array_equal(got, x.astype(np.float64)), f"{name}: values")
        elif typ == T.F16:
            f.check(np.array_equal(got, x.astype(np.float16).astype(np.float64)), f"{name}: values")
        elif typ == T.BF16:
            f.check(np.array_equal(got, bf16_bits_to_f32(f32_to_bf16_bits(x)).astype(np.float64)), f"{name}: values")
        elif typ == T.Q8_0:
            # ggml's reference quantizer: d = amax/127 stored as fp16, q = round(x/d). Error per element: half a
            # step, plus the fp16 rounding of d carried over up to 127 steps. The bytes must also be exactly what the
            # gguf package's own Q8_0 quantizer makes.
            b = x.reshape(-1, 32).astype(np.float64)
            d = np.abs(b).max(1, keepdims=True) / 127
            dh = d.astype(np.float16).astype(np.float64)
            bound = 0.5 * d + 127 * np.abs(dh - d)
            f.check(np.all(np.abs(got.reshape(-1, 32) - b) <= bound * (1 + 1e-6)), f"{name}: beyond half a step")
            ref = gguf.quants.quantize(x.reshape(3, 64), T.Q8_0)
            f.check(np.array_equal(np.asarray(t.data).reshape(-1), ref.reshape(-1)), f"{name}: bytes differ from gguf.quants")
        elif typ == T.MXFP4:
            # The C test re-packed HF groups with hf[g*16+j] = (g*16+j)*37+11 and scale 120 + g%16; the gguf
            # package's own MXFP4 dequantizer must agree with the HF reading of those groups.
            from test_export_common import hf_mxfp4_dequant

            groups = n // 32
            k = np.arange(groups * 16)
            hf = ((k * 37 + 11) & 0xFF).astype(np.uint8).reshape(groups, 16)
            sc = (120 + np.arange(groups) % 16).astype(np.uint8)
            want_vals = hf_mxfp4_dequant(hf[:, None, :], sc[:, None]).reshape(-1)
            f.check(np.array_equal(got, want_vals), f"{name}: ggml dequant (spec §5.4) != HF dequant (spec §3.4)")
            pkg = gguf.quants.dequantize(np.asarray(t.data), T.MXFP4).reshape(-1)
            f.check(np.array_equal(pkg.astype(np.float64), want_vals), f"{name}: gguf.quants dequant != HF dequant")
    return f.finish()


if __name__ == "__main__":
    sys.exit(main())
