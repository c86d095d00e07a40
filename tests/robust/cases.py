"""The robustness suite's case list: one Case per malformed input, hostile output path, full disk or signal.

A case names the program and its arguments (run in the case's own, fresh directory), builds its inputs there
(`setup`), and says what must happen: `expect` "error" (exit 1), "usage" (exit 2), "ok" (exit 0) or "signal:TERM"
(death by that signal, after cleaning up); `says`, substrings the message must contain (the file, and the key, line
or tensor at fault); `creates` / `changes` / `removes`, the only paths of the case directory allowed to appear,
change or go (a failing case allows none). suite.py checks all of that plus: no crash, no sanitizer report, no
hang, the shared fixtures untouched.

Each group below is one ctest test (robust_<group>, label `robust`); the functions before them build the inputs and
the command lines most cases share.

osstune-train's cases are in train_cases.py: its inputs against the model ("train") and its run directory ("ckpt":
checkpoint and state.pb damage, the other mode's run directory, pruning, the lock, resume messages). A checkpoint case
copies a run directory trained once per suite run, damages it in `setup`, and expects osstune-train to refuse it or
to fall back to the previous checkpoint -- with `changes` naming what a resumed run may write. The randomized campaign
of signals during training (SIGTERM / SIGKILL at random moments, against an uninterrupted run) is
tests/test_train_signals.sh.
"""
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import inputs as I

try:
    import numpy as np
    import h5py  # noqa: F401  (inputs.pairs_h5 writes with it)
except ImportError:
    np = None

CASES = []


@dataclass
class Case:
    group: str
    name: str
    argv: object                       # list, or f(ctx) -> list; argv[0] a program name from BIN_DIR
    setup: Optional[Callable] = None   # f(ctx): writes the inputs into ctx.dir
    expect: str = "error"
    says: tuple = ()
    creates: object = ()               # tuples, or f(ctx) -> tuple (names known only after setup)
    changes: object = ()
    removes: object = ()
    env: dict = field(default_factory=dict)
    timeout: float = 60
    drive: Optional[Callable] = None   # f(ctx, argv, env) -> (rc, stdout, stderr): runs the program itself (and
    #                                    may set ctx.note to a problem it saw)
    preexec: Optional[Callable] = None
    skip: Optional[Callable] = None    # f(ctx) -> reason to skip, or None
    check: Optional[Callable] = None   # f(ctx, stdout, stderr) -> problem, or None (after the generic checks)


def add(*args, **kw):
    CASES.append(Case(*args, **kw))


def at(fn, *args, **kw):
    """A setup that calls fn(ctx.dir, *args, **kw)."""
    return lambda ctx: fn(ctx.dir, *args, **kw)


def steps(*fns):
    def run(ctx):
        for f in fns:
            if f:
                f(ctx)
    return run


def dead_pid():
    """The id of a process that has just exited (so no process has it now)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def run_popen(ctx, argv, env, during=None, timeout=60):
    """Runs argv with `during(proc)` called while it runs; returns (rc, stdout, stderr)."""
    p = subprocess.Popen(argv, cwd=ctx.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    if during:
        during(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return "timeout", out.decode(errors="replace"), err.decode(errors="replace")
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def feed_fifo(path, data, hold=0.0):
    """A thread that writes data into the FIFO at path, then keeps it open `hold` seconds."""
    def run():
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            time.sleep(hold)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def drain_fifo(path, sink):
    def run():
        with open(path, "rb") as f:
            sink.append(f.read())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def symlink(target, name):
    return lambda ctx: os.symlink(target, ctx.path(name))


def mkfifo(name):
    return lambda ctx: os.mkfifo(ctx.path(name))


def mkdir(name):
    return lambda ctx: os.makedirs(ctx.path(name))


# ---- the programs, as most cases run them ----------------------------------------------------------------------
def prep(*args):
    return lambda ctx: ["osstune-prep", "--tokenizer", ctx.tok, *args]


def prep_in(name, extra=()):
    return prep("--in", name, "--out", "out.h5", "--quiet", *extra)


def logits(*extra, model="m", out="out.f32"):
    return ["osstune-logits", "--model", model, "--tokens", "1,2,3", "--out", out, *extra]


def train_on(data):
    return lambda ctx: ["osstune-train", "--model", ctx.golden_model, "--data", data, "--run-dir", "run", "--steps", "1",
                        "--seq-len", "32", "--rows-per-step", "1", "--backend", "cpu"]


def tokenizer_json_fixture(ctx):
    return ctx.fixture("tokenizer_json", lambda path: subprocess.run(
        [sys.executable, os.path.join(I.REPO, "tests", "data_make_tokenizer_json.py"), I.TIKTOKEN, path], check=True,
        stdout=subprocess.DEVNULL)) + "/tokenizer.json"


INIT = ["osstune-init-model", "--preset", "tiny", "--seed", "1", "--out", "out", "--set", "vocab_size=512", "--set",
        "pad_token_id=1", "--set", "eos_token_id=2", "--set", "bos_token_id=3", "--threads", "1"]

EXPORT = ["osstune-export", "--model", "m", "--adapter", "a", "--out", "out", "--only", "adapter,modelfile,peft",
          "--name", "g"]
EXPORTED = ("out/adapter.gguf", "out/Modelfile", "out/Modelfile.nan2zh", "out/Modelfile.zh2tl", "out/Modelfile.tl2zh",
            "out/Modelfile.nan2tl", "out/Modelfile.tl2nan", "out/peft", "out/README.md")
export_setup = steps(at(I.model), at(I.adapter))


# ==== outputs: never an input, never anything but a regular file ===================================================
def prep_out(out, *extra, tok=None):
    return lambda ctx: ["osstune-prep", "--tokenizer", tok or ctx.tok, "--in", "in.tsv", "--out", out, "--quiet",
                        *extra]


def copy_tokenizer(ctx):
    shutil.copy(ctx.tok, ctx.path("tok.tiktoken"))


pairs = at(I.tsv)
add("outputs", "prep_rejects_is_input", prep_out("out.h5", "--skip-bad", "--rejects", "in.tsv"), pairs,
    says=("--rejects in.tsv is the same file as --in in.tsv",))
add("outputs", "prep_out_is_input", prep_out("./in.tsv"), pairs, says=("--out ./in.tsv is the same file as --in",))
add("outputs", "prep_out_links_to_input", prep_out("link.h5"), steps(pairs, symlink("in.tsv", "link.h5")),
    says=("--out link.h5 is the same file as --in in.tsv",))
add("outputs", "prep_out_hard_link_to_input", prep_out("hard.h5"),
    steps(pairs, lambda ctx: os.link(ctx.path("in.tsv"), ctx.path("hard.h5"))),
    says=("--out hard.h5 is the same file as --in in.tsv",))
add("outputs", "prep_out_is_tokenizer", prep_out("tok.tiktoken", tok="tok.tiktoken"), steps(pairs, copy_tokenizer),
    says=("--out tok.tiktoken is the same file as --tokenizer tok.tiktoken",))
add("outputs", "prep_out_in_tokenizer_dir", prep_out("tok/tokenizer.json", tok="tok"),
    steps(pairs, lambda ctx: I.tokenizer_json(ctx.path("tok"), tokenizer_json_fixture(ctx), lambda o: None)),
    says=("--out tok/tokenizer.json is tok/tokenizer.json, a file of --tokenizer tok",))
add("outputs", "prep_out_is_rejects", prep_out("o.h5", "--skip-bad", "--rejects", "o.h5"), pairs,
    says=("--out o.h5 is the same file as --rejects o.h5",))
add("outputs", "prep_out_is_fifo", prep_out("out.h5"), steps(pairs, mkfifo("out.h5")), says=("--out out.h5 is a FIFO",))
add("outputs", "prep_out_is_directory", prep_out("out.h5"), steps(pairs, mkdir("out.h5")),
    says=("--out out.h5 is a directory",))
add("outputs", "prep_out_links_to_directory", prep_out("out.h5"), steps(pairs, mkdir("d"), symlink("d", "out.h5")),
    says=("--out out.h5 is a directory",))
add("outputs", "prep_rejects_is_fifo", prep_out("out.h5", "--skip-bad", "--rejects", "r.tsv"),
    steps(pairs, mkfifo("r.tsv")), says=("--rejects r.tsv is a FIFO",))
add("outputs", "prep_out_links_to_other_file_ok", prep_out("out.h5"),
    steps(pairs, lambda ctx: I.write(ctx.path("keep.bin"), b"keep"), symlink("keep.bin", "out.h5")),
    expect="ok", changes=("out.h5",))

model_setup = at(I.model)
add("outputs", "logits_out_is_config", logits(out="m/config.json"), model_setup,
    says=("--out m/config.json is m/config.json, a file of --model m",))
add("outputs", "logits_out_is_shard", logits(out="./m/" + I.SHARD0), model_setup, says=("a file of --model m",))
add("outputs", "logits_out_is_adapter", logits("--adapter", "a", out="a/adapter_model.safetensors"),
    steps(model_setup, at(I.adapter)), says=("a file of --adapter a",))
add("outputs", "logits_out_links_to_model", logits(out="link.f32"), steps(model_setup, symlink("m/config.json", "link.f32")),
    says=("--out link.f32 is", "a file of --model m"))
add("outputs", "logits_out_is_directory", logits(out="out.f32"), steps(model_setup, mkdir("out.f32")),
    says=("--out out.f32 is a directory",))
# The temporary file's name taken by a link to an input: the link goes, the input stays (it was truncated before).
add("outputs", "logits_temp_name_links_to_input", logits(), steps(model_setup, symlink("m/config.json", "out.f32.tmp")),
    expect="ok", creates=("out.f32",), removes=("out.f32.tmp",))


def logits_into_fifo(ctx, argv, env):
    got = []
    t = drain_fifo(ctx.path("out.f32"), got)
    result = run_popen(ctx, argv, env)
    t.join(10)
    if not got or len(got[0]) != 3 * 331 * 4:
        ctx.note = "the FIFO's reader got %s bytes, not %d" % (len(got[0]) if got else None, 3 * 331 * 4)
    return result


add("outputs", "logits_out_fifo_written_not_replaced", logits(), steps(model_setup, mkfifo("out.f32")), expect="ok",
    drive=logits_into_fifo)

add("outputs", "init_out_exists", INIT, mkdir("out"), says=("out already exists",))
add("outputs", "init_stale_tmp_links_elsewhere", INIT,
    steps(lambda ctx: I.write(ctx.path("keep/data.txt"), "precious"), symlink("keep", "out.tmp")),
    says=("out.tmp is in the way",))
add("outputs", "init_stale_tmp_holds_foreign_file", INIT, lambda ctx: I.write(ctx.path("out.tmp/notes.txt"), "mine"),
    says=("out.tmp holds notes.txt",))
add("outputs", "init_stale_tmp_holds_tokenizer_input", INIT + ["--tokenizer", "out.tmp/tokenizer.json"],
    lambda ctx: I.write(ctx.path("out.tmp/tokenizer.json"), "{}"), says=("out.tmp/tokenizer.json", "--tokenizer"))
add("outputs", "init_stale_tmp_removed", INIT,
    steps(lambda ctx: I.write(ctx.path("out.tmp/config.json"), "{}"),
          lambda ctx: I.write(ctx.path("out.tmp/model-00001-of-00002.safetensors.tmp"), "x")),
    expect="ok", creates=("out",), removes=("out.tmp",))

def copy_adapter_to(rel):
    def run(ctx):
            shutil.copytree(os.path.join(I.GOLDEN, "adapter"), ctx.path(rel))
    return run


add("outputs", "export_adapter_is_out_peft", EXPORT[:3] + ["--adapter", "out/peft"] + EXPORT[5:],
    steps(at(I.model), copy_adapter_to("out/peft")), says=("a file of --adapter out/peft",))
add("outputs", "export_peft_links_to_adapter", EXPORT, steps(export_setup, mkdir("out"), symlink("../a", "out/peft")),
    says=("out/peft/adapter_model.safetensors is", "a file of --adapter a"))
add("outputs", "export_modelfile_links_to_input", EXPORT,
    steps(export_setup, mkdir("out"), symlink("../m/config.json", "out/Modelfile")), says=("a file of --model m",))
add("outputs", "export_readme_is_fifo", EXPORT, steps(export_setup, mkdir("out"), mkfifo("out/README.md")),
    says=("out/README.md is a FIFO",))
add("outputs", "export_modelfile_is_directory", EXPORT, steps(export_setup, mkdir("out/Modelfile")),
    says=("out/Modelfile is a directory",))
add("outputs", "export_out_is_file", EXPORT, steps(export_setup, lambda ctx: I.write(ctx.path("out"), "x")),
    says=("out exists and is not a directory",))


# ==== full disks =====================================================================================================
DISK_BYTES = 64 << 10


def mount_tmpfs(ctx):
    """A DISK_BYTES tmpfs on ctx.dir/disk; None when this machine does not allow it."""
    os.makedirs(ctx.path("disk"), exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % DISK_BYTES, "tmpfs", ctx.path("disk")],
                       capture_output=True)
    return None if r.returncode else ctx.path("disk")


def tmpfs_skip(ctx):
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root (the file-size-limit variant of this case runs instead)"
    os.makedirs(ctx.dir, exist_ok=True)
    d = mount_tmpfs(ctx)
    if not d:
        return "mount -t tmpfs is not permitted here (the file-size-limit variant of this case runs instead)"
    subprocess.run(["umount", d])
    os.rmdir(d)
    return None


def on_full_tmpfs(ctx, argv, env):
    """Runs the program with its output on a full tmpfs; afterwards the tmpfs must be empty (checked before umount)."""
    d = mount_tmpfs(ctx)
    try:
        result = run_popen(ctx, argv, env)
        left = []
        for root, dirs, files in os.walk(d):
            left += [os.path.relpath(os.path.join(root, n), ctx.dir) for n in dirs + files]
        if left:
            ctx.note = "left on the full disk: %s" % left
    finally:
        subprocess.run(["umount", d])
    return result


def file_size_limit():
    """Writes past DISK_BYTES fail with EFBIG (SIGXFSZ ignored, so the write returns the error)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_BYTES, hard))


def disk_case(name, argv_for, setup, says_full, says_limit):
    add("disk", name + "_tmpfs", argv_for("disk/"), steps(setup, mkdir("disk")), says=says_full, drive=on_full_tmpfs,
        skip=tmpfs_skip)
    add("disk", name + "_file_size_limit", argv_for(""), setup, says=says_limit, preexec=file_size_limit)


def big_pairs(ctx):
    shutil.copy(os.path.join(I.REPO, "data", "sample", "train.tsv"), ctx.path("in.tsv"))


disk_case("prep", lambda p: prep("--in", "in.tsv", "--out", p + "out.h5", "--quiet"), big_pairs,
          ("out.h5.tmp.", "No space left on device"), ("out.h5.tmp.", "File too large"))
disk_case("prep_rejects", lambda p: prep("--in", "in.tsv", "--out", "out.h5", "--skip-bad", "--rejects", p + "r.tsv",
                                         "--quiet"),
          lambda ctx: I.tsv(ctx.dir, *(["壞"] * 20000)), ("r.tsv",), ("r.tsv",))
disk_case("logits", lambda p: ["osstune-logits", "--model", "m", "--tokens", ",".join(["5"] * 100), "--out",
                               p + "out.f32"], at(I.model), ("out.f32", "No space left on device"),
          ("out.f32", "File too large"))
disk_case("export", lambda p: EXPORT[:5] + ["--out", p + "out"] + EXPORT[7:], export_setup,
          ("No space left on device", "nothing was written"), ("File too large", "nothing was written"))
disk_case("init_model", lambda p: INIT[:6] + [p + "out"] + INIT[7:], None, ("No space left on device",),
          ("File too large",))


# ==== config.json through every program that loads a model ===========================================================
def bad_config(name, edit, says, programs=("logits",)):
    """config.json edited by `edit` (a dict edit, or the file's whole text); `says` beyond "m/config.json"."""
    setup = at(I.config_text, edit) if isinstance(edit, (str, bytes)) else at(I.config, edit)
    for prog in programs:
        argv = {
            "logits": logits(),
            "export": ["osstune-export", "--model", "m", "--adapter", "a", "--out", "out", "--only", "adapter,peft"],
            "translate": lambda ctx: ["osstune-translate", "--model", "m", "--tokenizer", ctx.tok, "--direction",
                                      "zh2nan", "--in", "in.txt"],
            "train": ["osstune-train", "--model", "m", "--data", "d.h5", "--run-dir", "run", "--steps", "1",
                      "--seq-len", "32", "--rows-per-step", "1", "--backend", "cpu"],
        }[prog]
        extra = {"logits": None, "export": at(I.adapter), "translate": lambda ctx: I.write(ctx.path("in.txt"), "今天\n"),
                 "train": lambda ctx: I.pairs_h5(ctx.path("d.h5"))}[prog]
        add("config", name + ("" if prog == "logits" else "_" + prog), argv, steps(setup, extra) if extra else setup,
            says=("m/config.json",) + tuple(says))


K, R, DEL = I.set_keys, I.set_rope, I.DELETE
# Division by a count of zero (SIGFPE before), in every program that loads a model.
bad_config("heads_zero_no_head_dim", K(num_attention_heads=0, head_dim=DEL), ["num_attention_heads = 0 must be positive"],
           programs=("logits", "export", "translate", "train"))
bad_config("heads_zero", K(num_attention_heads=0), ["num_attention_heads = 0 must be positive"])
bad_config("kv_heads_zero", K(num_key_value_heads=0), ["num_key_value_heads = 0 must be positive"])
bad_config("kv_heads_not_divisor", K(num_key_value_heads=4), ["not a multiple of num_key_value_heads"])
bad_config("hidden_zero", K(hidden_size=0), ["hidden_size = 0 must be positive"])
bad_config("hidden_negative", K(hidden_size=-96), ["hidden_size = -96 must be positive"])
bad_config("hidden_huge", K(hidden_size=1 << 40), ['"hidden_size" = 1099511627776 is out of range'])
bad_config("hidden_too_big", K(hidden_size=1 << 20), ["hidden_size = 1048576 is outside"])
bad_config("hidden_string", K(hidden_size="96"), ['"hidden_size" is missing (or not a number)'])
bad_config("hidden_fraction", K(hidden_size=96.5), ['"hidden_size" must be an integer'])
bad_config("vocab_zero", K(vocab_size=0), ["vocab_size = 0 must be positive"])
bad_config("vocab_too_big", K(vocab_size=1 << 30), ["vocab_size = 1073741824 is outside"])
bad_config("layers_zero", K(num_hidden_layers=0), ["num_hidden_layers = 0 must be positive"])
bad_config("layers_too_many", K(num_hidden_layers=100000), ["num_hidden_layers = 100000 exceeds the supported maximum"])
bad_config("experts_zero", K(num_local_experts=0), ["num_local_experts = 0 must be positive"])
bad_config("top_k_zero", K(num_experts_per_tok=0), ["num_experts_per_tok = 0 must be positive"])
bad_config("top_k_above_experts", K(num_experts_per_tok=9), ["num_experts_per_tok = 9 exceeds num_local_experts = 5"])
bad_config("head_dim_odd", K(head_dim=21), ["head_dim = 21 must be even"])
bad_config("head_dim_huge", K(head_dim=1 << 20), ["head_dim = 1048576 is outside"])
bad_config("intermediate_not_32", K(intermediate_size=48), ["multiples of 32"])
bad_config("max_positions_zero", K(max_position_embeddings=0), ["max_position_embeddings = 0 must be positive"])
bad_config("sliding_window_negative", K(sliding_window=-1), ["sliding_window = -1 is outside"])
bad_config("sliding_window_null", K(sliding_window=None), ["sliding_window = 0"])
bad_config("rms_eps_zero", K(rms_norm_eps=0), ["rms_norm_eps = 0 must be between 0 and 1"])
bad_config("rms_eps_huge", K(rms_norm_eps=1e300), ['"rms_norm_eps" = 1e+300 is outside the float32 range'])
bad_config("swiglu_limit_negative", K(swiglu_limit=-7), ["swiglu_limit = -7 must be positive"])
bad_config("conflicting_expert_aliases", K(num_experts=7), ['"num_local_experts" = 5 and "num_experts" = 7 disagree'])
bad_config("conflicting_top_k_aliases", K(experts_per_token=2), ['"num_experts_per_tok" = 3 and "experts_per_token" = 2'])
bad_config("rope_beta_fast_negative", R(beta_fast=-3.0), ["beta_fast = -3"])
bad_config("rope_beta_slow_above_fast", R(beta_fast=1.0, beta_slow=32.0), ["beta_fast = 1 must be greater than beta_slow"])
bad_config("rope_factor_below_one", R(factor=0.5), ["rope factor = 0.5 must be >= 1"])
bad_config("rope_theta_zero", R(rope_theta=0.0), ["rope_theta = 0 must be greater than 1"])
bad_config("rope_theta_negative", R(rope_theta=-5.0), ["rope_theta = -5"])
bad_config("rope_original_zero", R(original_max_position_embeddings=0), ["original_max_position_embeddings"])
bad_config("rope_attention_factor_negative", R(attention_factor=-1.0), ["attention_factor = -1"])
bad_config("rope_mscale_negative", R(mscale=1.0, mscale_all_dim=-20 / 3.4657359027997265),
           ["rope attention_factor = -1.3"])
bad_config("rope_type_unknown", R(rope_type="llama3"), ['"llama3" is not supported'])
bad_config("rope_not_object", K(rope_parameters=[1, 2]), ['"rope_parameters" must be an object'])
bad_config("layer_types_short", K(layer_types=["full_attention"]), ['"layer_types" has 1 entries'])
bad_config("layer_types_value", K(layer_types=["full_attention", "local", "full_attention"]), ["layer_types[1]"])
bad_config("eos_outside_vocab", K(eos_token_id=5000), ["eos_token_id = 5000 is outside the vocabulary"])
bad_config("pad_negative", K(pad_token_id=-5), ['"pad_token_id" = -5 is out of range'])
bad_config("quantization_unknown", K(quantization_config={"quant_method": "fp8"}), ['"fp8" is not supported'])
bad_config("model_type_llama", K(model_type="llama"), ['model_type is llama, not "gpt_oss"'])
bad_config("missing_hidden", K(hidden_size=DEL), ['required key "hidden_size" is missing'])
bad_config("not_json", '{"vocab_size": ', ["invalid JSON"])
bad_config("json_array", "[1, 2]", ["not a JSON object"])
bad_config("duplicate_key", '{"vocab_size": 331, "vocab_size": 332}', ["duplicate"])
bad_config("nul_byte", b'{"vocab_size": 331}\x00', ["contains a NUL byte"])
bad_config("empty", "", ["invalid JSON"])
# A float key beyond float32 (it became an infinite LoRA scale): adapter_config.json goes through the same reader.
add("config", "adapter_alpha_overflow", logits("--adapter", "a"),
    steps(at(I.model), at(I.adapter),
          lambda ctx: I.edit_json(ctx.path("a/adapter_config.json"), I.set_keys(lora_alpha=1e300))),
    says=("a/adapter_config.json", '"lora_alpha" = 1e+300 is outside the float32 range'))
add("config", "set_rope_nonsense", ["osstune-init-model", "--preset", "tiny", "--seed", "1", "--out", "o", "--set",
                                    "beta_fast=-2"], says=("beta_fast = -2",))  # --set goes through the same checks
add("model", "config_is_directory", logits(),
    lambda ctx: (os.unlink(os.path.join(I.model(ctx.dir), "config.json")), os.mkdir(ctx.path("m/config.json"))),
    says=("m/config.json is a directory",))
add("model", "config_missing", logits(), lambda ctx: os.unlink(os.path.join(I.model(ctx.dir), "config.json")),
    says=("m/config.json: cannot open",))


# ==== pairs: TSV / JSONL through osstune-prep =========================================================================
def bad_tsv(name, line, says, header="nan\tzh", extra=()):
    add("pairs", name, prep_in("in.tsv", extra), at(I.tsv, line, header=header), says=("in.tsv:",) + tuple(says))


def bad_jsonl(name, line, says):
    add("pairs", name, prep_in("in.jsonl"), at(I.jsonl, line), says=("in.jsonl:",) + tuple(says))


bad_tsv("tsv_missing_column", "只有一欄", ["in.tsv:4: missing column"])
bad_tsv("tsv_empty_side", "\t今天", ["in.tsv:4: empty nan"])
bad_tsv("tsv_blank_side", "\u3000 \t今天", ["in.tsv:4: nan is only white space"])
bad_tsv("tsv_blank_zh", "今仔日\t \t", ["in.tsv:4: zh is only white space"])
bad_tsv("tsv_invalid_utf8", b"\xff\xfe\t\xe4\xbb\x8a", ["in.tsv:4: nan is not valid UTF-8"])
bad_tsv("tsv_overlong_utf8", b"\xc0\xaf\t\xe4\xbb\x8a", ["in.tsv:4: nan is not valid UTF-8"])
bad_tsv("tsv_surrogate", b"\xed\xa0\x80\t\xe4\xbb\x8a", ["in.tsv:4: nan is not valid UTF-8"])
bad_tsv("tsv_cut_character", b"\xe4\xbb\t\xe4\xbb\x8a", ["in.tsv:4: nan is not valid UTF-8"])
bad_tsv("tsv_nul_byte", b"a\x00b\t\xe4\xbb\x8a", ["in.tsv:4: line contains a NUL byte"])
bad_tsv("tsv_empty_line", "", ["in.tsv:4: empty line"])
bad_tsv("tsv_over_max_chars", "今仔日\t今天", ["in.tsv:2:", "over the limit of 3"], extra=("--max-chars", "3"))
bad_tsv("tsv_no_nan_column", "a\tb", ["in.tsv:1: the header has no 'nan' column"], header="zh\tnan_tl")
bad_tsv("tsv_column_twice", "a\tb\tc", ["in.tsv:1: the header names column 'zh' twice"], header="zh\tnan\tzh")
add("pairs", "tsv_empty_file", prep_in("in.tsv"), lambda ctx: I.write(ctx.path("in.tsv"), b""),
    says=("in.tsv: empty file",))
add("pairs", "tsv_header_only", prep_in("in.tsv"), lambda ctx: I.write(ctx.path("in.tsv"), "nan\tzh\n"),
    says=("in.tsv: no usable pairs",))
add("pairs", "tsv_crlf_ok", prep_in("in.tsv"),
    lambda ctx: I.write(ctx.path("in.tsv"), "nan\tzh\r\n" + "\r\n".join(I.GOOD_ROWS) + "\r\n"),
    expect="ok", creates=("out.h5",))
add("pairs", "tsv_bom_ok", prep_in("in.tsv"), at(I.tsv, bom=True), expect="ok", creates=("out.h5",))
bad_jsonl("jsonl_bad_json", "{", ["in.jsonl:3: not valid JSON"])
bad_jsonl("jsonl_not_object", "[1, 2]", ["in.jsonl:3: not a JSON object"])
bad_jsonl("jsonl_missing_key", '{"zh": "今"}', ["in.jsonl:3: missing key 'nan'"])
bad_jsonl("jsonl_not_string", '{"zh": 1, "nan": "a"}', ["in.jsonl:3: 'zh' is not a string"])
bad_jsonl("jsonl_duplicate_key", '{"zh": "今", "nan": "a", "zh": "b"}', ["in.jsonl:3: not valid JSON", "duplicate"])
bad_jsonl("jsonl_nul_escape", '{"zh": "a\\u0000b", "nan": "c"}', ["in.jsonl:3: not valid JSON"])
bad_jsonl("jsonl_lone_surrogate", '{"zh": "\\ud800", "nan": "c"}', ["in.jsonl:3: not valid JSON"])
bad_jsonl("jsonl_blank_value", '{"zh": "\\u3000\\t", "nan": "c"}', ["in.jsonl:3: zh is only white space"])
bad_jsonl("jsonl_invalid_utf8", b'{"zh": "\xff", "nan": "c"}', ["in.jsonl:3: not valid UTF-8"])
bad_jsonl("jsonl_empty_line", "", ["in.jsonl:3: empty line"])
add("pairs", "jsonl_bom_ok", prep_in("in.jsonl"), at(I.jsonl, bom=True), expect="ok", creates=("out.h5",))
add("pairs", "jsonl_bom_sniffed_ok", prep_in("in.txt"), at(I.jsonl, bom=True, name="in.txt"), expect="ok",
    creates=("out.h5",))
add("pairs", "in_is_directory", prep_in("in.tsv"), lambda ctx: os.mkdir(ctx.path("in.tsv")),
    says=("in.tsv is a directory",))
add("pairs", "in_missing", prep_in("in.tsv"), says=("in.tsv: cannot open",))


def check_rejects(ctx, out, err):
    with open(ctx.path("out.h5.rejects.tsv"), encoding="utf-8") as f:
        rows = f.read().splitlines()
    if rows[0] != "line\treason\tinput" or [r.split("\t")[0] for r in rows[1:]] != ["4", "5"]:
        return "rejects file: %r" % rows


add("pairs", "skip_bad_lists_rejects", prep_in("in.tsv", ("--skip-bad",)),
    at(I.tsv, "只有一欄", "\u3000\t今天"), expect="ok", creates=("out.h5", "out.h5.rejects.tsv"), check=check_rejects)


def pairs_from_fifo(ctx, argv, env):
    """--in a FIFO (what `--in <(zcat pairs.tsv.gz)` gives): read as a stream, like a file."""
    body = ("nan\tzh\n" + "\n".join(I.GOOD_ROWS) + "\n").encode()
    return run_popen(ctx, argv, env, during=lambda p: feed_fifo(ctx.path("in.fifo"), body))


add("pairs", "in_fifo_ok", prep_in("in.fifo"), lambda ctx: os.mkfifo(ctx.path("in.fifo")), expect="ok",
    creates=("out.h5",), drive=pairs_from_fifo)


# ==== signals ========================================================================================================
def prep_interrupted(sig):
    """osstune-prep reading a FIFO that stays open: once its temporary files exist, `sig`; they must go with it."""
    def drive(ctx, argv, env):
        body = ("nan\tzh\n" + "\n".join(I.GOOD_ROWS) + "\n").encode()

        def during(p):
            feed_fifo(ctx.path("in.fifo"), body, hold=30)
            for _ in range(300):
                if any(".tmp." in n for n in os.listdir(ctx.dir)):
                    break
                time.sleep(0.05)
            time.sleep(0.2)
            p.send_signal(sig)
        return run_popen(ctx, argv, env, during=during)
    return drive


for sig in ("TERM", "INT", "HUP"):
    add("signals", "prep_sig" + sig.lower() + "_cleans_up",
        prep("--in", "in.fifo", "--out", "out.h5", "--skip-bad", "--quiet"), mkfifo("in.fifo"), expect="signal:" + sig,
        says=("interrupted",), drive=prep_interrupted(getattr(signal, "SIG" + sig)))


def stale_prep_temps(ctx):
    I.tsv(ctx.dir)
    gone = dead_pid()
    ctx.stale = ("out.h5.tmp.%d" % gone, "out.h5.rejects.tsv.tmp.%d" % gone)
    for name in ctx.stale:
        I.write(ctx.path(name), "half")
    I.write(ctx.path("out.h5.tmp.%d" % os.getpid()), "a live run's")  # this process is alive: left alone


# (The live run's file is checked by the generic rule: it must be unchanged.)
add("signals", "prep_stale_temps_removed", prep("--in", "in.tsv", "--out", "out.h5", "--skip-bad", "--quiet"),
    stale_prep_temps, expect="ok", creates=("out.h5", "out.h5.rejects.tsv"), removes=lambda ctx: ctx.stale,
    says=("left by an interrupted run",))


# ==== tokenizer: .tiktoken and tokenizer.json through osstune-prep ====================================================
def prep_tok(tok):
    return lambda ctx: ["osstune-prep", "--tokenizer", tok, "--in", "in.tsv", "--out", "out.h5", "--quiet"]


def with_pairs(fn):
    return steps(at(I.tsv), fn)


def bad_tiktoken(name, edit, says):
    add("tokenizer", name, prep_tok("tok.tiktoken"), with_pairs(at(I.tiktoken, edit)), says=says)


def set_line(i, text):
    def edit(lines):
        lines[i] = text
        return lines
    return edit


bad_tiktoken("tiktoken_truncated", lambda lines: lines[:1000], ("tok.tiktoken", "1000 ranks, but o200k_base has"))
bad_tiktoken("tiktoken_bad_base64", set_line(4, b"!!!! 4"), ("tok.tiktoken:5: invalid base64 token",))
bad_tiktoken("tiktoken_rank_twice", set_line(5, b"IQ== 4"), ("tok.tiktoken:6: rank 4 appears twice",))
bad_tiktoken("tiktoken_rank_too_big", set_line(2, b"Iw== 999999999"), ("tok.tiktoken:3: expected '<base64> <rank>'",))
bad_tiktoken("tiktoken_no_rank", set_line(1, b"Ig=="), ("tok.tiktoken:2: expected '<base64> <rank>'",))
bad_tiktoken("tiktoken_empty", lambda lines: [], ("tok.tiktoken", "0 ranks"))
bad_tiktoken("tiktoken_garbage", lambda lines: [bytes(range(256)) * 4], ("tok.tiktoken:1:",))
add("tokenizer", "tokenizer_dir_without_json", prep_tok("tokdir"), with_pairs(lambda ctx: os.mkdir(ctx.path("tokdir"))),
    says=("tokdir", "has no tokenizer.json"))
add("tokenizer", "tokenizer_json_is_dir", prep_tok("tokdir"),
    with_pairs(lambda ctx: os.makedirs(ctx.path("tokdir/tokenizer.json"))), says=("tokdir/tokenizer.json", "directory"))
add("tokenizer", "tokenizer_fifo", prep_tok("tok.tiktoken"), with_pairs(lambda ctx: os.mkfifo(ctx.path("tok.tiktoken"))),
    says=("tok.tiktoken", "is a FIFO"), timeout=20)
add("tokenizer", "tokenizer_missing", prep_tok("absent.tiktoken"), with_pairs(lambda ctx: None),
    says=("absent.tiktoken",))


def bad_tokenizer_json(name, edit, says):
    add("tokenizer", name, prep_tok("tok/tokenizer.json"),
        with_pairs(lambda ctx: I.tokenizer_json(ctx.path("tok"), tokenizer_json_fixture(ctx), edit)),
        says=("tok/tokenizer.json",) + tuple(says))


def vocab_edit(fn):
    def edit(obj):
        fn(obj["model"]["vocab"])
    return edit


def first_vocab_key(v):
    return next(iter(v))


bad_tokenizer_json("json_no_model", lambda o: o.pop("model"), ("expected model.type \"BPE\"",))
bad_tokenizer_json("json_normalizer", lambda o: o.update(normalizer={"type": "NFC"}), ("has a normalizer",))
bad_tokenizer_json("json_vocab_id_twice", vocab_edit(lambda v: v.update({first_vocab_key(v): 5})),
                   ("id 5 appears twice",))
bad_tokenizer_json("json_vocab_id_missing", vocab_edit(lambda v: v.pop(first_vocab_key(v))), ("is missing from the vocab",))
bad_tokenizer_json("json_vocab_id_string", vocab_edit(lambda v: v.update({first_vocab_key(v): "x"})), ("has no valid id",))
bad_tokenizer_json("json_pattern_changed",
                   lambda o: o["pre_tokenizer"]["pretokenizers"][0]["pattern"].update(Regex="\\w+"),
                   ("not the o200k pattern",))
bad_tokenizer_json("json_added_token_id", lambda o: o["added_tokens"][0].update(id=5), ("outside the special range",))
add("tokenizer", "json_not_json", prep_tok("tok/tokenizer.json"),
    with_pairs(lambda ctx: I.write(ctx.path("tok/tokenizer.json"), '{"model": ')),
    says=("tok/tokenizer.json", "cannot read tokenizer"))
add("tokenizer", "json_duplicate_key", prep_tok("tok/tokenizer.json"),
    with_pairs(lambda ctx: I.write(ctx.path("tok/tokenizer.json"), '{"model": {}, "model": {}}')),
    says=("tok/tokenizer.json", "duplicate"))


# ==== model directories: config.json's place, safetensors shards, the index, the adapter ============================
def bad_shard(name, edit, says, shard=I.SHARD1, programs=("logits", "export")):
    for prog in programs:
        argv = logits() if prog == "logits" else ["osstune-export", "--model", "m", "--adapter", "a", "--out", "out",
                                                  "--only", "adapter,peft"]
        setup = at(I.shard, edit, name=shard) if prog == "logits" else steps(at(I.shard, edit, name=shard), at(I.adapter))
        add("model", name + ("" if prog == "logits" else "_export"), argv, setup,
            says=("m/" + shard,) + tuple(says))


def set_entry(field_name, value, tensor=None):
    def edit(h):
        h[tensor or I.first_tensor(h)][field_name] = value
    return edit


bad_shard("truncated", I.st_truncate(0.6), ["run past the end of the data buffer"])
bad_shard("tiny_file", I.st_raw(b"abc"), ["shorter than the 8-byte header length field"])
bad_shard("header_length_huge", I.st_raw((1 << 62).to_bytes(8, "little") + b"{}"), ["header length"])
bad_shard("header_not_json", I.st_header_bytes(b"{not json"), ["not valid JSON"])
bad_shard("header_array", I.st_header_bytes(b"[1,2]"), ["header is not a JSON object"])
bad_shard("header_duplicate_key", I.st_header_bytes(b'{"a": {}, "a": {}}'), ["duplicate"])
bad_shard("unknown_dtype", I.st_edit_header(set_entry("dtype", "F7")), ['unknown dtype "F7"'])
bad_shard("shape_negative", I.st_edit_header(set_entry("shape", [-1, 2])), ["shape entry 0 is not a non-negative integer"])
bad_shard("shape_size_mismatch", I.st_edit_header(set_entry("shape", [1])), ["bytes but"])
bad_shard("shape_overflow", I.st_edit_header(set_entry("shape", [1 << 62, 1 << 62])), ["overflows"])
bad_shard("offsets_not_pair", I.st_edit_header(set_entry("data_offsets", [0])), ['"data_offsets" must be [begin, end]'])
bad_shard("offsets_backwards", I.st_edit_header(set_entry("data_offsets", [8, 0])), ["end before they begin"])
bad_shard("metadata_not_strings", I.st_edit_header(lambda h: h.update(__metadata__={"x": 1})), ['"__metadata__" value'])
add("model", "shard_is_directory", logits(), at(I.shard, I.st_replace_with("dir")),
    says=("m/" + I.SHARD1 + " is a directory",))
add("model", "shard_is_fifo", logits(), at(I.shard, I.st_replace_with("fifo")),
    says=("m/" + I.SHARD1 + " is a FIFO",), timeout=20)
add("model", "shard_links_to_directory", logits(), at(I.shard, I.st_replace_with("dirlink")),
    says=("m/" + I.SHARD1 + " is a directory",))
add("model", "shard_missing", logits(), at(I.shard, lambda p: os.unlink(p)), says=("m/" + I.SHARD1, "cannot open"))
add("model", "tensor_missing", logits(), at(I.drop_tensor, "model.layers.1.mlp.router.bias"),
    says=("m", "model.layers.1.mlp.router.bias"))
add("model", "tensor_wrong_shape", logits(),  # same bytes, another shape (model.norm.weight is in SHARD1)
    at(I.shard, I.st_edit_header(lambda h: h["model.norm.weight"].update(shape=[48, 2])), name=I.SHARD1),
    says=("model.norm.weight", "shape"))


def index_edit(edit):
    return lambda ctx: I.edit_json(os.path.join(I.model(ctx.dir), "model.safetensors.index.json"), edit)


add("model", "index_names_absent_shard", logits(),
    index_edit(lambda j: j["weight_map"].update({"model.norm.weight": "model-00009-of-00009.safetensors"})),
    says=("model-00009-of-00009.safetensors", "cannot open"))
add("model", "index_path_escapes", logits(),
    index_edit(lambda j: j["weight_map"].update({"model.norm.weight": "../../x.safetensors"})),
    says=("model.safetensors.index.json", "not a file inside the checkpoint directory"))
add("model", "index_empty_map", logits(), index_edit(lambda j: j.update(weight_map={})),
    says=("model.safetensors.index.json", '"weight_map" is empty'))
add("model", "index_not_json", logits(),
    lambda ctx: I.write(os.path.join(I.model(ctx.dir), "model.safetensors.index.json"), "{"),
    says=("model.safetensors.index.json", "invalid JSON"))


def adapter_case(name, edit_setup, says):
    add("model", name, logits("--adapter", "a"), steps(at(I.model), at(I.adapter), edit_setup), says=says)


adapter_case("adapter_config_missing", lambda ctx: os.unlink(ctx.path("a/adapter_config.json")),
             ("a/adapter_config.json",))
adapter_case("adapter_rank_zero", lambda ctx: I.edit_json(ctx.path("a/adapter_config.json"), I.set_keys(r=0)),
             ("a/adapter_config.json", '"r" = 0 must be positive'))
adapter_case("adapter_weights_truncated", lambda ctx: I.st_truncate(0.5)(ctx.path("a/adapter_model.safetensors")),
             ("a/adapter_model.safetensors",))
adapter_case("adapter_weights_fifo", lambda ctx: I.st_replace_with("fifo")(ctx.path("a/adapter_model.safetensors")),
             ("a/adapter_model.safetensors is a FIFO",))
adapter_case("adapter_weights_directory", lambda ctx: I.st_replace_with("dir")(ctx.path("a/adapter_model.safetensors")),
             ("a/adapter_model.safetensors is a directory",))


# ==== HDF5 pairs files through osstune-train ========================================================================
def no_h5py(ctx):
    return None if np is not None else "numpy / h5py are not installed (tests/requirements.txt)"


# osstune-train checks every input before it writes anything: a run refused for its data leaves no `run/` behind.
def bad_h5(name, edit=None, says=(), make=None):
    setup = make or (lambda ctx: I.pairs_h5(ctx.path("d.h5"), edit=edit))
    add("pairs_h5", name, train_on("d.h5"), setup, says=("d.h5",) + tuple(says), skip=no_h5py)


def array_edit(key, fn):
    def edit(arrays, attrs):
        arrays[key] = fn(arrays[key])
    return edit


def attr_edit(**kv):
    def edit(arrays, attrs):
        attrs.update(kv)
    return edit


def h5_then(fn):
    def make(ctx):
        I.pairs_h5(ctx.path("d.h5"))
        fn(ctx.path("d.h5"))
    return make


def cut(path, fraction):
    with open(path, "rb") as f:
        raw = f.read()
    I.write(path, raw[:int(len(raw) * fraction)])


bad_h5("not_hdf5", make=lambda ctx: I.write(ctx.path("d.h5"), b"tokens\n" * 100), says=("not an HDF5 file",))
bad_h5("empty_file", make=lambda ctx: I.write(ctx.path("d.h5"), b""), says=("not an HDF5 file",))
bad_h5("truncated", make=h5_then(lambda p: cut(p, 0.5)))
bad_h5("format_attribute", attr_edit(format="something-else"), ("format attribute is 'something-else'",))
bad_h5("version", lambda a, t: t.update(version=np.uint32(2)), ("pairs file version 2",))
bad_h5("missing_tokens", lambda a, t: a.update(tokens=I.DELETE), ("dataset /tokens is missing",))
bad_h5("missing_attribute", lambda a, t: t.update(n_samples=I.DELETE), ("attribute 'n_samples' is missing",))
bad_h5("offsets_not_increasing", array_edit("offsets", lambda o: o[[0, 2, 1, 3, 4, 5, 6]]), ("is empty or too long",))
bad_h5("offsets_past_tokens", array_edit("offsets", lambda o: o + np.arange(7, dtype=o.dtype)),
       ("/offsets must run from 0",))
bad_h5("loss_start_outside", array_edit("loss_start", lambda x: x + 100), ("loss_start",))
bad_h5("direction_not_prepared", array_edit("direction", lambda x: x + 2), ("no instruction_zh2tl attribute",))
bad_h5("direction_unknown", array_edit("direction", lambda x: x + 6), ("direction 6, not one of",))
bad_h5("token_outside_vocab", array_edit("tokens", lambda x: x + 400), ("outside the vocabulary of 331",))
bad_h5("n_tokens_attribute", lambda a, t: t.update(n_tokens=np.uint64(5)), ("n_tokens attribute says 5",))
bad_h5("index_wrong_type", array_edit("direction", lambda x: x.astype("int16")), ("should hold unsigned 1-byte integers",))
bad_h5("chunk_checksum", make=h5_then(I.flip_byte_in_dataset))
bad_h5("is_directory", make=lambda ctx: os.mkdir(ctx.path("d.h5")), says=("directory",))
add("pairs_h5", "is_fifo", train_on("d.h5"), lambda ctx: os.mkfifo(ctx.path("d.h5")), says=("d.h5", "FIFO"),
    timeout=30)


# ==== flags of every program ==========================================================================================
def flags(prog, name, args, says, expect="usage", setup=None):
    add("flags", prog.replace("osstune-", "") + "_" + name, [prog, *args], setup, expect=expect, says=says)


for prog in ("osstune-prep", "osstune-logits", "osstune-init-model", "osstune-export", "osstune-translate",
             "osstune-train"):
    add("flags", prog.replace("osstune-", "") + "_help", [prog, "--help"], expect="ok")
    flags(prog, "unknown_option", ["--no-such-option"], ())
flags("osstune-prep", "nothing", [], ("--tokenizer is required",))
flags("osstune-prep", "missing_value", ["--tokenizer"], ("--tokenizer needs a value",))
flags("osstune-prep", "max_chars_negative", ["--max-chars", "-1"], ("--max-chars wants a number >= 0",))
flags("osstune-prep", "max_chars_text", ["--max-chars", "12x"], ("--max-chars wants a number >= 0",))
flags("osstune-prep", "directions", ["--tokenizer", "t", "--in", "i", "--out", "o", "--directions", "both2"],
      ("'both2' is not a direction",))
flags("osstune-logits", "nothing", [], ("--model, --tokens and --out are required",))
flags("osstune-logits", "backend", ["--model", "m", "--tokens", "1", "--out", "-", "--backend", "tpu"],
      ("--backend: unknown backend 'tpu' (auto, cpu or cuda)",))  # the one resolver's message (trainer/model/backend.c)
flags("osstune-logits", "extra_argument", ["--model", "m", "--tokens", "1", "--out", "-", "stray"],
      ("unexpected argument 'stray'",))
for bad in ("1,,2", "a", "-1", "1;2", "99999999999"):
    flags("osstune-logits", "tokens_" + bad.replace(",", "c").replace(";", "s").replace("-", "m"),
          ["--model", os.path.join(I.GOLDEN, "model"), "--tokens", bad, "--out", "-"], ("--tokens",))
flags("osstune-logits", "token_outside_vocab", ["--model", os.path.join(I.GOLDEN, "model"), "--tokens", "1,331",
                                                "--out", "-"], ("token id 331", "outside the vocabulary of 331"),
      expect="error")
flags("osstune-init-model", "nothing", [], ("--preset, --seed and --out are required",))
flags("osstune-init-model", "seed_negative", ["--preset", "tiny", "--seed", "-1", "--out", "o"], ("--seed -1",))
flags("osstune-init-model", "shards_zero", ["--preset", "tiny", "--seed", "1", "--out", "o", "--shards", "0"],
      ("--shards 0",))
flags("osstune-init-model", "threads_text", ["--threads", "many"], ("--threads many",))
flags("osstune-init-model", "preset_unknown", ["--preset", "7b", "--seed", "1", "--out", "o"], ("unknown model preset '7b'",),
      expect="error")
flags("osstune-init-model", "set_without_value", ["--preset", "tiny", "--seed", "1", "--out", "o", "--set", "hidden_size"],
      ("--set hidden_size: expected KEY=VALUE",), expect="error")
flags("osstune-init-model", "set_unknown_key", ["--preset", "tiny", "--seed", "1", "--out", "o", "--set", "colour=3"],
      ("unknown or non-numeric config key 'colour'",), expect="error")
flags("osstune-init-model", "set_not_a_number", ["--preset", "tiny", "--seed", "1", "--out", "o", "--set",
                                                 "hidden_size=big"], ("--set hidden_size=big: not an integer",),
      expect="error")
# A --set that makes a value of the preset's invalid: the message names that value as the preset's, not a flag.
flags("osstune-init-model", "set_blames_preset_value", ["--preset", "tiny", "--seed", "1", "--out", "o", "--set",
                                                        "vocab_size=1000"],
      ("pad_token_id = 199999 is outside", "pad_token_id is the 'tiny' preset's value", "--set pad_token_id="),
      expect="error")
EXPORT_BASE = ["--model", os.path.join(I.GOLDEN, "model"), "--adapter", os.path.join(I.GOLDEN, "adapter"), "--out", "o"]
flags("osstune-export", "nothing", [], ("--model, --out and",))
flags("osstune-export", "only_unknown", EXPORT_BASE + ["--only", "gguf"], ("--only: unknown output 'gguf'",))
flags("osstune-export", "expert_type", EXPORT_BASE + ["--expert-lora-type", "f16"], ("must be bf16 or q8_0",))
for label, name in (("semicolon", "x;touch pwned"), ("dollar", "$(id)"), ("backtick", "a`id`"), ("newline", "a\nb"),
                    ("pipe", "a|b"), ("space", "a b"), ("empty", ""), ("dash_first", "-x"), ("too_long", "n" * 65),
                    ("non_ascii", "台語")):
    flags("osstune-export", "name_" + label, EXPORT_BASE + ["--name", name], ("--name", "not a safe model name"))
flags("osstune-translate", "no_direction", ["--model", "m"], ("--direction is required",))
flags("osstune-translate", "gpu_memory_limit_text", ["--direction", "zh2nan", "--model", "m", "--gpu-memory-limit",
                                                     "8 GiB"], ("--gpu-memory-limit: '8 GiB' is not a size",))
flags("osstune-translate", "direction", ["--direction", "zh2en", "--model", "m"], ("--direction: 'zh2en'",))
flags("osstune-translate", "max_new_zero", ["--direction", "zh2nan", "--model", "m", "--max-new-tokens", "0"],
      ("--max-new-tokens",))
flags("osstune-translate", "temperature", ["--direction", "zh2nan", "--model", "m", "--temperature", "-1"],
      ("--temperature",))
flags("osstune-translate", "top_p", ["--direction", "zh2nan", "--model", "m", "--top-p", "2"], ("--top-p",))
flags("osstune-translate", "batch_zero", ["--direction", "zh2nan", "--model", "m", "--batch-size", "0"], ("--batch-size",))
flags("osstune-translate", "hyp_without_ref", ["--direction", "zh2nan", "--hyp", "h"], ("--hyp needs --ref",))
flags("osstune-train", "steps_zero", ["--model", "m", "--data", "d", "--run-dir", "r", "--steps", "0"], ("--steps",))
flags("osstune-train", "lr_text", ["--model", "m", "--data", "d", "--run-dir", "r", "--steps", "1", "--lr", "fast"],
      ("--lr",))
flags("osstune-train", "targets", ["--model", "m", "--data", "d", "--run-dir", "r", "--steps", "1", "--lora-targets",
                                   "everything"], ("everything",))
# Every numeric option of osstune-train has a range, and the message names the option: values that saturated
# (--steps past 2^63), were not finite (--lr inf: NaN loss at step 2), divided by zero (--eps 0) or ran into an
# out-of-memory message that named nothing (--seq-len, --rows-per-step, --lora-r).
TRAIN_REQUIRED = ["--model", "m", "--data", "d", "--run-dir", "r", "--steps", "10"]
for label, args, says in (
        ("steps_past_int64", ["--steps", "99999999999999999999"], "--steps: '99999999999999999999'"),
        ("steps_huge", ["--steps", "2000000000"], "--steps: '2000000000' is not an integer from 1 to 1000000000"),
        ("seed_past_int64", ["--seed", "99999999999999999999"], "--seed"),
        ("seq_len_huge", ["--seq-len", "100000000"], "--seq-len: '100000000' is not an integer from 8 to 1048576"),
        ("rows_huge", ["--rows-per-step", "100000000"], "--rows-per-step: '100000000'"),
        ("lora_r_huge", ["--lora-r", "100000"], "--lora-r: '100000' is not an integer from 1 to 4096"),
        ("lora_alpha_inf", ["--lora-alpha", "inf"], "--lora-alpha: 'inf'"),
        ("lora_alpha_zero", ["--lora-alpha", "0"], "--lora-alpha: '0' is not a number in (0, 1e+06]"),
        ("lr_inf", ["--lr", "inf"], "--lr: 'inf' is not a number in (0, 1]"),
        ("lr_nan", ["--lr", "nan"], "--lr: 'nan'"),
        ("lr_zero_in_float", ["--lr", "1e-60"], "--lr: '1e-60'"),
        ("lr_above_one", ["--lr", "5"], "--lr: '5'"),
        ("min_lr_above_lr", ["--lr", "1e-4", "--min-lr", "1e-3"], "--min-lr 0.001 is above --lr 0.0001"),
        ("warmup_above_steps", ["--warmup", "11"], "--warmup 11 is longer than the run (--steps 10)"),
        ("eps_zero", ["--eps", "0"], "--eps: '0' is not a number in (0, 1]"),
        ("eps_inf", ["--eps", "inf"], "--eps: 'inf'"),
        ("beta1_one", ["--beta1", "1"], "--beta1: '1' is not a number in [0, 1)"),
        ("beta2_negative", ["--beta2", "-0.5"], "--beta2: '-0.5'"),
        ("weight_decay_inf", ["--weight-decay", "inf"], "--weight-decay: 'inf'"),
        ("max_grad_norm_beyond_float", ["--max-grad-norm", "1e300"], "--max-grad-norm: '1e300'"),
        ("max_grad_norm_nan", ["--max-grad-norm", "nan"], "--max-grad-norm: 'nan'"),
        ("save_every_past_int", ["--save-every", "4294967297"], "--save-every: '4294967297'"),
        ("keep_last_zero", ["--keep-last", "0"], "--keep-last: '0'"),
        ("log_every_past_int", ["--log-every", "4294967297"], "--log-every"),
        ("eval_every_negative", ["--eval-every", "-1"], "--eval-every: '-1'"),
        ("eval_samples_past_int64", ["--eval-samples", "99999999999999999999"], "--eval-samples"),
        ("expert_layers_empty", ["--lora-expert-layers", ""], "--lora-expert-layers: ''"),
        ("expert_layers_empty_item", ["--lora-expert-layers", "1,,2"], "--lora-expert-layers: ''"),
        ("expert_layers_twice", ["--lora-expert-layers", "1,1"], "--lora-expert-layers: layer 1 is listed twice"),
        ("expert_layers_past_max", ["--lora-expert-layers", "300"], "--lora-expert-layers: '300'"),
        ("full_with_lora_r", ["--full", "--lora-r", "8"], "--full trains every weight of the model: --lora-r does not apply"),
        ("full_with_lora_targets", ["--lora-targets", "all", "--full"], "--lora-targets does not apply"),
        ("full_with_rslora", ["--full", "--lora-rslora"], "--lora-rslora does not apply"),
        ("gpu_memory_limit_text", ["--gpu-memory-limit", "lots"], "--gpu-memory-limit: 'lots' is not a size"),
        ("gpu_memory_limit_unit", ["--gpu-memory-limit", "24gb"], "--gpu-memory-limit: '24gb' is not a size"),
        ("gpu_memory_limit_negative", ["--gpu-memory-limit", "-8GiB"], "--gpu-memory-limit: '-8GiB'"),
        ("gpu_memory_limit_zero", ["--gpu-memory-limit", "0"], "--gpu-memory-limit: '0'"),
        ("gpu_memory_limit_inf", ["--gpu-memory-limit", "infGiB"], "--gpu-memory-limit: 'infGiB'")):
    flags("osstune-train", label, TRAIN_REQUIRED + args, (says,))


# ==== export: edited outputs kept, leftovers of killed runs removed =================================================
edited = lambda ctx: I.write(ctx.path("out/Modelfile"), "FROM ./model.gguf\n# my own stop words\n")
add("export", "edited_modelfile_kept", EXPORT, steps(export_setup, edited),
    says=("out/Modelfile differs from what osstune-export writes", "--force"))
add("export", "edited_modelfile_forced", EXPORT + ["--force"], steps(export_setup, edited), expect="ok",
    creates=EXPORTED, changes=("out/Modelfile",))
add("export", "edited_readme_kept", EXPORT,
    steps(export_setup, lambda ctx: I.write(ctx.path("out/README.md"), "# notes\n")),
    says=("out/README.md differs",))


def stale_stage(ctx):
    ctx.stale = "out/.osstune-export-%d.tmp" % dead_pid()
    I.write(ctx.path(ctx.stale + "/peft/adapter_model.safetensors.tmp"), "x")


add("export", "stale_stage_removed", EXPORT, steps(export_setup, stale_stage), expect="ok", creates=EXPORTED,
    removes=lambda ctx: (ctx.stale,), says=("left by an interrupted export",))


# ==== osstune-train: its inputs against the model ("train") and its run directory ("ckpt") ===========================
import train_cases  # noqa: E402,F401  (adds its cases to CASES)
