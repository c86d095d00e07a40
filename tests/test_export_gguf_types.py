"""The GGUF value types, two ways.

1. `test_export_gguf_types.py TYPES_GGUF`: reads the GGUF that test_export_gguf wrote through the `gguf` package
   (llama.cpp's own reader) and checks every metadata value and type, and every tensor's type, shape and values,
   against what the C test put in.
2. `test_export_gguf_types.py --exported SCRATCH_DIR`: every metadata key of every GGUF osstune-export wrote for the
   tiny model (test_export_setup.sh: adapter.gguf, model.gguf, base.gguf, the Q8_0 and float32 variants) has the
   type llama.cpp and Ollama read it as (the table EXPECTED below, each row with the source that fixes it). A key
   that is not in the table fails too: whoever adds one must look up how the loaders read it. Ollama matters most
   here: its Go engine (fs/ggml/ggml.go, keyValue) type-asserts each value and silently falls back to 0, "" or an
   empty list when the type differs (e.g. block_count as UINT64 gives a model with 0 layers); llama.cpp at least
   refuses such a file (src/llama-model-loader.cpp, GGUFMeta::GKV::get_kv: "key ... has wrong type").
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import (  # noqa: E402
    Failures, bf16_bits_to_f32, f32_to_bf16_bits, gguf_tensor_values, read_gguf_header)

try:
    import gguf
except ImportError:
    print("test_export_gguf_types: the `gguf` package is missing (pip install -r tests/requirements.txt)")
    sys.exit(1)

V = gguf.GGUFValueType


def pattern(n):
    # tests/test_export_gguf.c: pattern(i) = ((i % 29) − 14)·0.375 + (i / 29)·0.0625, in float32
    i = np.arange(n)
    return (((i % 29) - 14).astype(np.float32) * np.float32(0.375) + (i // 29).astype(np.float32) * np.float32(0.0625))


def check_writer_file(path):
    f = Failures("test_export_gguf_types")
    r = gguf.GGUFReader(path)
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


# ---- the exported files ----------------------------------------------------------------------------------------------
# ggml-org/llama.cpp reads model keys with ml.get_key into a C++ variable whose type decides the GGUF type it accepts
# (src/llama-model-loader.cpp, GGUFMeta::GKV_Base: uint32_t = UINT32, float = FLOAT32, bool = BOOL, std::string =
# STRING; get_key_or_arr also takes an INT32/UINT32 array); the key names are in src/llama-arch.cpp (LLM_KV_NAMES).
# ollama/ollama's Go engine reads them through fs/ggml/ggml.go (KV.Uint = uint32, Float = float32, Bool = bool,
# String = string, Ints = []int32, Strings = []string, each a strict type assertion). "LC" and "OL" below name the
# file of each repository where the key is read; "neither" keys are written as llama.cpp's own converter writes them
# (gguf-py/gguf/gguf_writer.py).
U32, F32, BOOL, STR = (V.UINT32, None), (V.FLOAT32, None), (V.BOOL, None), (V.STRING, None)
ARR_STR, ARR_I32 = (V.ARRAY, V.STRING), (V.ARRAY, V.INT32)
A = "gpt-oss."
EXPECTED = {
    # key: (type, array element type), where it is read
    "general.architecture": (STR, "LC llama-model-loader.cpp (std::string), llama-adapter.cpp (gguf_get_val_str); "
                                  "OL fs/ggml/ggml.go KV.Architecture (String)"),
    "general.type": (STR, "LC src/llama-adapter.cpp (must be 'adapter'); OL fs/ggml/ggml.go KV.Kind (String)"),
    "general.name": (STR, "LC src/llama-model.cpp (LLM_KV_GENERAL_NAME into std::string)"),
    "general.quantization_version": (U32, "neither; gguf-py gguf_writer.add_quantization_version (uint32)"),
    "general.file_type": (U32, "LC llama-model-loader.cpp (uint32_t ftype_val); OL fs/ggml/ggml.go KV.FileType (Uint)"),
    A + "block_count": (U32, "LC src/llama-model.cpp load_hparams (uint32_t n_layer); "
                             "OL model/models/gptoss/model.go (c.Uint), fs/ggml/ggml.go KV.BlockCount"),
    A + "context_length": (U32, "LC src/llama-model.cpp (uint32_t n_ctx_train); OL fs/ggml/ggml.go KV.ContextLength"),
    A + "embedding_length": (U32, "LC src/llama-model.cpp (uint32_t n_embd); OL gptoss/model.go (c.Uint)"),
    A + "feed_forward_length": (U32, "LC src/llama-model.cpp (get_key_or_arr: UINT32, or an INT32/UINT32 array); "
                                     "OL fs/ggml/ggml.go KV.FFNLength (UintOrArrayValueAsArray)"),
    A + "expert_feed_forward_length": (U32, "LC src/llama-model.cpp, LLM_ARCH_OPENAI_MOE (uint32_t n_ff_exp)"),
    A + "attention.head_count": (U32, "LC src/llama-model.cpp (get_key_or_arr); OL gptoss/model.go (c.Uint)"),
    A + "attention.head_count_kv": (U32, "LC src/llama-model.cpp (get_key_or_arr); OL gptoss/model.go (c.Uint)"),
    A + "attention.key_length": (U32, "LC src/llama-model.cpp (uint32_t n_embd_head_k); OL gptoss/model.go (c.Uint)"),
    A + "attention.value_length": (U32, "LC src/llama-model.cpp (uint32_t n_embd_head_v); OL gptoss/model.go (c.Uint)"),
    A + "attention.layer_norm_rms_epsilon": (F32, "LC src/llama-model.cpp, LLM_ARCH_OPENAI_MOE (float); "
                                                  "OL gptoss/model.go (c.Float)"),
    A + "attention.sliding_window": (U32, "LC src/llama-model.cpp, LLM_ARCH_OPENAI_MOE (uint32_t n_swa); "
                                          "OL gptoss/model.go (c.Uint)"),
    A + "expert_count": (U32, "LC src/llama-model.cpp (uint32_t n_expert); OL gptoss/model.go (c.Uint)"),
    A + "expert_used_count": (U32, "LC src/llama-model.cpp (uint32_t n_expert_used); OL gptoss/model.go (c.Uint)"),
    A + "rope.freq_base": (F32, "LC src/llama-model.cpp (float rope_freq_base_train); OL gptoss/model.go (c.Float)"),
    A + "rope.scaling.type": (STR, "LC src/llama-model.cpp (std::string rope_scaling)"),
    A + "rope.scaling.factor": (F32, "LC src/llama-model.cpp (float ropescale); OL gptoss/model.go (c.Float)"),
    A + "rope.scaling.original_context_length": (U32, "LC src/llama-model.cpp (uint32_t n_ctx_orig_yarn); "
                                                      "OL gptoss/model.go (c.Uint)"),
    A + "rope.scaling.yarn_beta_fast": (F32, "LC src/llama-model.cpp (float yarn_beta_fast, where read); "
                                             "gguf-py add_rope_scaling_yarn_beta_fast (float32)"),
    A + "rope.scaling.yarn_beta_slow": (F32, "LC src/llama-model.cpp (float yarn_beta_slow, where read); "
                                             "gguf-py add_rope_scaling_yarn_beta_slow (float32)"),
    "tokenizer.ggml.model": (STR, "LC src/llama-vocab.cpp (std::string tokenizer_model)"),
    "tokenizer.ggml.pre": (STR, "LC src/llama-vocab.cpp (std::string tokenizer_pre)"),
    "tokenizer.ggml.tokens": (ARR_STR, "LC src/llama-vocab.cpp (throws unless an array of strings); OL gptoss/model.go "
                                       "(c.Strings), fs/ggml/ggml.go GraphSize (asserts *array[string])"),
    "tokenizer.ggml.token_type": (ARR_I32, "LC src/llama-vocab.cpp (throws unless an array of INT32); "
                                           "OL gptoss/model.go (c.Ints)"),
    "tokenizer.ggml.merges": (ARR_STR, "LC src/llama-vocab.cpp (throws unless an array of strings); "
                                       "OL gptoss/model.go (c.Strings)"),
    "tokenizer.ggml.bos_token_id": (U32, "LC src/llama-vocab.cpp (uint32_t new_id); OL gptoss/model.go (c.Uint)"),
    "tokenizer.ggml.eos_token_id": (U32, "LC src/llama-vocab.cpp (uint32_t new_id); OL gptoss/model.go (c.Uint)"),
    "tokenizer.ggml.padding_token_id": (U32, "LC src/llama-vocab.cpp (uint32_t new_id)"),
    "tokenizer.ggml.add_bos_token": (BOOL, "LC src/llama-vocab.cpp (bool); OL gptoss/model.go (c.Bool)"),
    "tokenizer.ggml.add_eos_token": (BOOL, "LC src/llama-vocab.cpp (bool); OL gptoss/model.go (c.Bool)"),
    "tokenizer.ggml.eos_token_ids": (ARR_I32, "OL gptoss/model.go (c.Ints: its stop tokens besides eos_token_id); "
                                              "written as []int32 by OL convert/convert_gptoss.go; LC does not read it"),
    "tokenizer.chat_template": (STR, "LC src/llama-model.cpp (llama_model_chat_template: the value as text, a "
                                     "Jinja string); OL fs/ggml/ggml.go KV.ChatTemplate (String)"),
    "adapter.type": (STR, "LC src/llama-adapter.cpp (get_kv_str, must be 'lora')"),
    "adapter.lora.alpha": (F32, "LC src/llama-adapter.cpp (get_kv_f32: gguf_get_val_f32 aborts on another type)"),
}
MODEL_KEYS = [k for k in EXPECTED if not k.startswith("adapter.")]
ADAPTER_KEYS = ["general.architecture", "general.type", "general.name", "adapter.type", "adapter.lora.alpha"]
# The end-of-generation tokens Ollama's gpt-oss converter lists (spec §4.3, §5.2): ids and names.
EOG = [(199999, "<|endoftext|>"), (200002, "<|return|>"), (200012, "<|call|>")]


def check_exported(scratch):
    f = Failures("test_export_gguf_types --exported")
    files = {os.path.join(d, n): ADAPTER_KEYS if n == "adapter.gguf" else MODEL_KEYS
             for d, names in (("out", ("adapter.gguf", "model.gguf", "base.gguf")), ("out_q8", ("model.gguf",)),
                              ("out_f32", ("adapter.gguf", "model.gguf", "base.gguf"))) for n in names}
    for rel, required in files.items():
        md, _, _, _ = read_gguf_header(os.path.join(scratch, rel), strings_of={"tokenizer.ggml.tokens"})
        for key, (t, et, _) in md.items():
            if not f.check(key in EXPECTED, f"{rel}: key {key} is not in the EXPECTED table: look up the type "
                                            "llama.cpp and Ollama read it as and add it"):
                continue
            (want_t, want_et), where = EXPECTED[key]
            got = V(t).name + (f"[{V(et).name}]" if et is not None else "")
            want = want_t.name + (f"[{want_et.name}]" if want_et is not None else "")
            f.check(got == want, f"{rel}: {key} is {got}, but {where} reads {want}")
        missing = [k for k in required if k not in md]
        f.check(not missing, f"{rel}: keys missing: {missing}")
        if "tokenizer.ggml.tokens" in md:
            toks = md["tokenizer.ggml.tokens"][2]
            ids = md.get("tokenizer.ggml.eos_token_ids", (0, 0, []))[2]
            f.check(ids == [i for i, _ in EOG], f"{rel}: tokenizer.ggml.eos_token_ids {ids}")
            names = [toks[i] if 0 <= i < len(toks) else None for i in ids]
            f.check(names == [n for _, n in EOG], f"{rel}: tokenizer.ggml.eos_token_ids name the tokens {names}")
            eos = md["tokenizer.ggml.eos_token_id"][2]
            f.check(toks[eos] == "<|return|>", f"{rel}: eos_token_id {eos} is {toks[eos]!r}, not <|return|>")
        print(f"{rel}: {len(md)} keys checked")
    return f.finish()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--exported":
        return check_exported(sys.argv[2])
    if len(sys.argv) != 2:
        print("usage: test_export_gguf_types.py TYPES_GGUF | --exported SCRATCH_DIR", file=sys.stderr)
        return 2
    return check_writer_file(sys.argv[1])


if __name__ == "__main__":
    sys.exit(main())
