#!/usr/bin/env python3
"""osstune against transformers + peft on a real checkpoint directory: the base model (MXFP4 experts, dequantized
by transformers) with a PEFT adapter that osstune wrote, loaded with PeftModel.from_pretrained; the logits must
match osstune-logits within 1e-5 relative (both float32).

usage: check_against_transformers.py OSSTUNE_LOGITS MODEL_DIR ADAPTER_DIR [TOKENS]
Exits 77 (skipped) with the reason when torch / transformers / peft are not installed.
"""
import json
import os
import subprocess
import sys
import tempfile

TOL = 1e-5


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    tool, model_dir, adapter_dir = sys.argv[1:4]
    tokens = sys.argv[4] if len(sys.argv) > 4 else "200006,17360,200008,3575,553,17554,162016,11,261,4410,200007,200006,173781"
    try:
        import numpy as np
        import torch
        from peft import PeftModel
        from transformers import GptOssForCausalLM, Mxfp4Config
    except ImportError as e:
        print(f"SKIPPED: needs torch, transformers and peft ({e})")
        return 77
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.f32")
        res = subprocess.run([tool, "--backend", "cpu", "--model", model_dir, "--adapter", adapter_dir, "--tokens", tokens, "--out", out],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr)
            return 1
        ours_loss = json.loads(res.stdout.strip().splitlines()[-1])["loss"]
        ids = [int(t) for t in tokens.split(",")]
        ours = np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)
    model = GptOssForCausalLM.from_pretrained(model_dir, quantization_config=Mxfp4Config(dequantize=True),
                                              dtype=torch.float32, attn_implementation="eager")
    model = model.float()  # MXFP4 dequantizes to bf16, which float32 holds exactly
    model.config._experts_implementation = "eager"
    model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    with torch.no_grad():
        x = torch.tensor([ids])
        o = model(input_ids=x, labels=x)
    ref = o.logits[0].float().numpy()
    rel = float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))
    loss_rel = abs(ours_loss - o.loss.item()) / abs(o.loss.item())
    ok = rel <= TOL and loss_rel <= TOL
    print(f"{'ok  ' if rel <= TOL else 'FAIL'} logits vs transformers+peft rel_err {rel:.3e} (tol {TOL:g})")
    print(f"{'ok  ' if loss_rel <= TOL else 'FAIL'} loss {ours_loss:.6f} vs {o.loss.item():.6f} rel_err {loss_rel:.3e}")
    print(f"check_against_transformers: {int(rel <= TOL) + int(loss_rel <= TOL)} passed, {2 - int(rel <= TOL) - int(loss_rel <= TOL)} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
