"""Writes a PEFT adapter (adapter_config.json + adapter_model.safetensors) for a gpt-oss model directory, with
non-zero random factors so that every LoRA path of the exporter changes the numbers.

usage: test_export_make_adapter.py MODEL_DIR OUT_DIR [--expert-layers 1,3] [--seed N]

Layout and key names as peft 0.21 writes them (spec §6.5): attention A [r, in], B [out, r]; expert A [r·E, in]
(expert-major), B [out, r·E] (expert-minor: column k·E + e); when both expert parameters are adapted, gate_up_proj
(listed first in target_parameters) sits under `base_layer`.
"""
import argparse
import json
import os

import numpy as np
from safetensors.numpy import save_file


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--expert-layers", default="1,3")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--r", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=8.0)
    ap.add_argument("--b-sigma", type=float, default=0.05)
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.model_dir, "config.json")))
    H, I, E = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_local_experts"]
    Q = cfg["num_attention_heads"] * cfg["head_dim"]
    KV = cfg["num_key_value_heads"] * cfg["head_dim"]
    L, r = cfg["num_hidden_layers"], a.r
    expert_layers = [int(x) for x in a.expert_layers.split(",") if x != ""]
    rng = np.random.default_rng(a.seed)

    def factors(n_exp, fan_in, fan_out):
        # A as PEFT initialises it (kaiming-uniform bound 1/sqrt(in)); B non-zero, as after training.
        A = rng.uniform(-1, 1, size=(r * n_exp, fan_in)) / np.sqrt(fan_in)
        B = rng.normal(0, a.b_sigma, size=(fan_out, r * n_exp))
        return A.astype(np.float32), B.astype(np.float32)

    pre = "base_model.model.model.layers."
    tensors = {}
    for l in range(L):
        for name, fin, fout in (("q_proj", H, Q), ("k_proj", H, KV), ("v_proj", H, KV), ("o_proj", Q, H)):
            A, B = factors(1, fin, fout)
            tensors[f"{pre}{l}.self_attn.{name}.lora_A.weight"] = A
            tensors[f"{pre}{l}.self_attn.{name}.lora_B.weight"] = B
        if l in expert_layers:
            A, B = factors(E, H, 2 * I)
            tensors[f"{pre}{l}.mlp.experts.base_layer.lora_A.weight"] = A
            tensors[f"{pre}{l}.mlp.experts.base_layer.lora_B.weight"] = B
            A, B = factors(E, I, H)
            tensors[f"{pre}{l}.mlp.experts.lora_A.weight"] = A
            tensors[f"{pre}{l}.mlp.experts.lora_B.weight"] = B
    os.makedirs(a.out_dir, exist_ok=True)
    save_file(tensors, os.path.join(a.out_dir, "adapter_model.safetensors"))
    if sorted(expert_layers) == list(range(L)):  # every layer: peft's plain parameter names
        target_parameters = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    else:
        target_parameters = [f"{l}.mlp.experts.{p}" for l in expert_layers for p in ("gate_up_proj", "down_proj")]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": r,
        "lora_alpha": a.alpha,
        "lora_dropout": 0.0,
        "use_rslora": False,
        "use_dora": False,
        "bias": "none",
        "target_modules": ["k_proj", "o_proj", "q_proj", "v_proj"],
        "target_parameters": target_parameters,
        "base_model_name_or_path": None,
        "inference_mode": True,
    }
    with open(os.path.join(a.out_dir, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
