"""Converts a gpt-oss model directory to float32 with dense experts (transformers' dequantized layout:
gate_up_proj [E, H, 2I], down_proj [E, I, H]), values exactly those of the source (MXFP4 and bf16 are exact in
float32). Exported with osstune-export, every GGUF tensor is then F32 and llama.cpp computes in float32 throughout.

usage: test_export_make_f32.py MODEL_DIR OUT_DIR
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_export_common import hf_mxfp4_dequant, load_checkpoint  # noqa: E402


def main():
    src, dst = sys.argv[1], sys.argv[2]
    ck = load_checkpoint(src)
    out = {}
    for name, v in ck.items():
        if name.endswith("_scales"):
            continue
        if name.endswith("_blocks"):
            stem = name[: -len("_blocks")]
            w = hf_mxfp4_dequant(v, ck[stem + "_scales"])  # [E, out, in]
            out[stem] = np.ascontiguousarray(w.transpose(0, 2, 1)).astype(np.float32)
        else:
            out[name] = v.astype(np.float32)
    os.makedirs(dst, exist_ok=True)
    save_file(out, os.path.join(dst, "model.safetensors"))
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.pop("quantization_config", None)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


if __name__ == "__main__":
    main()
