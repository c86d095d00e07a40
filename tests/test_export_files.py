"""Everything osstune-export wrote for the tiny model, read back through the `gguf` package (llama.cpp's reader):
every metadata key with its type and value (spec §5.2, §6.1), every tensor's name, type, ne and values (spec §5.3,
§5.4, §6.2, §6.4), the vocabulary against the .tiktoken file, the chat templates against formats/harmony.h, the
Modelfiles and the PEFT copy.

usage: test_export_files.py BIN_DIR SCRATCH_DIR HARMONY_HELPER [model|base|q8]
SCRATCH_DIR as test_export_setup.sh left it. Reading a model GGUF's 650,000 vocabulary strings takes the `gguf`
package about 9 s, so ctest runs three parts as three tests: `model` (out/model.gguf with its vocabulary, chat
template, Modelfiles, peft/), `base` (base.gguf and adapter.gguf) and `q8` (the model.gguf with Q8_0 experts).
"""
import base64
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import (  # noqa: E402
    Failures, bf16_bits_to_f32, field_value, ggml_mxfp4_dequant, gguf_tensor_values, hf_mxfp4_dequant,
    TIKTOKEN, harmony_prompt, load_checkpoint, modelfile_parts, read_gguf)

try:
    import gguf
except ImportError:
    print("test_export_files: the `gguf` package is missing (pip install -r tests/requirements.txt)")
    sys.exit(1)

V, T = gguf.GGUFValueType, gguf.GGMLQuantizationType
# One source text per direction (formats/directions.h), in the script of its source column.
SOURCES = {"zh2nan": "今天天氣很好。", "nan2zh": "今仔日天氣真好。", "zh2tl": "今天天氣很好。",
           "tl2zh": "Kin-á-ji̍t thinn-khì tsin hó.", "nan2tl": "今仔日天氣真好。", "tl2nan": "Kin-á-ji̍t thinn-khì tsin hó."}
# The Modelfile osstune-export writes for each direction.
MODELFILES = {"zh2nan": "Modelfile", "nan2zh": "Modelfile.nan2zh", "zh2tl": "Modelfile.zh2tl",
              "tl2zh": "Modelfile.tl2zh", "nan2tl": "Modelfile.nan2tl", "tl2nan": "Modelfile.tl2nan"}


# ---- the reference values ----------------------------------------------------------------------------------------
def peft_factors(adapter_dir):
    """The adapter as the trainer holds it: {(layer, target): (scale, A [E, r, in], B [E, out, r])} (spec §6.5)."""
    from safetensors.numpy import load_file

    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    r = cfg["r"]
    scale = cfg["lora_alpha"] / (np.sqrt(r) if cfg.get("use_rslora") else r)
    st = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    out = {}
    for key, a in st.items():
        if ".lora_A." not in key:
            continue
        b = st[key.replace(".lora_A.", ".lora_B.")].astype(np.float64)
        a = a.astype(np.float64)
        layer = int(re.search(r"\.layers\.(\d+)\.", key).group(1))
        m = re.search(r"self_attn\.(\w+)_proj", key)
        if m:
            out[(layer, m.group(1))] = (scale, a[None], b[None])
        else:
            # gate_up_proj is listed first in target_parameters, so it sits under base_layer (spec §6.5)
            target = "gate_up" if ".base_layer." in key else "down"
            E = a.shape[0] // r
            out[(layer, target)] = (scale, a.reshape(E, r, -1), b.reshape(b.shape[0], r, E).transpose(2, 0, 1))
    return cfg, out


def bf16_ulp(x):
    """Spacing of bf16 numbers at |x| (8 significant bits)."""
    e = np.floor(np.log2(np.maximum(np.abs(x), 2.0 ** -126)))
    return np.ldexp(1.0, (e - 7).astype(np.int64))


def check_rounded(f, what, got, exact, magnitude, kind):
    """got is `exact` (= W + scale·B·A) computed in float32, then rounded once to bf16 or quantized to Q8_0.
    magnitude = |W| + scale·|B|·|A| bounds the float32 rounding of that computation (a few units of 2^-24 each)."""
    slack = 2.0 ** -20 * magnitude
    if kind == "bf16":
        err = np.abs(got - exact) - (0.5 * bf16_ulp(exact) + slack)
        f.check(err.max() <= 0, f"{what}: not exact up to bf16 rounding (worst excess {err.max():.3e})")
    else:
        b = exact.reshape(-1, 32)
        d = np.abs(b).max(1, keepdims=True) / 127
        dh = d.astype(np.float16).astype(np.float64)
        bound = 0.5 * d + 127 * np.abs(dh - d) + slack.reshape(-1, 32) + 2.0 ** -20 * d
        f.check(np.all(np.abs(got.reshape(-1, 32) - b) <= bound * (1 + 1e-6)), f"{what}: beyond the Q8_0 step")


def ggml_repack(blocks, scales):
    """Spec §5.4 in numpy: HF groups [..., G, 16] + scales [..., G] → ggml bytes [..., G*17]."""
    nib = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    qs = (nib[..., :16] | (nib[..., 16:] << 4)).astype(np.uint8)
    out = np.concatenate([scales[..., None], qs], axis=-1)
    return out.reshape(*blocks.shape[:-2], blocks.shape[-2] * 17)


# ---- Go templates (the subset Ollama Modelfiles use here) -----------------------------------------------------------
ACTION = re.compile(r"\{\{(.*?)\}\}", re.S)


def go_render(tmpl, data):
    """Renders {{ .Field }}, {{ if COND }}/{{ else if COND }}/{{ else }}/{{ end }}, {{ range .List }}/{{ end }} with
    COND = .Field or eq .Field "literal", as Go's text/template does."""
    if "{{-" in tmpl or "-}}" in tmpl:
        raise ValueError("whitespace trimming is not supported by this small renderer")
    parts = ACTION.split(tmpl)
    pos = 0

    def block():
        nonlocal pos
        nodes = []
        while pos < len(parts):
            if pos % 2 == 0:
                nodes.append(("text", parts[pos]))
                pos += 1
                continue
            a = parts[pos].strip()
            if a in ("end", "else") or a.startswith("else if "):
                return nodes, a
            pos += 1
            if a.startswith("if "):
                branches, cond = [], a[3:]
                while True:
                    body, term = block()
                    pos += 1
                    branches.append((cond, body))
                    if term == "end":
                        break
                    cond = term[len("else if "):] if term.startswith("else if ") else None
                nodes.append(("if", branches))
            elif a.startswith("range "):
                body, term = block()
                pos += 1
                assert term == "end", term
                nodes.append(("range", a[6:], body))
            else:
                nodes.append(("expr", a))
        return nodes, None

    def value(expr, dot):
        expr = expr.strip()
        if expr.startswith("eq "):
            lhs, rhs = expr[3:].split(" ", 1)
            return value(lhs, dot) == value(rhs, dot)
        if expr.startswith('"'):
            return json.loads(expr)
        if expr.startswith("."):
            return dot.get(expr[1:], "")
        raise ValueError(f"unsupported template expression {expr!r}")

    def run(nodes, dot):
        out = ""
        for n in nodes:
            if n[0] == "text":
                out += n[1]
            elif n[0] == "expr":
                out += str(value(n[1], dot))
            elif n[0] == "range":
                for item in value(n[1], dot):
                    out += run(n[2], item)
            else:
                for cond, body in n[1]:
                    if cond is None or value(cond, dot):
                        out += run(body, dot)
                        break
        return out

    nodes, term = block()
    assert term is None, f"unbalanced template: stray {term}"
    return run(nodes, data)


# ---- checks -------------------------------------------------------------------------------------------------------
def check_model_metadata(f, r, cfg, name, vocab_bytes, harmony):
    H, L = cfg["hidden_size"], cfg["num_hidden_layers"]
    rope = cfg.get("rope_parameters") or dict(cfg.get("rope_scaling") or {}, rope_theta=cfg.get("rope_theta"))
    A = "gpt-oss."
    expect = {
        "general.architecture": (V.STRING, "gpt-oss"),
        "general.type": (V.STRING, "model"),
        "general.name": (V.STRING, name),
        "general.quantization_version": (V.UINT32, 2),
        "general.file_type": (V.UINT32, 38),
        A + "block_count": (V.UINT32, L),
        A + "context_length": (V.UINT32, cfg["max_position_embeddings"]),
        A + "embedding_length": (V.UINT32, H),
        A + "feed_forward_length": (V.UINT32, cfg["intermediate_size"]),
        A + "expert_feed_forward_length": (V.UINT32, cfg["intermediate_size"]),
        A + "attention.head_count": (V.UINT32, cfg["num_attention_heads"]),
        A + "attention.head_count_kv": (V.UINT32, cfg["num_key_value_heads"]),
        A + "attention.key_length": (V.UINT32, cfg["head_dim"]),
        A + "attention.value_length": (V.UINT32, cfg["head_dim"]),
        A + "attention.layer_norm_rms_epsilon": (V.FLOAT32, float(np.float32(cfg["rms_norm_eps"]))),
        A + "attention.sliding_window": (V.UINT32, cfg["sliding_window"]),
        A + "expert_count": (V.UINT32, cfg["num_local_experts"]),
        A + "expert_used_count": (V.UINT32, cfg["num_experts_per_tok"]),
        A + "rope.freq_base": (V.FLOAT32, float(np.float32(rope["rope_theta"]))),
        A + "rope.scaling.type": (V.STRING, "yarn"),
        A + "rope.scaling.factor": (V.FLOAT32, float(np.float32(rope["factor"]))),
        A + "rope.scaling.original_context_length": (V.UINT32, rope["original_max_position_embeddings"]),
        A + "rope.scaling.yarn_beta_fast": (V.FLOAT32, float(np.float32(rope["beta_fast"]))),
        A + "rope.scaling.yarn_beta_slow": (V.FLOAT32, float(np.float32(rope["beta_slow"]))),
        "tokenizer.ggml.model": (V.STRING, "gpt2"),
        "tokenizer.ggml.pre": (V.STRING, "gpt-4o"),
        "tokenizer.ggml.bos_token_id": (V.UINT32, 199998),
        "tokenizer.ggml.eos_token_id": (V.UINT32, 200002),
        "tokenizer.ggml.padding_token_id": (V.UINT32, 199999),
        "tokenizer.ggml.add_bos_token": (V.BOOL, False),
        "tokenizer.ggml.add_eos_token": (V.BOOL, False),
    }
    arrays = {"tokenizer.ggml.tokens": V.STRING, "tokenizer.ggml.token_type": V.INT32, "tokenizer.ggml.merges": V.STRING,
              "tokenizer.ggml.eos_token_ids": V.INT32}
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    f.check(sorted(keys) == sorted(list(expect) + list(arrays) + ["tokenizer.chat_template"]),
            f"key set differs: extra {sorted(set(keys) - set(expect) - set(arrays))}, "
            f"missing {sorted(set(expect) | set(arrays) - set(keys))}")
    for key, (typ, val) in expect.items():
        if key in r.fields:
            f.check(r.fields[key].types == [typ], f"{key}: type {r.fields[key].types} != {typ}")
            f.check(field_value(r, key) == val, f"{key}: {field_value(r, key)!r} != {val!r}")
    for key, et in arrays.items():
        if key in r.fields:
            f.check(r.fields[key].types == [V.ARRAY, et], f"{key}: types {r.fields[key].types}")
    # Every end-of-generation token, as Ollama's gpt-oss converter lists them: <|endoftext|>, <|return|>, <|call|>.
    if "tokenizer.ggml.eos_token_ids" in r.fields:
        eog = [int(x) for x in field_value(r, "tokenizer.ggml.eos_token_ids")]
        f.check(eog == [199999, 200002, 200012], f"tokenizer.ggml.eos_token_ids {eog}")

    # Vocabulary (spec §5.2): GPT-2 byte-level strings of the o200k ranks, harmony specials, [PAD<id>] padding.
    vocab = cfg["vocab_size"]
    fld = r.fields["tokenizer.ggml.tokens"]
    toks = [bytes(fld.parts[i]).decode("utf-8") for i in fld.data]
    types = [int(x) for x in field_value(r, "tokenizer.ggml.token_type")]
    f.check(len(toks) == vocab and len(types) == vocab, f"{len(toks)} tokens, {len(types)} types for vocab {vocab}")
    b2u = gpt2_byte_map()
    u2b = {c: b for b, c in b2u.items()}
    n_ord = len(vocab_bytes)
    bad = [i for i in range(n_ord) if bytes(u2b.get(c, 256) for c in toks[i]) != vocab_bytes[i]][:5] \
        if all(c in u2b for t in toks[:n_ord] for c in t) else ["characters outside the byte alphabet"]
    f.check(not bad, f"ordinary tokens differ from {TIKTOKEN}: first {bad}")
    specials = {199998: "<|startoftext|>", 199999: "<|endoftext|>", 200000: "<|reserved_200000|>", 200002: "<|return|>",
                200003: "<|constrain|>", 200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>",
                200008: "<|message|>", 200012: "<|call|>", 200013: "<|reserved_200013|>", 200018: "<|endofprompt|>"}
    for i, s in specials.items():
        f.check(toks[i] == s, f"token {i} is {toks[i]!r}, expected {s!r}")
    f.check(all(toks[i] == f"[PAD{i}]" for i in range(200019, vocab)), "padding ids are not [PAD<id>]")
    want_types = [1] * n_ord + [3] * (200019 - n_ord) + [5] * (vocab - 200019)
    f.check(types == want_types, "token types: 1 ordinary, 3 harmony specials, 5 padding")
    f.check(len(set(toks)) == vocab, "token strings are not unique")

    # Merges: every split of a token into two tokens, ordered by the merged token's rank (spec §5.2).
    mf = r.fields["tokenizer.ggml.merges"]
    merges = [bytes(mf.parts[i]).decode("utf-8") for i in mf.data]
    rank = {b: i for i, b in enumerate(vocab_bytes)}
    want = set()
    for b, rk in rank.items():
        for s in range(1, len(b)):
            if b[:s] in rank and b[s:] in rank:
                want.add((b[:s], b[s:]))
    got, last, order_ok = set(), -1, True
    for m in merges:
        lhs, rhs = m.split(" ")
        lb, rb = bytes(u2b[c] for c in lhs), bytes(u2b[c] for c in rhs)
        got.add((lb, rb))
        rk = rank.get(lb + rb, -1)
        order_ok &= rk >= last
        last = rk
    f.check(len(merges) == len(got), "duplicate merges")
    f.check(got == want, f"merges: {len(got - want)} unexpected, {len(want - got)} missing of {len(want)}")
    f.check(order_ok, "merges are not ordered by the rank of the merged token")

    # The chat template renders exactly the harmony prompt (jinja2, as HF and llama-cpp-python use it).
    import jinja2.sandbox

    tmpl_text = field_value(r, "tokenizer.chat_template")
    for opts in ({}, {"trim_blocks": True, "lstrip_blocks": True}):
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(**opts)
        t = env.from_string(tmpl_text)
        for d, h in harmony.items():
            msgs = [{"role": "system", "content": h["instruction"]}, {"role": "user", "content": SOURCES[d]}]
            f.check(t.render(messages=msgs, add_generation_prompt=True) == h["text"], f"chat template {d} {opts}")
        plain = t.render(messages=[{"role": "user", "content": SOURCES["zh2nan"]}], add_generation_prompt=True)
        f.check(plain == harmony["zh2nan"]["text"], "chat template without a system message: zh2nan by default")


def gpt2_byte_map():
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    m, n = {}, 0
    for b in range(256):
        if b in keep:
            m[b] = chr(b)
        else:
            m[b] = chr(256 + n)
            n += 1
    return m


def check_model_tensors(f, label, ts, ck, cfg, lora, expert_type):
    """lora: {(layer, target): ...} merged into this file (empty for base.gguf)."""
    H, I, E, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"], cfg["num_hidden_layers"]
    Q, KV, NH = cfg["num_attention_heads"] * cfg["head_dim"], cfg["num_key_value_heads"] * cfg["head_dim"], cfg["num_attention_heads"]
    want = {"token_embd.weight": (T.BF16, [H, cfg["vocab_size"]]), "output_norm.weight": (T.F32, [H]),
            "output.weight": (T.BF16, [H, cfg["vocab_size"]])}
    for l in range(L):
        b = f"blk.{l}."
        has_gu, has_down = (l, "gate_up") in lora, (l, "down") in lora
        want.update({
            b + "attn_norm.weight": (T.F32, [H]), b + "post_attention_norm.weight": (T.F32, [H]),
            b + "attn_q.weight": (T.BF16, [H, Q]), b + "attn_q.bias": (T.F32, [Q]),
            b + "attn_k.weight": (T.BF16, [H, KV]), b + "attn_k.bias": (T.F32, [KV]),
            b + "attn_v.weight": (T.BF16, [H, KV]), b + "attn_v.bias": (T.F32, [KV]),
            b + "attn_output.weight": (T.BF16, [Q, H]), b + "attn_output.bias": (T.F32, [H]),
            b + "attn_sinks.weight": (T.F32, [NH]),
            b + "ffn_gate_inp.weight": (T.F32, [H, E]), b + "ffn_gate_inp.bias": (T.F32, [E]),
            b + "ffn_gate_exps.weight": (expert_type if has_gu else T.MXFP4, [H, I, E]),
            b + "ffn_up_exps.weight": (expert_type if has_gu else T.MXFP4, [H, I, E]),
            b + "ffn_down_exps.weight": (expert_type if has_down else T.MXFP4, [I, H, E]),
            b + "ffn_gate_exps.bias": (T.F32, [I, E]), b + "ffn_up_exps.bias": (T.F32, [I, E]),
            b + "ffn_down_exps.bias": (T.F32, [H, E]),
        })
    f.check(len(want) == 19 * L + 3, "spec §5.3 count")
    f.check(sorted(ts) == sorted(want), f"{label}: tensor set differs: extra {sorted(set(ts) - set(want))[:5]}, "
                                        f"missing {sorted(set(want) - set(ts))[:5]}")
    for name, (typ, ne) in want.items():
        t = ts.get(name)
        if t is None:
            continue
        f.check(t.tensor_type == typ, f"{label} {name}: type {t.tensor_type.name} != {typ.name}")
        f.check([int(x) for x in t.shape] == ne, f"{label} {name}: ne {[int(x) for x in t.shape]} != {ne}")

    def val(n):
        return gguf_tensor_values(ts[n])

    exact = lambda what, got, ref: f.check(np.array_equal(got, np.asarray(ref, np.float64)), f"{label} {what}: values differ")
    exact("token_embd", val("token_embd.weight"), ck["model.embed_tokens.weight"])
    exact("output", val("output.weight"), ck["lm_head.weight"])
    exact("output_norm", val("output_norm.weight"), ck["model.norm.weight"])
    attn = {"attn_q": "q", "attn_k": "k", "attn_v": "v", "attn_output": "o"}
    for l in range(L):
        p, b = f"model.layers.{l}.", f"blk.{l}."
        exact(f"layer {l} norms", np.concatenate([val(b + "attn_norm.weight"), val(b + "post_attention_norm.weight")]),
              np.concatenate([ck[p + "input_layernorm.weight"], ck[p + "post_attention_layernorm.weight"]]))
        exact(f"layer {l} sinks", val(b + "attn_sinks.weight"), ck[p + "self_attn.sinks"])
        exact(f"layer {l} router", val(b + "ffn_gate_inp.weight"), ck[p + "mlp.router.weight"])
        exact(f"layer {l} router bias", val(b + "ffn_gate_inp.bias"), ck[p + "mlp.router.bias"])
        for g, h in attn.items():
            W = ck[p + f"self_attn.{h}_proj.weight"].astype(np.float64)
            exact(f"{b}{g}.bias", val(b + g + ".bias"), ck[p + f"self_attn.{h}_proj.bias"])
            if (l, h) in lora:
                s, A, B = lora[(l, h)]
                check_rounded(f, f"{label} {b}{g} merged", val(b + g + ".weight"), W + s * B[0] @ A[0],
                              np.abs(W) + s * np.abs(B[0]) @ np.abs(A[0]), "bf16")
            else:
                exact(f"{b}{g}.weight", val(b + g + ".weight"), W)
        gub = ck[p + "mlp.experts.gate_up_proj_bias"]
        exact(f"{b}gate/up bias split", np.stack([val(b + "ffn_gate_exps.bias"), val(b + "ffn_up_exps.bias")]),
              np.stack([gub[:, 0::2], gub[:, 1::2]]))
        exact(f"{b}down bias", val(b + "ffn_down_exps.bias"), ck[p + "mlp.experts.down_proj_bias"])
        for stem, target, parts in (("gate_up_proj", "gate_up", (("ffn_gate_exps", 0), ("ffn_up_exps", 1))),
                                    ("down_proj", "down", (("ffn_down_exps", None),))):
            blocks, scales = ck[p + f"mlp.experts.{stem}_blocks"], ck[p + f"mlp.experts.{stem}_scales"]
            for gname, parity in parts:
                rows = slice(None) if parity is None else slice(parity, None, 2)
                bl, sc = blocks[:, rows], scales[:, rows]  # the gate/up split happens before re-packing
                hf_vals = hf_mxfp4_dequant(bl, sc)  # [E, out, in]
                t = ts[b + gname + ".weight"]
                if (l, target) not in lora:
                    raw = np.asarray(t.data).reshape(bl.shape[0], bl.shape[1], -1)
                    f.check(np.array_equal(raw, ggml_repack(bl, sc)), f"{label} {b}{gname}: bytes != spec §5.4 re-pack")
                    f.check(np.array_equal(ggml_mxfp4_dequant(raw, bl.shape[2] * 32), hf_vals),
                            f"{label} {b}{gname}: ggml dequant != HF dequant")
                else:
                    s, A, B = lora[(l, target)]
                    Bp = B if parity is None else B[:, parity::2]
                    merged = hf_vals + s * np.einsum("eor,eri->eoi", Bp, A)
                    mag = np.abs(hf_vals) + s * np.einsum("eor,eri->eoi", np.abs(Bp), np.abs(A))
                    check_rounded(f, f"{label} {b}{gname} merged", val(b + gname + ".weight"), merged, mag,
                                  "bf16" if t.tensor_type == T.BF16 else "q8_0")


def check_adapter(f, r, ts, model_ts, cfg, peft_cfg, lora):
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    f.check(sorted(keys) == sorted(["general.architecture", "general.type", "general.name", "adapter.type",
                                    "adapter.lora.alpha"]), f"adapter keys {keys}")
    for key, typ, v in (("general.architecture", V.STRING, "gpt-oss"), ("general.type", V.STRING, "adapter"),
                        ("adapter.type", V.STRING, "lora"),
                        ("adapter.lora.alpha", V.FLOAT32, float(np.float32(peft_cfg["lora_alpha"])))):
        f.check(r.fields[key].types == [typ] and field_value(r, key) == v, f"adapter {key}: {field_value(r, key)!r}")
    # llama.cpp scales by alpha / r with r = B.ne[0]: equal to PEFT's lora_alpha / r
    E, rnk = cfg["num_local_experts"], peft_cfg["r"]
    want = {}
    gnames = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output"}
    for (l, target), (s, A, B) in lora.items():
        if target in gnames:
            want[f"blk.{l}.{gnames[target]}.weight"] = (A[0], B[0], 2)
        elif target == "gate_up":
            want[f"blk.{l}.ffn_gate_exps.weight"] = (A, B[:, 0::2], 3)
            want[f"blk.{l}.ffn_up_exps.weight"] = (A, B[:, 1::2], 3)
        else:
            want[f"blk.{l}.ffn_down_exps.weight"] = (A, B, 3)
    names = {n + sfx for n in want for sfx in (".lora_a", ".lora_b")}
    f.check(set(ts) == names, f"adapter tensors: extra {sorted(set(ts) - names)[:4]}, missing {sorted(names - set(ts))[:4]}")
    for base, (A, B, nd) in want.items():
        ta, tb, tm = ts.get(base + ".lora_a"), ts.get(base + ".lora_b"), model_ts[base]
        if ta is None or tb is None:
            continue
        ane, bne, mne = [int(x) for x in ta.shape], [int(x) for x in tb.shape], [int(x) for x in tm.shape]
        f.check(ta.tensor_type == T.F32 and tb.tensor_type == T.F32, f"{base}: factors are not F32")
        # llama.cpp's load checks (spec §6.2) and the rank/expert dimensions
        f.check(ane[0] == mne[0] and bne[1] == mne[1] and ane[1] == bne[0] == rnk, f"{base}: ne A {ane} B {bne} base {mne}")
        f.check(len(ane) == nd and (nd == 2 or ane[2] == bne[2] == mne[2] == E), f"{base}: expert dimension {ane} {bne}")
        f.check(np.array_equal(gguf_tensor_values(ta), A.reshape(gguf_tensor_values(ta).shape)), f"{base}.lora_a values")
        f.check(np.array_equal(gguf_tensor_values(tb), B.reshape(gguf_tensor_values(tb).shape)), f"{base}.lora_b values")


def check_peft_copy(f, out_dir, adapter_dir):
    from safetensors.numpy import load_file

    a, b = load_file(os.path.join(adapter_dir, "adapter_model.safetensors")), load_file(
        os.path.join(out_dir, "peft", "adapter_model.safetensors"))
    f.check(sorted(a) == sorted(b), "peft/ tensor names differ from the adapter's")
    f.check(all(np.array_equal(a[k], b[k]) and b[k].dtype == np.float32 for k in a if k in b), "peft/ values differ")
    ca, cb = json.load(open(os.path.join(adapter_dir, "adapter_config.json"))), json.load(
        open(os.path.join(out_dir, "peft", "adapter_config.json")))
    for key in ("r", "lora_alpha", "peft_type", "use_rslora"):
        f.check(ca.get(key) == cb.get(key), f"peft/ adapter_config {key}: {cb.get(key)!r} != {ca.get(key)!r}")
    for key in ("target_modules", "target_parameters"):
        f.check(sorted(ca.get(key) or []) == sorted(cb.get(key) or []), f"peft/ adapter_config {key}: {cb.get(key)}")


def check_modelfiles(f, out_dir, harmony):
    for d, fname in MODELFILES.items():
        text = open(os.path.join(out_dir, fname), encoding="utf-8").read()
        m = modelfile_parts(text)
        f.check(m["from"] == ["./model.gguf"], f"{fname}: FROM {m['from']}")
        f.check("# FROM ./base.gguf" in m["comments"] and "# ADAPTER ./adapter.gguf" in m["comments"],
                f"{fname}: the commented base + ADAPTER variant is missing")
        f.check(sorted(m["stops"]) == ["<|call|>", "<|return|>"], f"{fname}: stops {m['stops']} (never <|end|>)")
        f.check(m["system"] == harmony[d]["instruction"], f"{fname}: SYSTEM {m['system']!r}")
        if f.check(m["template"] is not None, f"{fname}: no TEMPLATE"):
            # What Ollama passes: .System = the SYSTEM text; .Messages with that system message and the user's text.
            data = {"System": m["system"], "Messages": [{"Role": "system", "Content": m["system"]},
                                                         {"Role": "user", "Content": SOURCES[d]}]}
            got = go_render(m["template"], data)
            f.check(got == harmony[d]["text"], f"{fname}: TEMPLATE renders\n{got!r}\nexpected\n{harmony[d]['text']!r}")
            f.check("<|start|>" in m["template"] and "<|end|>" in m["template"],
                    f"{fname}: Ollama enables harmony parsing only when the template has <|start|> and <|end|>")
    readme = open(os.path.join(out_dir, "README.md"), encoding="utf-8").read()
    for needle in ("ollama create tiny-zh2nan -f Modelfile", "ollama run tiny-zh2nan", "--lora adapter.gguf",
                   "Modelfile.nan2zh", "Modelfile.zh2tl", "Modelfile.tl2nan"):
        f.check(needle in readme, f"README.md lacks {needle!r}")


def main():
    bin_dir, scratch, helper = sys.argv[1:4]
    f = Failures("test_export_files")
    tiny, adapter = os.path.join(scratch, "tiny"), os.path.join(scratch, "adapter")
    cfg = json.load(open(os.path.join(tiny, "config.json")))
    ck = load_checkpoint(tiny)
    peft_cfg, lora = peft_factors(adapter)
    harmony = {d: harmony_prompt(helper, d, s) for d, s in SOURCES.items()}
    vocab_bytes = [None] * 199998
    for line in open(TIKTOKEN, "rb"):
        tok, rk = line.split()
        vocab_bytes[int(rk)] = base64.b64decode(tok)

    out = os.path.join(scratch, "out")
    part = sys.argv[4] if len(sys.argv) > 4 else "all"
    if part in ("model", "all"):
        r_model, ts_model = read_gguf(os.path.join(out, "model.gguf"))
        check_model_metadata(f, r_model, cfg, "tiny", vocab_bytes, harmony)
        check_model_tensors(f, "model.gguf", ts_model, ck, cfg, lora, T.BF16)
        check_peft_copy(f, out, adapter)
        check_modelfiles(f, out, harmony)
        leftovers = [n for n in os.listdir(out) if n.startswith(".") or n.endswith(".tmp")]
        f.check(not leftovers, f"temporary files left in {out}: {leftovers}")
    if part in ("base", "all"):
        r_base, ts_base = read_gguf(os.path.join(out, "base.gguf"))
        f.check(field_value(r_base, "general.name") == "tiny-base", "base.gguf general.name")
        f.check(field_value(r_base, "tokenizer.chat_template") is not None, "base.gguf has the chat template")
        check_model_tensors(f, "base.gguf", ts_base, ck, cfg, {}, None)
        r_ad, ts_ad = read_gguf(os.path.join(out, "adapter.gguf"))
        check_adapter(f, r_ad, ts_ad, ts_base, cfg, peft_cfg, lora)
    if part in ("q8", "all"):
        _, ts_q8 = read_gguf(os.path.join(scratch, "out_q8", "model.gguf"))
        check_model_tensors(f, "q8_0 model.gguf", ts_q8, ck, cfg, lora, T.Q8_0)
    return f.finish()


if __name__ == "__main__":
    sys.exit(main())
