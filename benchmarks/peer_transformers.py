#!/usr/bin/env python3
"""The transformers + PEFT peer of bench_train: LoRA training steps on the same model directory and shapes.

The common recipe: the MXFP4 experts dequantized to bf16 at load (Mxfp4Config(dequantize=True)), bf16 base, eager
attention (gpt-oss's sinks need it), the fastest experts implementation transformers offers ("grouped_mm"),
gradient checkpointing, LoRA on q/k/v/o (fp32 adapter weights, PEFT's default upcast), AdamW with gradient
clipping at 1.0. One JSON line per case on stdout (and appended to --json FILE).

With targets=all a case also trains LoRA on every layer's experts, as the OpenAI cookbook's gpt-oss recipe does:
PEFT's target_parameters on mlp.experts.gate_up_proj and mlp.experts.down_proj (the 3-D expert tensors; PEFT adds
a rank-r update per expert), beside q/k/v/o -- what osstune's --lora-targets all (bench_train targets=attn+experts)
trains.

Cases (--case, repeatable):
  NAME:rows=R:seq=S        R rows of S random tokens, loss at every position (labels = input ids)
  NAME:batches=FILE        the steps bench_train --dump-batches wrote (packed rows: input ids, positions that
                           restart at each sample, labels with -100 outside the answers; attention is masked per
                           sample); steps are taken in order, cycling if there are too few
  ...:targets=attn|all     LoRA on q/k/v/o (default), or on q/k/v/o and the experts

usage: peer_transformers.py --model DIR --case SPEC [--case SPEC ...] [--warmup 3] [--steps 5] [--json FILE]
Exit status 3 (with the reason) when torch with CUDA, transformers or peft is missing; 4 when PEFT put no adapter
on some layer's experts in a targets=all case.
"""
import argparse
import json
import re
import statistics
import sys
import time

WANT_TRANSFORMERS = "5.17"
WANT_PEFT = "0.21"


def parse_case(spec):
    parts = spec.split(":")
    case = {"name": parts[0]}
    for p in parts[1:]:
        if "=" not in p:
            raise SystemExit(f"peer_transformers: --case '{spec}': '{p}' is not key=value")
        k, v = p.split("=", 1)
        case[k] = v
    if "batches" not in case and not ("rows" in case and "seq" in case):
        raise SystemExit(f"peer_transformers: --case '{spec}': needs rows=R:seq=S or batches=FILE")
    case.setdefault("targets", "attn")
    if case["targets"] not in ("attn", "all"):
        raise SystemExit(f"peer_transformers: --case '{spec}': targets must be attn or all")
    return case


ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]  # every layer's (PEFT matches name suffixes)


def read_batches(path, np):
    """The steps of bench_train --dump-batches: int32, per step T, ids[T], pos[T], labels[T]."""
    a = np.fromfile(path, dtype=np.int32)
    steps, i = [], 0
    while i < len(a):
        t = int(a[i])
        if t <= 0 or i + 1 + 3 * t > len(a):
            raise SystemExit(f"peer_transformers: {path}: damaged at offset {4 * i}")
        steps.append((a[i + 1:i + 1 + t], a[i + 1 + t:i + 1 + 2 * t], a[i + 1 + 2 * t:i + 1 + 3 * t]))
        i += 1 + 3 * t
    if not steps:
        raise SystemExit(f"peer_transformers: {path}: no steps")
    return steps


def packed_masks(pos, window, dtype, device, torch):
    """gpt-oss in transformers builds its masks without the position ids, so a packed row would attend across
    samples; pass the masks instead (additive, as eager attention takes them): key j is visible to query i when
    both are in the same sample and j <= i, and on sliding layers when also i - j < window."""
    pos = torch.as_tensor(pos, device=device)
    seg = torch.cumsum((pos == 0).long(), 0)
    i = torch.arange(len(pos), device=device)
    ok = (seg[:, None] == seg[None, :]) & (i[None, :] <= i[:, None])
    ok_sw = ok & (i[:, None] - i[None, :] < window)
    neg = torch.finfo(dtype).min
    as_mask = lambda m: torch.where(m, 0.0, neg).to(dtype)[None, None]
    return {"full_attention": as_mask(ok), "sliding_attention": as_mask(ok_sw)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--case", action="append", required=True)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-alpha", type=float, default=32)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--gflop-per-token", type=float, default=14.4)
    ap.add_argument("--experts", default="grouped_mm", help="transformers experts implementation")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    args = ap.parse_args()
    cases = [parse_case(c) for c in args.case]

    try:
        import numpy as np
        import torch
        import transformers
        import peft
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, Mxfp4Config
    except ImportError as e:
        print(f"peer_transformers: SKIPPED: needs torch, transformers and peft ({e})", file=sys.stderr)
        return 3
    if args.device == "cuda" and not torch.cuda.is_available():
        print("peer_transformers: SKIPPED: torch sees no CUDA device", file=sys.stderr)
        return 3
    for mod, want in ((transformers, WANT_TRANSFORMERS), (peft, WANT_PEFT)):
        if not mod.__version__.startswith(want):
            print(f"peer_transformers: note: {mod.__name__} {mod.__version__}, the issue's figures are for {want}",
                  file=sys.stderr)
    dev = torch.device(args.device)

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        args.model, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.bfloat16,
        attn_implementation="eager", experts_implementation=args.experts, device_map=args.device)
    model.config._experts_implementation = args.experts  # (from_pretrained takes it too; make sure it holds)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    load_s = time.perf_counter() - t0
    vocab = model.config.vocab_size
    print(f"peer_transformers: {args.model} loaded in {load_s:.0f} s (transformers {transformers.__version__}, "
          f"peft {peft.__version__}, torch {torch.__version__}, experts {model.config._experts_implementation})",
          file=sys.stderr)
    out_json = open(args.json, "a") if args.json else None

    for case in cases:
        experts = case["targets"] == "all"
        lcfg = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=0.0, bias="none",
                          target_modules=ATTENTION, target_parameters=EXPERTS if experts else None,
                          task_type="CAUSAL_LM")
        pm = get_peft_model(model, lcfg)
        pm.train()
        if experts:
            # PEFT matches target_parameters by name: check that every layer's experts got their adapters (A and B for
            # gate_up_proj and down_proj), so a PEFT that matched nothing cannot pass for an "all" row.
            per_layer = {}
            for name, p in pm.named_parameters():
                m = re.search(r"layers\.(\d+)\.mlp\.experts\..*lora_", name)
                if p.requires_grad and m:
                    per_layer[int(m.group(1))] = per_layer.get(int(m.group(1)), 0) + 1
            n_layers = model.config.num_hidden_layers
            if len(per_layer) != n_layers or min(per_layer.values()) < 4:
                print(f"peer_transformers: {case['name']}: PEFT put expert adapters on {len(per_layer)} of {n_layers} "
                      f"layers ({per_layer}); target_parameters did not take", file=sys.stderr)
                return 4
            print(f"peer_transformers: {case['name']}: LoRA on q,k,v,o and the experts of all {n_layers} layers "
                  f"({sum(p.numel() for p in pm.parameters() if p.requires_grad)} trainable values)", file=sys.stderr)
        params = [p for p in pm.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        n_steps = args.warmup + args.steps
        if "batches" in case:
            steps = read_batches(case["batches"], np)
            batches = []
            for s in range(n_steps):
                ids, pos, lab = steps[s % len(steps)]
                batches.append({"input_ids": torch.tensor(ids[None], dtype=torch.long, device=dev),
                                "position_ids": torch.tensor(pos[None], dtype=torch.long, device=dev),
                                "attention_mask": packed_masks(pos, model.config.sliding_window, torch.bfloat16,
                                                               dev, torch),
                                "labels": torch.tensor(lab[None], dtype=torch.long, device=dev)})
        else:
            rows, seq = int(case["rows"]), int(case["seq"])
            g = torch.Generator().manual_seed(1000)
            batches = []
            for s in range(n_steps):
                ids = torch.randint(0, vocab, (rows, seq), generator=g).to(dev)
                batches.append({"input_ids": ids, "labels": ids})
        if dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        times, tokens, targets, losses = [], 0, 0, []
        for s, b in enumerate(batches):
            t0 = time.perf_counter()
            out = pm(**b)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            losses.append(out.loss.item())
            if s >= args.warmup:
                times.append(dt)
                tokens += b["input_ids"].numel()
                targets += int((b["labels"][:, 1:] != -100).sum())
        total = sum(times)
        tps = tokens / total
        rec = {"bench": "peer", "case": case["name"], "lora_targets": "q,k,v,o+experts" if experts else "q,k,v,o",
               "lora_r": args.lora_r,
               "data": "pairs" if "batches" in case else "synthetic", "tokens_per_step": tokens / args.steps,
               "targets_per_step": targets / args.steps, "steps": args.steps,
               "step_ms_median": 1e3 * statistics.median(times), "step_ms_mean": 1e3 * total / args.steps,
               "tokens_per_s": tps, "mfu": args.gflop_per_token * 1e9 * tps / (args.peak_tflops * 1e12),
               "peak_tflops": args.peak_tflops, "loss_first": losses[0], "loss_last": losses[-1],
               "experts_implementation": model.config._experts_implementation,
               "gradient_checkpointing": True, "transformers": transformers.__version__, "peft": peft.__version__,
               "torch": torch.__version__}
        if dev.type == "cuda":
            free_b, total_b = torch.cuda.mem_get_info()
            rec["peak_gpu_gib"] = (total_b - free_b) / 2**30  # the caching allocator keeps its peak: like ours
            rec["max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
            rec["max_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        line = json.dumps(rec)
        print(line, flush=True)
        if out_json:
            print(line, file=out_json, flush=True)
        print(f"peer_transformers: {case['name']:<14} {tokens / args.steps:6.0f} tokens/step "
              f"{rec['step_ms_median']:8.1f} ms/step {tps:8.0f} tokens/s  peak {rec.get('peak_gpu_gib', 0):6.2f} GiB",
              file=sys.stderr)
        # back to the bare model for the next case
        model = pm.unload()
        del pm, opt, params, batches
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
