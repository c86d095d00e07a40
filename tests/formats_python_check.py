"""Cross-checks osstune's checkpoint files against the Python reference stack.

- osstune-init-model's tiny model: transformers' AutoConfig reads its config.json; the `safetensors` package reads
  every shard (names, shapes, dtypes as spec §3.3 lists them, computed here independently; __metadata__; the
  index's total_size and weight_map); transformers loads both expert forms (MXFP4 and --dense-experts) and gives
  identical logits, which are finite and not trivially flat.
- The hub's config.json in the older rope_scaling + rope_theta form parses in transformers to the same rope.
- adapter_config.json written by ot_peft_config_write (left by test_formats_peft) loads with peft's LoraConfig
  and has the key set peft itself writes.

usage: formats_python_check.py OSSTUNE_INIT_MODEL SCRATCH_DIR PEFT_ADAPTER_DIR
Exit 77 (SKIPPED) when torch, transformers or safetensors cannot be imported.
"""
import json
import os
import shutil
import subprocess
import sys

try:
    import torch
    import transformers
    from safetensors import safe_open
except Exception as e:  # any import failure means this check cannot run here
    print(f"SKIPPED: python reference stack not importable ({e!r})")
    sys.exit(77)

failures = 0


def check(cond, what):
    global failures
    if cond:
        print(f"ok   {what}")
    else:
        failures += 1
        print(f"FAIL {what}")


def expected_tensors(c, mxfp4):
    """Spec §3.3 names and shapes, from the config alone."""
    H, V, E, I = c["hidden_size"], c["vocab_size"], c["num_local_experts"], c["intermediate_size"]
    Q, KV, NH = c["num_attention_heads"] * c["head_dim"], c["num_key_value_heads"] * c["head_dim"], c["num_attention_heads"]
    t = {"model.embed_tokens.weight": ([V, H], "BF16"), "model.norm.weight": ([H], "BF16"),
         "lm_head.weight": ([V, H], "BF16")}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        t.update({
            p + "input_layernorm.weight": ([H], "BF16"), p + "post_attention_layernorm.weight": ([H], "BF16"),
            p + "self_attn.q_proj.weight": ([Q, H], "BF16"), p + "self_attn.q_proj.bias": ([Q], "BF16"),
            p + "self_attn.k_proj.weight": ([KV, H], "BF16"), p + "self_attn.k_proj.bias": ([KV], "BF16"),
            p + "self_attn.v_proj.weight": ([KV, H], "BF16"), p + "self_attn.v_proj.bias": ([KV], "BF16"),
            p + "self_attn.o_proj.weight": ([H, Q], "BF16"), p + "self_attn.o_proj.bias": ([H], "BF16"),
            p + "self_attn.sinks": ([NH], "BF16"),
            p + "mlp.router.weight": ([E, H], "BF16"), p + "mlp.router.bias": ([E], "BF16"),
            p + "mlp.experts.gate_up_proj_bias": ([E, 2 * I], "BF16"), p + "mlp.experts.down_proj_bias": ([E, H], "BF16"),
        })
        if mxfp4:
            t.update({
                p + "mlp.experts.gate_up_proj_blocks": ([E, 2 * I, H // 32, 16], "U8"),
                p + "mlp.experts.gate_up_proj_scales": ([E, 2 * I, H // 32], "U8"),
                p + "mlp.experts.down_proj_blocks": ([E, H, I // 32, 16], "U8"),
                p + "mlp.experts.down_proj_scales": ([E, H, I // 32], "U8"),
            })
        else:
            t.update({p + "mlp.experts.gate_up_proj": ([E, H, 2 * I], "BF16"),
                      p + "mlp.experts.down_proj": ([E, I, H], "BF16")})
    return t


DTYPE_NAME = {torch.bfloat16: "BF16", torch.uint8: "U8", torch.float32: "F32", torch.float16: "F16"}
DTYPE_SIZE = {"BF16": 2, "U8": 1, "F32": 4, "F16": 2}


def check_files(d, mxfp4):
    tag = "mxfp4" if mxfp4 else "dense"
    cfg = transformers.AutoConfig.from_pretrained(d)
    check(type(cfg).__name__ == "GptOssConfig" and cfg.model_type == "gpt_oss", f"{tag}: AutoConfig gives GptOssConfig")
    rp = cfg.rope_parameters
    check(rp["rope_type"] == "yarn" and rp["rope_theta"] == 150000.0 and rp["factor"] == 32.0 and rp["beta_fast"] == 32.0
          and rp["beta_slow"] == 1.0 and rp["original_max_position_embeddings"] == 4096 and rp["truncate"] is False,
          f"{tag}: rope_parameters {rp}")
    check(cfg.hidden_size == 64 and cfg.num_hidden_layers == 4 and cfg.num_local_experts == 8 and
          cfg.num_experts_per_tok == 2 and cfg.head_dim == 16 and cfg.num_key_value_heads == 2 and
          cfg.sliding_window == 32 and cfg.vocab_size == 201088, f"{tag}: sizes")
    check(cfg.layer_types == ["sliding_attention", "full_attention"] * 2, f"{tag}: layer_types")
    q = getattr(cfg, "quantization_config", None)
    check((q is not None and q["quant_method"] == "mxfp4") == mxfp4, f"{tag}: quantization_config {q}")

    with open(os.path.join(d, "config.json")) as f:
        c = json.load(f)
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        index = json.load(f)
    want = expected_tensors(c, mxfp4)
    wm = index["weight_map"]
    check(set(wm) == set(want), f"{tag}: weight_map lists exactly the spec's {len(want)} tensors")
    total, seen = 0, {}
    for shard in sorted(set(wm.values())):
        check(shard.startswith("model-") and shard.endswith(f"-of-{len(set(wm.values())):05d}.safetensors"),
              f"{tag}: shard name {shard}")
        with safe_open(os.path.join(d, shard), framework="pt") as f:
            check(f.metadata() == {"format": "pt"}, f"{tag}: {shard} __metadata__ {f.metadata()}")
            for name in f.keys():
                t = f.get_tensor(name)
                seen[name] = (list(t.shape), DTYPE_NAME.get(t.dtype, str(t.dtype)))
                total += t.numel() * DTYPE_SIZE[seen[name][1]]
                if wm.get(name) != shard:
                    check(False, f"{tag}: {name} in {shard} but the index says {wm.get(name)}")
    check(seen == want, f"{tag}: shapes and dtypes of every tensor as spec §3.3 " +
          str([(k, seen.get(k), want.get(k)) for k in set(seen) | set(want) if seen.get(k) != want.get(k)][:3]))
    check(index["metadata"]["total_size"] == total, f"{tag}: metadata.total_size {index['metadata']['total_size']} == {total}")
    with open(os.path.join(d, "generation_config.json")) as f:
        g = json.load(f)
    check(g["eos_token_id"] == [200002, 199999, 200012] and g["bos_token_id"] == 199998, f"{tag}: generation_config")


def logits(d, mxfp4):
    from transformers import GptOssForCausalLM
    kw = {}
    if mxfp4:
        from transformers import Mxfp4Config
        kw["quantization_config"] = Mxfp4Config(dequantize=True)  # CPU: dequantize at load
    m = GptOssForCausalLM.from_pretrained(d, dtype=torch.bfloat16, **kw)
    m.eval()
    ids = torch.tensor([[200006, 17360, 200008, 1, 2, 3, 1000, 50000, 200007, 12]])
    with torch.no_grad():
        return m(ids).logits.float()


def main():
    tool, scratch, peft_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    q, d = os.path.join(scratch, "tiny"), os.path.join(scratch, "tiny_dense")
    subprocess.run([tool, "--preset", "tiny", "--seed", "5", "--out", q], check=True)
    subprocess.run([tool, "--preset", "tiny", "--seed", "5", "--out", d, "--dense-experts"], check=True)
    check_files(q, True)
    check_files(d, False)

    lq, ld = logits(q, True), logits(d, False)
    check(torch.isfinite(lq).all().item(), "logits finite")
    check(torch.equal(lq, ld), f"MXFP4 and dense forms give identical logits (max diff {(lq - ld).abs().max().item()})")
    sd = lq[0].std(dim=-1)
    check(bool((sd > 0.5).all() and (sd < 20).all()), f"logit std per position in (0.5, 20): {sd.min().item():.3f}..{sd.max().item():.3f}")
    check(bool((lq[0, 1:] - lq[0, :-1]).abs().max() > 0.1), "different tokens give different logits")

    # The hub's older config form.
    hub = os.path.join(scratch, "hub")
    os.makedirs(hub)
    shutil.copy("tests/fixtures/formats/gpt-oss-20b-config.json", os.path.join(hub, "config.json"))
    hc = transformers.AutoConfig.from_pretrained(hub)
    rp = hc.rope_parameters
    check(rp["rope_type"] == "yarn" and rp["rope_theta"] == 150000 and rp["factor"] == 32.0 and rp["truncate"] is False
          and hc.num_hidden_layers == 24 and hc.num_local_experts == 32 and hc.quantization_config["quant_method"] == "mxfp4",
          f"rope_scaling form parses: {rp}")

    # adapter_config.json written by osstune.
    try:
        from peft import LoraConfig
    except Exception as e:
        print(f"note: peft not importable ({e!r}); adapter_config.json check skipped")
        return
    lc = LoraConfig.from_pretrained(peft_dir)
    check(lc.r == 8 and lc.lora_alpha == 16 and lc.use_rslora is False and lc.peft_type == "LORA" and
          lc.task_type == "CAUSAL_LM", "peft loads osstune's adapter_config.json")
    check(set(lc.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"} and
          list(lc.target_parameters) == ["7.mlp.experts.gate_up_proj", "7.mlp.experts.down_proj"] and
          lc.base_model_name_or_path == "openai/gpt-oss-20b", "target_modules, target_parameters, base model")
    with open(os.path.join(peft_dir, "adapter_config.json")) as f:
        ours = json.load(f)
    with open("tests/fixtures/formats/peft_adapter_config.json") as f:
        theirs = json.load(f)
    missing = set(theirs) - set(ours) - {"peft_version"}
    check(not missing and set(ours) <= set(theirs), f"same keys as peft writes (missing {sorted(missing)}, extra {sorted(set(ours) - set(theirs))})")
    wrong = [k for k in ours if type(ours[k]) is not type(theirs[k]) and theirs[k] is not None and ours[k] is not None]
    check(not wrong, f"same JSON types as peft writes {wrong}")


if __name__ == "__main__":
    main()
    print(f"{'FAILED' if failures else 'passed'}: {failures} failure(s)")
    sys.exit(1 if failures else 0)
