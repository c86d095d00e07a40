"""Regenerates the small fixtures under tests/fixtures/formats/ (run from the repository root).

- py_written.safetensors: a file written by the `safetensors` package (torch API), which the C reader must read
  back exactly (test_formats_safetensors). Values are simple closed forms so the C test can recompute them.
- config_rope_parameters.json: a config.json as transformers 5.x writes it (rope_parameters with rope_theta inside,
  eos_token_id a list, no quantization_config), with 20b sizes but 6 layers and a custom layer_types.
- gpt-oss-20b-config.json (not generated here): the hub's config.json in the older rope_scaling + rope_theta form,
  written from spec §1.
- peft_adapter_config.json: what peft writes for LoraConfig(target_modules="all-linear", target_parameters=...)
  on a 2-layer GptOss model: target_modules comes back expanded to full per-layer names.
"""
import json
import os
import shutil
import tempfile

import torch
from safetensors.torch import save_file

OUT = "tests/fixtures/formats"


def safetensors_fixture():
    t = {
        "a.bf16": (torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0).to(torch.bfloat16),
        "b.f32": torch.tensor([1.0, -2.5, 3.25, 1e-3], dtype=torch.float32),
        "c.f16": torch.tensor([[0.5, -0.25], [65504.0, 6.0e-5]], dtype=torch.float16),
        "d.u8": torch.arange(10, dtype=torch.uint8).reshape(5, 2),
        "e.i64": torch.tensor([-3, 1 << 40], dtype=torch.int64),
        "f.scalar": torch.tensor(7.0, dtype=torch.float32),
        "g.empty": torch.zeros((0, 4), dtype=torch.bfloat16),
    }
    save_file(t, os.path.join(OUT, "py_written.safetensors"), metadata={"format": "pt", "note": "fixture"})


def config_fixture():
    from transformers import GptOssConfig

    c = GptOssConfig(num_hidden_layers=6, num_local_experts=32, eos_token_id=[200002, 199999], pad_token_id=199999,
                     bos_token_id=None, router_aux_loss_coef=0.9,
                     layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2)
    with open(os.path.join(OUT, "config_rope_parameters.json"), "w") as f:
        f.write(c.to_json_string())


def peft_fixture():
    from peft import LoraConfig, get_peft_model
    from transformers import GptOssConfig, GptOssForCausalLM

    torch.manual_seed(0)
    cfg = GptOssConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, head_dim=16, num_local_experts=3, num_experts_per_tok=2,
                       intermediate_size=32)
    model = GptOssForCausalLM(cfg)
    lc = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", task_type="CAUSAL_LM",
                    target_parameters=["1.mlp.experts.gate_up_proj", "1.mlp.experts.down_proj"])
    pm = get_peft_model(model, lc)
    d = tempfile.mkdtemp()
    try:
        pm.save_pretrained(d)
        with open(os.path.join(d, "adapter_config.json")) as f:
            j = json.load(f)
    finally:
        shutil.rmtree(d)
    j["target_modules"] = sorted(j["target_modules"])  # peft writes a set: fix the order for a stable file
    with open(os.path.join(OUT, "peft_adapter_config.json"), "w") as f:
        json.dump(j, f, indent=2, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    safetensors_fixture()
    config_fixture()
    peft_fixture()
