"""Shared helpers of the export tests: read what osstune-export wrote (through the `gguf` package, llama.cpp's own
reader), dequantize ggml blocks and HF MXFP4 independently of the C code, and map GGUF tensors back to the HF
layout. Everything here follows the spec (§3.4 HF MXFP4, §5.3 names, §5.4 ggml MXFP4, §6.4 LoRA mapping)."""
import json
import os
import re
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import Checks  # noqa: E402

SKIP = 77  # ctest's SKIP_RETURN_CODE for these tests

# FP4 E2M1 values by nibble (spec §3.4) and ggml's doubled table (spec §5.4).
FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], np.float64)
KVALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float64)


class Failures(Checks):
    """tests/checks.py's counter, printing failures only, with a check for a relative error against a tolerance."""

    def __init__(self, name):
        super().__init__(name, verbose=False)

    def check(self, cond, msg):
        return self(cond, msg)

    def close(self, what, err, tol):
        ok = err <= tol
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {err:.3e} (tolerance {tol:.1e})")
        return self.check(ok, f"{what}: {err:.3e} > {tol:.1e}")


# ---- HF checkpoint ------------------------------------------------------------------------------------------------
def load_checkpoint(model_dir):
    """All tensors of an HF model directory as numpy arrays (BF16/F16/F32 as float32, U8 as uint8). Reads the
    safetensors container directly (spec §3.2): numpy has no bfloat16, and importing torch costs seconds."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    out = {}
    for name in files:
        buf = np.memmap(os.path.join(model_dir, name), dtype=np.uint8, mode="r")
        n = int(buf[:8].view("<u8")[0])
        header = json.loads(bytes(buf[8:8 + n]))
        base = 8 + n
        for key, info in header.items():
            if key == "__metadata__":
                continue
            lo, hi = info["data_offsets"]
            raw, shape, dt = buf[base + lo:base + hi], info["shape"], info["dtype"]
            if dt == "BF16":
                v = bf16_bits_to_f32(raw.view("<u2"))
            elif dt == "F16":
                v = raw.view("<f2").astype(np.float32)
            elif dt == "F32":
                v = np.array(raw.view("<f4"))
            elif dt == "U8":
                v = np.array(raw)
            else:
                raise ValueError(f"{name}: {key}: dtype {dt} not expected in a gpt-oss checkpoint")
            out[key] = v.reshape(shape)
    return out


def read_safetensors_raw(path):
    """One safetensors file as {name: (dtype, shape, raw bytes)}, any dtype, nothing converted (bf16 stays bits):
    for tests that edit checkpoints without torch."""
    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    out = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        out[key] = (info["dtype"], info["shape"], data[8 + n + lo:8 + n + hi])
    return out


def write_safetensors_raw(tensors, path):
    """The inverse of read_safetensors_raw (arguments as safetensors' save_file): the tensors in the given order,
    the header padded to 8 bytes."""
    header, off = {}, 0
    for key, (dtype, shape, raw) in tensors.items():
        header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h)
        for _, _, raw in tensors.values():
            f.write(raw)


def hf_mxfp4_dequant(blocks, scales):
    """HF MXFP4 (spec §3.4): blocks [..., G, 16] (element 2j low nibble, 2j+1 high), scales [..., G] E8M0 → [..., G*32]."""
    lo, hi = FP4[blocks & 0x0F], FP4[blocks >> 4]
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)  # element order within the group
    vals = vals * np.ldexp(1.0, scales.astype(np.int64) - 127)[..., None]
    return vals.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


# ---- ggml blocks ----------------------------------------------------------------------------------------------------
def ggml_mxfp4_dequant(raw, ne0):
    """ggml block_mxfp4 (spec §5.4): raw bytes [..., ne0/32*17] → float64 [..., ne0]. Element k is the low nibble of
    qs[k], element k+16 the high nibble; value kvalue · 2^(e − 128)."""
    b = raw.reshape(*raw.shape[:-1], ne0 // 32, 17)
    e, qs = b[..., 0].astype(np.int64), b[..., 1:]
    vals = np.concatenate([KVALUES[qs & 0x0F], KVALUES[qs >> 4]], axis=-1) * np.ldexp(1.0, e - 128)[..., None]
    return vals.reshape(*raw.shape[:-1], ne0)


def ggml_q8_0_dequant(raw, ne0):
    b = raw.reshape(*raw.shape[:-1], ne0 // 32, 34)
    d = b[..., :2].copy().view(np.float16).astype(np.float64)
    q = b[..., 2:].view(np.int8).astype(np.float64)
    return (q * d).reshape(*raw.shape[:-1], ne0)


def bf16_bits_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """Round-to-nearest-even float32 → bf16 bits (as torch does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def gguf_tensor_values(t):
    """A gguf ReaderTensor as float64 in numpy order (outermost first), whatever its type."""
    import gguf

    T = gguf.GGMLQuantizationType
    ne = [int(x) for x in t.shape]
    shape = tuple(reversed(ne))
    raw = np.asarray(t.data)
    if t.tensor_type == T.F32:
        return raw.astype(np.float64).reshape(shape)
    if t.tensor_type == T.F16:
        return raw.view(np.float16).astype(np.float64).reshape(shape)
    if t.tensor_type == T.BF16:
        return bf16_bits_to_f32(raw.view(np.uint16)).astype(np.float64).reshape(shape)
    if t.tensor_type == T.MXFP4:
        return ggml_mxfp4_dequant(raw.reshape(*shape[:-1], -1), ne[0])
    if t.tensor_type == T.Q8_0:
        return ggml_q8_0_dequant(raw.reshape(*shape[:-1], -1), ne[0])
    raise ValueError(f"{t.name}: unexpected type {t.tensor_type.name}")


def read_gguf(path):
    import gguf

    r = gguf.GGUFReader(path)
    return r, {t.name: t for t in r.tensors}


class _Tensor:
    def __init__(self, name, tensor_type, shape, data):
        self.name, self.tensor_type, self.shape, self.data = name, tensor_type, shape, data


GGUF_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_header(path, strings_of=()):
    """The metadata and tensor infos of a GGUF file (spec §5.1), read with this minimal parser, independent of both
    osstune's writer and the `gguf` package (which spends ~9 s on a model's 650,000 vocabulary strings).
    Returns (metadata, infos, data_start, buf): metadata maps each key, in file order, to (type, element type or
    None, value); the value of a string array is its length unless the key is in strings_of (then its strings);
    infos lists (name, ne, ggml type, offset)."""
    import struct

    buf = np.memmap(path, dtype=np.uint8, mode="r")
    mv = memoryview(buf)
    pos = 0

    def u(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, mv, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def string():
        nonlocal pos
        n = u("Q")  # (`pos += u(...)` would add to the position read before u() advanced it)
        s = bytes(mv[pos:pos + n])
        pos += n
        return s

    def value(t, keep_strings):
        nonlocal pos
        if t == 8:
            return string().decode("utf-8", "surrogateescape")
        if t == 9:
            et, n = u("I"), u("Q")
            if et == 8:
                if not keep_strings:
                    for _ in range(n):
                        k = u("Q")
                        pos += k
                    return n
                return [string().decode("utf-8", "surrogateescape") for _ in range(n)]
            if et == 9:
                raise ValueError(f"{path}: nested arrays are not used by osstune")
            fmt = GGUF_SCALAR_FORMATS[et]
            vals = list(struct.unpack_from(f"<{n}{fmt}", mv, pos))
            pos += struct.calcsize(f"<{n}{fmt}")
            return vals
        return u(GGUF_SCALAR_FORMATS[t])

    assert u("I") == 0x46554747 and u("I") == 3, f"{path}: not a GGUF v3 file"
    n_t, n_kv = u("Q"), u("Q")
    metadata = {}
    for _ in range(n_kv):
        key = string().decode()
        t = u("I")
        et = struct.unpack_from("<I", mv, pos)[0] if t == 9 else None
        metadata[key] = (t, et, value(t, key in strings_of))
    infos = []
    for _ in range(n_t):
        name = string().decode()
        nd = u("I")
        ne = [u("Q") for _ in range(nd)]
        infos.append((name, ne, u("I"), u("Q")))
    return metadata, infos, (pos + 31) // 32 * 32, buf


def read_gguf_tensors(path):
    """Tensors of a GGUF file, fast (read_gguf_header: the logits tests need no vocabulary); the files themselves
    are checked with the `gguf` package in test_export_files.py."""
    import gguf

    _, infos, data_start, buf = read_gguf_header(path)
    out = {}
    for name, ne, typ, off in infos:
        qt = gguf.GGMLQuantizationType(typ)
        block, type_size = gguf.GGML_QUANT_SIZES[qt]
        nbytes = int(np.prod(ne)) // block * type_size
        raw = buf[data_start + off:data_start + off + nbytes]
        data = raw.view(np.float32) if qt == gguf.GGMLQuantizationType.F32 else raw
        out[name] = _Tensor(name, qt, ne, data)
    return out


def field_value(r, key):
    """A metadata value as Python data (str, int, float, bool, list)."""
    f = r.fields[key]
    return f.contents()


# ---- the harmony prompt and answer as osstune renders and reads them (tests/test_export_harmony.c) ------------------
TIKTOKEN = "data/o200k_base.tiktoken"


def harmony_prompt(helper, direction, source):
    """{"system", "instruction", "text", "ids"} of the inference prompt formats/harmony.h renders for source."""
    return json.loads(subprocess.run([helper, TIKTOKEN, direction, source], check=True, capture_output=True).stdout)


def harmony_answer(helper, ids):
    """The line osstune-translate prints for these generated ids."""
    out = subprocess.run([helper, TIKTOKEN, "--answer", ",".join(map(str, ids))], check=True, capture_output=True)
    return out.stdout.decode("utf-8").rstrip("\n")


# ---- Modelfiles -----------------------------------------------------------------------------------------------------
def modelfile_parts(text):
    """FROM, TEMPLATE, SYSTEM, stops and comment lines of a Modelfile."""
    out = {"from": re.findall(r"^FROM (.+)$", text, re.M), "stops": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M),
           "comments": [l for l in text.splitlines() if l.startswith("#")]}
    for key in ("TEMPLATE", "SYSTEM"):
        m = re.search(key + r' """(.*?)"""', text, re.S)
        out[key.lower()] = m.group(1) if m else None
    return out


# ---- the merged GGUF back in the HF layout (for osstune-logits) ------------------------------------------------------
ATTN = {"attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_output": "o_proj"}


def gguf_to_hf_dense(gguf_path, model_dir, out_dir):
    """Writes out_dir as an HF checkpoint holding model.gguf's weights as float32, experts in transformers'
    dequantized layout (gate_up_proj [E, H, 2I] with gate/up interleaved again, down_proj [E, I, H]). osstune-logits on
    it computes what the GGUF's weights compute, in float32, with no llama.cpp in between."""
    from safetensors.numpy import save_file

    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    cfg.pop("quantization_config", None)
    L = cfg["num_hidden_layers"]
    ts = read_gguf_tensors(gguf_path)
    v = lambda n: gguf_tensor_values(ts[n]).astype(np.float32)
    out = {
        "model.embed_tokens.weight": v("token_embd.weight"),
        "lm_head.weight": v("output.weight"),
        "model.norm.weight": v("output_norm.weight"),
    }
    for l in range(L):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        out[p + "input_layernorm.weight"] = v(b + "attn_norm.weight")
        out[p + "post_attention_layernorm.weight"] = v(b + "post_attention_norm.weight")
        for g, h in ATTN.items():
            out[p + f"self_attn.{h}.weight"] = v(b + g + ".weight")
            out[p + f"self_attn.{h}.bias"] = v(b + g + ".bias")
        out[p + "self_attn.sinks"] = v(b + "attn_sinks.weight")
        out[p + "mlp.router.weight"] = v(b + "ffn_gate_inp.weight")
        out[p + "mlp.router.bias"] = v(b + "ffn_gate_inp.bias")
        gate, up = v(b + "ffn_gate_exps.weight"), v(b + "ffn_up_exps.weight")  # [E, I, H]
        E, I, H = gate.shape
        gu = np.empty((E, 2 * I, H), np.float32)
        gu[:, 0::2], gu[:, 1::2] = gate, up
        out[p + "mlp.experts.gate_up_proj"] = np.ascontiguousarray(gu.transpose(0, 2, 1))
        out[p + "mlp.experts.down_proj"] = np.ascontiguousarray(v(b + "ffn_down_exps.weight").transpose(0, 2, 1))
        gb = np.empty((E, 2 * I), np.float32)
        gb[:, 0::2], gb[:, 1::2] = v(b + "ffn_gate_exps.bias"), v(b + "ffn_up_exps.bias")
        out[p + "mlp.experts.gate_up_proj_bias"] = gb
        out[p + "mlp.experts.down_proj_bias"] = v(b + "ffn_down_exps.bias")
    os.makedirs(out_dir, exist_ok=True)
    save_file(out, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def with_truncated_yarn(model_dir, out_dir):
    """A view of model_dir whose config rounds the YaRN correction range as llama.cpp does (spec §2.4): the same
    weight files (symlinked), `truncate: true`."""
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(model_dir):
        if name == "config.json":
            continue
        dst = os.path.join(out_dir, name)
        if not os.path.lexists(dst):
            os.symlink(os.path.abspath(os.path.join(model_dir, name)), dst)
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    for key in ("rope_parameters", "rope_scaling"):
        if isinstance(cfg.get(key), dict):
            cfg[key]["truncate"] = True
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def osstune_logits(bin_dir, model_dir, tokens, out_path, adapter=None):
    cmd = [os.path.join(bin_dir, "osstune-logits"), "--model", model_dir, "--tokens", ",".join(map(str, tokens)),
           "--out", out_path]
    if adapter:
        cmd += ["--adapter", adapter]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return np.fromfile(out_path, np.float32).reshape(len(tokens), -1)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


# The 88-token training example of spec §4.7 (system, developer, user, assistant target): a realistic sequence,
# longer than the tiny model's sliding window, so both attention kinds matter.
EXAMPLE_TOKENS = [int(x) for x in """
200006 17360 200008
3575 553 17554 162016 11 261 4410 6439 2359 22203 656 7788 17527 558 87447 100594 25 220 1323 19 12 3218
279 30377 289 25 4465 279 2 13888 18403 25 8450 11 49159 11 1721 13 21030 2804 413 7360 395 1753 3176 13
200007
200006 77944 200008 2 68406 279 35194 133467 1511 196598 487 44328 847 13 200007
200006 1428 200008 10941 1487 74765 148483 788 200007
200006 173781 200005 17196 200008 10941 146905 2292 867 74765 7910 8061 788 200002
""".split()]
assert len(EXAMPLE_TOKENS) == 88
