"""llama.cpp itself (the llama-cpp-python package, which builds it) loads what osstune-export wrote and computes what
osstune computes.

1. Structure, tightly: the tiny model converted to float32 (every GGUF tensor F32, KV cache F32) so that llama.cpp
   computes in float32 throughout. Its logits for the 88-token example must equal osstune-logits' (CPU, float32)
   up to summation order — for base.gguf alone and for base.gguf + adapter.gguf (LoRA on attention and on the 3-D
   expert tensors). osstune-logits runs with llama.cpp's rounded YaRN correction range here (`truncate: true`,
   spec §2.4), the one difference the file format cannot remove.
2. The YaRN rounding, quantified: the same llama.cpp logits against osstune-logits with the HF (unrounded) range.
3. The shipped types: model.gguf (MXFP4 experts, bf16 attention with the merged LoRA, bf16 LoRA experts) and
   base.gguf + adapter.gguf. llama.cpp's CPU matmuls round activations to bf16 for bf16 weights and to Q8_0 for
   MXFP4 weights, so these agree only to about a percent; the median per-position error is checked (see
   test_export_merged_logits.py on why the median).
4. The vocabulary: llama.cpp tokenizes the harmony prompt (special tokens included) into exactly the ids
   formats/harmony.h renders, so tokens, merges and the pre-tokenizer name are right.

Skipped (exit 77) when llama-cpp-python is not installed.

usage: test_export_llama_cpp.py BIN_DIR SCRATCH_DIR HARMONY_HELPER
"""
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import (  # noqa: E402
    SKIP, EXAMPLE_TOKENS, Failures, harmony_prompt, osstune_logits, rel_err, with_truncated_yarn)

try:
    from llama_cpp import Llama
except ImportError:
    print("SKIPPED: llama-cpp-python is not installed (pip install llama-cpp-python; it builds llama.cpp, ~5 min)")
    sys.exit(SKIP)

# float32 everywhere: what is left is summation order (observed ~4e-7).
TOL_F32 = 1e-5
# bf16/Q8_0-rounded activations in llama.cpp's CPU matmuls (observed ~1-2 % median per position on the tiny model)
TOL_QUANT_MEDIAN = 4e-2
GGML_TYPE_F32 = 0


def llama_logits(model, tokens, lora=None):
    m = Llama(model_path=model, lora_path=lora, n_ctx=128, n_batch=128, n_ubatch=128, n_threads=2, logits_all=True,
              type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
    m.eval(tokens)
    out = np.array(m.scores[: len(tokens)], dtype=np.float32)
    del m
    return out


def per_position(a, ref):
    e = np.array([rel_err(a[t], ref[t]) for t in range(len(ref))])
    return float(np.median(e)), float(e.max())


def main():
    bin_dir, scratch, helper = sys.argv[1:4]
    f = Failures("test_export_llama_cpp")
    work = os.path.join(scratch, "llama_cpp")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    T = EXAMPLE_TOKENS
    adapter = os.path.join(scratch, "adapter")
    ot = lambda model, name, ad=None: osstune_logits(bin_dir, model, T, os.path.join(work, name + ".f32"), adapter=ad)
    for m in ("tiny", "tiny_f32"):
        with_truncated_yarn(os.path.join(scratch, m), os.path.join(work, m + "_yarn_rounded"))

    # 1. float32: structure and the adapter mapping, tightly.
    f32 = os.path.join(scratch, "out_f32")
    ref_base = ot(os.path.join(work, "tiny_f32_yarn_rounded"), "f32_base")
    ref_lora = ot(os.path.join(work, "tiny_f32_yarn_rounded"), "f32_lora", adapter)
    l_base = llama_logits(os.path.join(f32, "base.gguf"), T)
    l_lora = llama_logits(os.path.join(f32, "base.gguf"), T, os.path.join(f32, "adapter.gguf"))
    f.close("float32 base.gguf vs osstune-logits (YaRN rounded as llama.cpp does)", rel_err(l_base, ref_base), TOL_F32)
    f.close("float32 base.gguf + adapter.gguf vs osstune-logits + adapter", rel_err(l_lora, ref_lora), TOL_F32)
    print(f"     max |difference| {np.abs(l_base - ref_base).max():.2e} (base), {np.abs(l_lora - ref_lora).max():.2e} "
          f"(+ adapter); logits std {ref_base.std():.2f}")

    # 2. What llama.cpp's rounded YaRN range costs: the same llama.cpp logits against HF's unrounded range.
    hf_base = ot(os.path.join(scratch, "tiny_f32"), "f32_base_hf_yarn")
    med, mx = per_position(l_base, hf_base)
    yarn_overall = rel_err(l_base, hf_base)
    print(f"YaRN rounding (llama.cpp vs HF range, float32, 88 tokens): overall {yarn_overall:.4f}, per position median "
          f"{med:.4f}, max {mx:.4f}, max |difference| {np.abs(l_base - hf_base).max():.3f}, argmax agreement "
          f"{(l_base.argmax(1) == hf_base.argmax(1)).mean():.3f}")
    d_pos = [rel_err(l_base[t], hf_base[t]) for t in (0, 1, 8, 32, 87)]
    print("     by position 0, 1, 8, 32, 87: " + ", ".join(f"{x:.2e}" for x in d_pos))
    f.check(yarn_overall > 100 * rel_err(l_base, ref_base), "the difference to the HF range is not explained by the "
                                                            "YaRN rounding (it should dwarf the float32 agreement)")

    # 3. The shipped files.
    out = os.path.join(scratch, "out")
    q_ref_base = ot(os.path.join(work, "tiny_yarn_rounded"), "base")
    q_ref_lora = ot(os.path.join(work, "tiny_yarn_rounded"), "lora", adapter)
    runs = {
        "base.gguf": (llama_logits(os.path.join(out, "base.gguf"), T), q_ref_base),
        "model.gguf (merged)": (llama_logits(os.path.join(out, "model.gguf"), T), q_ref_lora),
        "base.gguf + adapter.gguf": (llama_logits(os.path.join(out, "base.gguf"), T, os.path.join(out, "adapter.gguf")),
                                     q_ref_lora),
    }
    for name, (got, ref) in runs.items():
        med, mx = per_position(got, ref)
        print(f"{name}: overall {rel_err(got, ref):.4f}, per position max {mx:.4f}, argmax agreement "
              f"{(got.argmax(1) == ref.argmax(1)).mean():.3f}")
        f.close(f"{name} vs osstune-logits: median per-position relative error", med, TOL_QUANT_MEDIAN)
    no_lora = per_position(q_ref_base, q_ref_lora)[0]
    f.check(no_lora > 4 * TOL_QUANT_MEDIAN, f"the adapter changes the logits by only {no_lora:.3f}: a lost adapter "
                                            "would pass unnoticed")

    # 4. Tokenization of the harmony prompt.
    m = Llama(model_path=os.path.join(out, "model.gguf"), vocab_only=True, verbose=False)
    for d, src in (("zh2nan", "今天天氣很好。"), ("nan2zh", "今仔日天氣真好。 Hello, world's 123 tokens!")):
        h = harmony_prompt(helper, d, src)
        ids = m.tokenize(h["text"].encode(), add_bos=False, special=True)
        f.check(ids == h["ids"], f"{d}: llama.cpp tokenizes the prompt as\n{ids}\nosstune renders\n{h['ids']}")
        f.check(m.detokenize(ids, special=True).decode() == h["text"], f"{d}: detokenize does not give the text back")
    return f.finish()


if __name__ == "__main__":
    sys.exit(main())
