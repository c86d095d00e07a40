"""The merged model computes what base + adapter computes, and which storage of the LoRA'd experts keeps it closer.

model.gguf's weights are mapped back to an HF checkpoint (float32, dense experts) and run through osstune-logits;
the reference is osstune-logits on the base model with the PEFT adapter applied unmerged. No llama.cpp is involved:
the difference is exactly what storing the merged weights costs (bf16 attention; bf16 or Q8_0 experts).

Per position t the relative error ‖l_t − ref_t‖ / ‖ref_t‖ over the vocabulary is taken; the median over the 88
positions is compared with the tolerance. The median, not the maximum: in a mixture-of-experts model a weight
perturbation of 0.1 % can flip a near-tied top-k router decision at a few positions, which moves those positions'
logits by tens of percent whatever the storage (the maximum is printed, not asserted).

usage: test_export_merged_logits.py BIN_DIR SCRATCH_DIR HARMONY_HELPER
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import (  # noqa: E402
    EXAMPLE_TOKENS, Failures, gguf_to_hf_dense, hf_mxfp4_dequant, load_checkpoint, osstune_logits, rel_err)

# bf16 rounding of the merged weights (relative step 2^-8) moves the tiny model's logits by ~0.5 % per position;
# 2 % leaves room for other seeds while a lost or mis-mapped LoRA term (≈ 36 % here) fails clearly.
TOL_MEDIAN = 2e-2


def per_position(a, ref):
    e = np.array([rel_err(a[t], ref[t]) for t in range(len(ref))])
    return float(np.median(e)), float(e.max())


def main():
    bin_dir, scratch = sys.argv[1], sys.argv[2]
    f = Failures("test_export_merged_logits")
    tiny, adapter = os.path.join(scratch, "tiny"), os.path.join(scratch, "adapter")
    work = os.path.join(scratch, "merged_logits")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    T = EXAMPLE_TOKENS
    lg = lambda model, name, ad=None: osstune_logits(bin_dir, model, T, os.path.join(work, name + ".f32"), adapter=ad)

    ref = lg(tiny, "ref", adapter)
    base = lg(tiny, "base")
    lora_effect = per_position(base, ref)[0]
    print(f"effect of the adapter itself (base vs base + adapter): median {lora_effect:.4f}")
    f.check(lora_effect > 10 * TOL_MEDIAN, "the adapter barely changes the logits: the comparison would not see a lost LoRA")

    # The mapping back to HF must itself be exact: base.gguf (nothing merged) gives the base model's logits.
    gguf_to_hf_dense(os.path.join(scratch, "out", "base.gguf"), tiny, os.path.join(work, "hf_base"))
    f.close("base.gguf mapped back vs the base model (exact up to summation order)",
            rel_err(lg(os.path.join(work, "hf_base"), "hf_base"), base), 1e-6)

    results = {}
    for kind, path in (("bf16", os.path.join(scratch, "out", "model.gguf")),
                       ("q8_0", os.path.join(scratch, "out_q8", "model.gguf"))):
        d = os.path.join(work, "hf_" + kind)
        gguf_to_hf_dense(path, tiny, d)
        results[kind] = lg(d, "hf_" + kind)
        med, mx = per_position(results[kind], ref)
        print(f"model.gguf with {kind} LoRA experts vs base + adapter: median {med:.4f}, max {mx:.4f}, "
              f"overall {rel_err(results[kind], ref):.4f}")
        f.close(f"{kind}: median per-position relative error", med, TOL_MEDIAN)

    # The same merge from a float32 checkpoint with dense experts (transformers' layout): attention stays float32,
    # the LoRA'd experts become bf16.
    tiny_f32 = os.path.join(scratch, "tiny_f32")
    d = os.path.join(work, "hf_from_dense")
    gguf_to_hf_dense(os.path.join(scratch, "out_f32", "model.gguf"), tiny_f32, d)
    dense = lg(d, "hf_from_dense")
    med, mx = per_position(dense, ref)
    print(f"model.gguf merged from dense float32 experts vs base + adapter: median {med:.5f}, max {mx:.4f}")
    f.close("dense experts merged: median per-position relative error", med, TOL_MEDIAN)

    # The expert storage alone: a reference with the same bf16 attention as the file but exactly merged experts
    # (MXFP4 dequantized + scale·B·A in float64), so only the experts' storage differs.
    from safetensors.numpy import load_file, save_file

    ck = load_checkpoint(tiny)
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    r, scale = cfg["r"], cfg["lora_alpha"] / cfg["r"]
    ad = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    w = load_file(os.path.join(work, "hf_bf16", "model.safetensors"))
    pre = "base_model.model.model.layers."
    n_layers = json.load(open(os.path.join(tiny, "config.json")))["num_hidden_layers"]
    for l in range(n_layers):
        for stem, nested in (("gate_up_proj", "base_layer."), ("down_proj", "")):
            W = hf_mxfp4_dequant(ck[f"model.layers.{l}.mlp.experts.{stem}_blocks"],
                                 ck[f"model.layers.{l}.mlp.experts.{stem}_scales"])
            ka = f"{pre}{l}.mlp.experts.{nested}lora_A.weight"
            if ka in ad:
                A = ad[ka].astype(np.float64)
                B = ad[ka.replace("lora_A", "lora_B")].astype(np.float64)
                E = W.shape[0]
                W = W + scale * np.einsum("eor,eri->eoi", B.reshape(B.shape[0], r, E).transpose(2, 0, 1), A.reshape(E, r, -1))
            w[f"model.layers.{l}.mlp.experts.{stem}"] = np.ascontiguousarray(W.transpose(0, 2, 1)).astype(np.float32)
    exact_dir = os.path.join(work, "hf_exact_experts")
    os.makedirs(exact_dir)
    save_file(w, os.path.join(exact_dir, "model.safetensors"))
    shutil.copy(os.path.join(work, "hf_bf16", "config.json"), exact_dir)
    exact = lg(exact_dir, "exact_experts")
    med = {k: per_position(results[k], exact) for k in results}
    for k, (m, mx) in med.items():
        print(f"expert storage alone, {k}: median {m:.5f}, max {mx:.4f}")
    # The documented default (docs/export.md): bf16 keeps the logits closer than Q8_0.
    f.check(med["bf16"][0] < med["q8_0"][0], f"bf16 experts ({med['bf16'][0]:.5f}) are not closer than Q8_0 "
                                               f"({med['q8_0'][0]:.5f}): revisit the default --expert-lora-type")
    return f.finish()


if __name__ == "__main__":
    sys.exit(main())
