"""The robustness suite's cases for osstune-train: its inputs checked against the model before anything is written
(group "train"), and its run directory -- checkpoints, state.pb, the lock, modes, resume -- (group "ckpt").

Imported by cases.py (which owns the Case list and the helpers used here). A case that needs a trained run
directory copies a fixture trained once per suite run (the golden model for LoRA; a small bf16 model for --full),
so each case takes well under a second.
"""
import os
import shutil
import subprocess

import cases as C
import inputs as I

TRAIN_FLAGS = ["--seq-len", "32", "--rows-per-step", "1", "--backend", "cpu"]


def no_h5py(ctx):
    return None if C.np is not None else "numpy / h5py are not installed (tests/requirements.txt)"


def dense_model(ctx):
    """A small gpt-oss with bf16 experts (what --full trains) and the golden model's vocabulary (331 ids)."""
    def make(path):
        subprocess.run([ctx.prog("osstune-init-model"), "--preset", "tiny", "--seed", "1", "--dense-experts",
                        "--set", "vocab_size=331", "--set", "pad_token_id=1", "--set", "eos_token_id=2",
                        "--set", "bos_token_id=3", "--set", "num_hidden_layers=2", "--set", "hidden_size=32",
                        "--set", "intermediate_size=32", "--threads", "1", "--out", path], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return ctx.fixture("dense_model", make)


def model_of(ctx, full):
    return dense_model(ctx) if full else ctx.golden_model


def train(data="d.h5", run="run", steps=2, full=False, extra=()):
    """osstune-train's argv for a case (a function of ctx: the models are fixtures)."""
    def argv(ctx):
        return (["osstune-train", "--model", model_of(ctx, full), "--data", data, "--run-dir", run, "--steps",
                 str(steps)] + TRAIN_FLAGS + (["--full"] if full else []) + list(extra))
    return argv


def pairs(name="d.h5", **kw):
    return lambda ctx: I.pairs_h5(ctx.path(name), **kw)


def add(group, name, argv, setup=None, **kw):
    kw.setdefault("skip", no_h5py)
    C.add(group, name, argv, setup, **kw)


# ==== train: the data and validation files against the model ==========================================================
def wider_vocab(arrays, attrs):
    """Tokenized for 1000 ids: the file is valid on its own, but ids 331..999 have no embedding in the golden model."""
    attrs["tokenizer_vocab_size"] = C.np.uint32(1000)
    arrays["tokens"] = (arrays["tokens"].astype("uint64") * 3 % 1000).astype("uint32")


for full in (False, True):
    mode = "full_" if full else ""
    add("train", mode + "data_vocab_above_model", train(full=full), pairs(edit=wider_vocab),
        says=("--data d.h5 was tokenized for a vocabulary of 1000 ids", "the model has 331"))
    add("train", mode + "eval_vocab_above_model", train(full=full, extra=("--eval-data", "e.h5")),
        C.steps(pairs(), pairs("e.h5", edit=wider_vocab)),
        says=("--eval-data e.h5 was tokenized for a vocabulary of 1000 ids", "the model has 331"))


# A bad --eval-data is found at start-up, before anything is written -- not at the first validation, after hours of
# training (which then ended without a checkpoint).
def flip_eval(ctx):
    I.pairs_h5(ctx.path("e.h5"))
    I.flip_byte_in_dataset(ctx.path("e.h5"))


add("train", "eval_corrupt_chunk_at_startup", train(extra=("--eval-data", "e.h5")), C.steps(pairs(), flip_eval),
    says=("e.h5", "/tokens"))
add("train", "eval_no_targets_at_startup", train(extra=("--eval-data", "e.h5")),
    C.steps(pairs(), pairs("e.h5", edit=lambda a, t: a["loss_start"].__setitem__(slice(None), 0) or
                           a.update(offsets=C.np.arange(7, dtype="uint64"), tokens=a["tokens"][:6]) or
                           t.update(n_tokens=C.np.uint64(6)))),
    says=("--eval-data e.h5", "nothing to validate"))


# An error after training started: the last completed step is checkpointed first, then exit 1 with the message.
# Here metrics.jsonl stops taking lines once training runs (a file-size limit set on the running trainer, just above
# the file's size; the checkpoint files are smaller than the limit, and MPI's start-up is over by then).
def metrics_limit_mid_run(ctx, argv, env):
    import resource
    import signal
    I.write(ctx.path("run/metrics.jsonl"), '{"step": 0, "pad": "%s"}\n' % ("x" * 60000))
    p = subprocess.Popen(argv, cwd=ctx.dir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGXFSZ, signal.SIG_IGN))
    for _ in range(3000):
        if os.path.exists(ctx.path("run/config.json")):
            break
        C.time.sleep(0.01)
    limit = os.path.getsize(ctx.path("run/metrics.jsonl")) + 64
    resource.prlimit(p.pid, resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    out, err = p.communicate(timeout=120)
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def saved_before_stopping(ctx, out, err):
    import re
    m = re.search(r"checkpoint run/ckpt/step-(\d+) written before stopping", err)
    if not m:
        return "no checkpoint written before stopping"
    d = ctx.path("run/ckpt/step-" + m.group(1))
    return None if os.path.isfile(os.path.join(d, "COMPLETE")) else "no complete checkpoint %s" % d


add("train", "metrics_write_fails_saves_first", train(steps=200, extra=("--lora-r", "1", "--lora-targets", "q")),
    pairs(), drive=metrics_limit_mid_run, says=("cannot write to run/metrics.jsonl: File too large",),
    creates=("run",), check=saved_before_stopping)
add("train", "metrics_is_fifo", train(), C.steps(pairs(), C.mkdir("run"), C.mkfifo("run/metrics.jsonl")),
    says=("run/metrics.jsonl is a FIFO, not a regular file",), timeout=30)


# A LoRA on zero parameters (targets that select nothing) trained and reported success.
add("train", "lora_expert_layer_outside_model", train(extra=("--lora-targets", "experts", "--lora-expert-layers", "7")),
    pairs(), says=("--lora-expert-layers: layer 7 is not a layer of this model", "0..2"))
add("train", "lora_targets_select_nothing", train(extra=("--lora-targets", "all", "--lora-expert-layers", "1,3")),
    pairs(), says=("--lora-expert-layers: layer 3",))
# A memory limit for a GPU the run does not use would be ignored in silence: refused, and nothing is written.
add("train", "gpu_memory_limit_on_cpu", train(extra=("--gpu-memory-limit", "24GiB")), pairs(),
    says=("--gpu-memory-limit is for the cuda backend",))


# ==== ckpt: the run directory -- modes, damage, pruning, state.pb, the lock ==========================================
def trained_run(ctx, full):
    """A run directory trained 2 steps with a checkpoint at each (built once per suite run and binary)."""
    stamp = os.stat(ctx.prog("osstune-train")).st_mtime_ns

    def make(path):
        os.makedirs(path)
        I.pairs_h5(os.path.join(path, "d.h5"))
        argv = [ctx.prog(a) if i == 0 else a for i, a in enumerate(train(run="run", full=full)(ctx))]
        subprocess.run(argv + ["--save-every", "1"], cwd=path, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=dict(os.environ, **I.PROGRAM_ENV))
    return ctx.fixture("%s_run-%d" % ("full" if full else "lora", stamp), make)


def run_dir(full=False, edit=None):
    """Setup: d.h5 and run/ copied from the trained fixture, then edit(ctx) (damage, a foreign checkpoint, ...)."""
    def setup(ctx):
        src = trained_run(ctx, full)
        shutil.copy(os.path.join(src, "d.h5"), ctx.path("d.h5"))
        shutil.copytree(os.path.join(src, "run"), ctx.path("run"), symlinks=True)
        if edit:
            edit(ctx)
    return setup


def ckpt(step, name=""):
    return "run/ckpt/step-%06d%s" % (step, "/" + name if name else "")


# The other mode's run directory is refused, and nothing in it changes (config.json included), with --resume auto
# and with --resume never, both ways.
for full in (False, True):
    mine, other = ("full", "lora") if full else ("lora", "full")
    add("ckpt", "%s_on_%s_run_dir" % (mine, other), train(full=full, steps=3), run_dir(full=not full),
        says=("written by a %s run" % ("LoRA" if full else "--full"), "use another --run-dir"))
    add("ckpt", "%s_on_%s_run_dir_resume_never" % (mine, other), train(full=full, steps=3, extra=("--resume", "never")),
        run_dir(full=not full), says=("--resume never", "already holds 2 checkpoints", "move run/ckpt away"))
    add("ckpt", "%s_resume_never_on_own_run_dir" % mine, train(full=full, steps=3, extra=("--resume", "never")),
        run_dir(full=full), says=("--resume never", "already holds 2 checkpoints"))


# Every checkpoint damaged: no fresh start that would prune or replace them, but a refusal that says what to do.
def damage_all(name):
    def edit(ctx):
        for step in (1, 2):
            I.st_truncate(0.5)(ctx.path(ckpt(step, name)))
    return edit


add("ckpt", "lora_all_damaged_refused", train(steps=3), run_dir(edit=damage_all("adapter_model.safetensors")),
    says=("none of the 2 checkpoints in run/ckpt can be loaded", "mv run/ckpt run/ckpt.damaged", "--run-dir"))
add("ckpt", "full_all_damaged_refused", train(steps=3, full=True), run_dir(True, damage_all("master.safetensors")),
    says=("none of the 2 checkpoints in run/ckpt can be loaded", "mv run/ckpt run/ckpt.damaged"))


# A refused resume (another LoRA rank) leaves config.json as it was.
add("ckpt", "refused_resume_keeps_config", train(steps=3, extra=("--lora-r", "8")), run_dir(),
    says=("another layout than this run's LoRA", "r=16, the run uses r=8"))


# Pruning deletes only the run's own checkpoints: an older directory of the other mode stays.
def foreign_step1(ctx):
    shutil.rmtree(ctx.path(ckpt(1)))
    shutil.copytree(os.path.join(trained_run(ctx, True), ckpt(1)), ctx.path(ckpt(1)))


add("ckpt", "prune_keeps_other_mode", train(steps=4, extra=("--save-every", "1", "--keep-last", "1", "--force-resume")),
    run_dir(edit=foreign_step1), expect="ok", says=("kept run/ckpt/step-000001 when pruning", "--full run's"),
    creates=(ckpt(4),), removes=(ckpt(2),), changes=("run/config.json", "run/metrics.jsonl", "run/ckpt/latest"))


# A same-step directory that is not provably the run's own (here: no COMPLETE, so it was skipped on resume) is moved
# aside when the step is written again, never deleted.
def replaced_kept(ctx, out, err):
    d = ctx.path("run/ckpt")
    kept = [n for n in os.listdir(d) if n.startswith("replaced-step-000002-")]
    if len(kept) != 1 or not os.path.isfile(os.path.join(d, kept[0], "adapter_model.safetensors")):
        return "the replaced step-000002 was not kept beside the checkpoints (found %s)" % sorted(os.listdir(d))
    return None


add("ckpt", "replaced_damaged_step_kept", train(steps=2, extra=("--save-every", "1")),
    run_dir(edit=lambda ctx: os.unlink(ctx.path(ckpt(2, "COMPLETE")))), expect="ok",
    says=("step-000002 is damaged and is skipped", "moved to run/ckpt/replaced-step-000002-"),
    changes=("run/ckpt", "run/config.json", "run/metrics.jsonl"), check=replaced_kept)


# One trainer per run directory: a second one is refused with a message naming the first (host, pid, start time),
# and a lock left by a killed trainer never blocks the next.
def second_trainer(ctx, argv, env):
    """Trainer A holds the run directory (paused in its first checkpoint write); the case's argv is trainer B."""
    with open(ctx.path("a.log"), "wb") as log:
        a = subprocess.Popen(argv + ["--save-every", "1"], cwd=ctx.dir, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=log, env=dict(env, OSSTUNE_TEST_CKPT_PAUSE="60"))
    try:
        for _ in range(600):
            if b"OSSTUNE_TEST_CKPT_PAUSE: pausing" in open(ctx.path("a.log"), "rb").read():
                break
            C.time.sleep(0.05)
        rc, out, err = C.run_popen(ctx, argv, env)
        if rc != "timeout" and "pid %d" % a.pid not in err:
            ctx.note = "the message does not name trainer A (pid %d)" % a.pid
        return rc, out, err
    finally:
        a.kill()
        a.wait()


add("ckpt", "second_trainer_refused", train(steps=3), pairs(), drive=second_trainer,
    says=("run is in use by another osstune-train", "host ", "started ", "run/osstune-train.lock"),
    changes=("run", "a.log"))


def stale_lock(ctx):
    I.pairs_h5(ctx.path("d.h5"))
    I.write(ctx.path("run/osstune-train.lock"), "host elsewhere pid %d started long ago\n" % C.dead_pid())


add("ckpt", "stale_lock_of_killed_trainer_ignored", train(), stale_lock, expect="ok",
    creates=("run/config.json", "run/metrics.jsonl", "run/ckpt"), removes=("run/osstune-train.lock",))
add("ckpt", "lock_file_is_fifo", train(), C.steps(pairs(), C.mkdir("run"), C.mkfifo("run/osstune-train.lock")),
    says=("run/osstune-train.lock is not a regular file",), timeout=30)


# ==== train: samples without a loss target ============================================================================
def sample_lengths(lens, loss_start):
    """An edit giving the pairs file samples of these lengths and loss starts."""
    def edit(arrays, attrs):
        np = C.np
        n = len(lens)
        arrays["tokens"] = np.array([(7 * i + 3) % 331 for i in range(sum(lens))], dtype=np.uint32)
        arrays["offsets"] = np.concatenate([[0], np.cumsum(lens)]).astype(np.uint64)
        arrays["loss_start"] = np.array(loss_start, dtype=np.uint32)
        arrays["direction"] = np.zeros(n, dtype=np.uint8)
        arrays["source_line"] = np.arange(2, n + 2, dtype=np.uint64)
        attrs.update(n_samples=np.uint64(n), n_tokens=np.uint64(sum(lens)))
    return edit


# A step of one-token samples has no target: it "trained" with loss 0 and exit 0.
add("train", "all_samples_without_target_refused", train(), pairs(edit=sample_lengths([1] * 6, [0] * 6)),
    says=("d.h5: no sample can be trained", "6 have no loss target"))
add("train", "sample_without_target_skipped", train(), pairs(edit=sample_lengths([1, 9, 10, 11, 12, 13], [0, 4, 5, 5, 6, 6])),
    expect="ok", says=("d.h5: 1 of 6 samples are never trained", "1 without a loss target"), creates=("run",))


# ==== train: --init-adapter and --full against the --lora-* options ===================================================
def train_from_adapter(extra=()):
    return lambda ctx: train(extra=("--init-adapter", ctx.golden_adapter) + tuple(extra))(ctx)


add("train", "init_adapter_conflicting_rank", train_from_adapter(("--lora-r", "8")), pairs(),
    says=("--lora-r conflicts with --init-adapter", "r=4", "leave --lora-r out"))
add("train", "init_adapter_conflicting_targets", train_from_adapter(("--lora-targets", "q,v")), pairs(),
    says=("--lora-targets conflicts with --init-adapter",))


def config_records_adapter(ctx, out, err):
    import json
    with open(ctx.path("run/config.json")) as f:
        cfg = json.load(f)
    got = (cfg["lora_r"], cfg["lora_alpha"], cfg["lora_targets"])
    want = (4, 8.0, "q_proj,k_proj,v_proj,o_proj,gate_up_proj,down_proj")
    return None if got == want else "config.json records %s, the adapter is %s" % (got, want)


# Without --lora-* options the adapter's own are used, and config.json says so (it recorded the defaults, r=16).
add("train", "init_adapter_config_records_adapter", train_from_adapter(), pairs(), expect="ok", creates=("run",),
    check=config_records_adapter)
add("train", "init_adapter_same_options_accepted",
    train_from_adapter(("--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "all")), pairs(), expect="ok",
    creates=("run",), check=config_records_adapter)


# ==== train: options against the model (start-up, exit 1; their ranges alone are the "flags" group's) ==============
add("train", "lora_r_above_matrix_side", train(extra=("--lora-r", "64")), pairs(),
    says=("--lora-r 64 is above the smaller side of k_proj in this model (40)",))


def short_context(ctx):
    I.pairs_h5(ctx.path("d.h5"))
    I.config(ctx.dir, I.set_keys(max_position_embeddings=64))


add("train", "seq_len_above_context", lambda ctx: ["osstune-train", "--model", "m", "--data", "d.h5", "--run-dir", "run",
                                                   "--steps", "1", "--seq-len", "128", "--rows-per-step", "1",
                                                   "--backend", "cpu"], short_context,
    says=("--seq-len 128 is above the model's context (max_position_embeddings 64)",))


# ==== ckpt: resume messages, metrics.jsonl after a resume ============================================================
def four_layer_model(ctx):
    """The golden model's sizes with a 4th layer: another base whose tensors have the same shapes."""
    def make(path):
        sets = ["vocab_size=331", "pad_token_id=1", "eos_token_id=2", "bos_token_id=3", "hidden_size=96", "head_dim=20",
                "num_attention_heads=6", "num_key_value_heads=2", "intermediate_size=64", "num_local_experts=5",
                "num_experts_per_tok=3", "num_hidden_layers=4"]
        subprocess.run([ctx.prog("osstune-init-model"), "--preset", "tiny", "--seed", "1", "--threads", "1", "--out",
                        path] + [a for kv in sets for a in ("--set", kv)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return ctx.fixture("four_layer_model", make)


# The checkpoint was written for another base model: said so, not blamed on the LoRA options.
add("ckpt", "resume_other_base_named", lambda ctx: ["osstune-train", "--model", four_layer_model(ctx), "--data", "d.h5",
                                                    "--run-dir", "run", "--steps", "3"] + TRAIN_FLAGS,
    run_dir(), says=("it was written for another base model", "resume with the --model it was trained on"))
add("ckpt", "resume_dir_missing", train(steps=3, extra=("--resume", "run/ckpt/step-000009")), run_dir(),
    says=("checkpoint run/ckpt/step-000009: No such file or directory",))


def metrics_steps(ctx, out, err):
    import json
    steps = [json.loads(line)["step"] for line in open(ctx.path("run/metrics.jsonl")) if '"loss"' in line]
    return None if steps == list(range(1, len(steps) + 1)) else "metrics.jsonl step lines: %s" % steps


def lost_steps(ctx):
    """A run that trained steps 3 and 4 after its last checkpoint (step 2), then was killed mid-line."""
    with open(ctx.path("run/metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "loss": 1.0}\n{"step": 4, "loss": 1.0}\n{"step": 5, "lo')


# metrics.jsonl after a resume: the lines of steps after the checkpoint (and a cut line) are dropped, so every step
# has one line -- they duplicated before.
add("ckpt", "metrics_lines_after_checkpoint_dropped", train(steps=4, extra=("--force-resume",)), run_dir(edit=lost_steps),
    expect="ok", says=("run/metrics.jsonl: dropped 3 lines after step 2",), creates=(ckpt(4),),
    changes=("run/config.json", "run/metrics.jsonl", "run/ckpt/latest"), check=metrics_steps)


def metrics_without_checkpoint(ctx):
    run_dir()(ctx)
    shutil.rmtree(ctx.path("run/ckpt"))


add("ckpt", "resume_never_fresh_metrics", train(steps=2, extra=("--resume", "never")), metrics_without_checkpoint,
    expect="ok", says=("dropped 2 lines after step 0",), creates=("run/ckpt",), changes=("run/config.json", "run/metrics.jsonl"),
    check=metrics_steps)


# ==== ckpt: a damaged newest checkpoint -- its files, COMPLETE, latest, a hand-made state.pb ==========================
# Each case damages step-000002 of a LoRA run trained to step 2 (--full: the same for master.safetensors) and runs the
# same command again: a warning naming the checkpoint and what is wrong, a fallback to step-000001 (left as it was),
# step 2 trained again; never a crash. A state.pb edited by hand is resealed (COMPLETE rewritten for it), so that
# only the state reader can find what is wrong with it.
def step1_untouched(full):
    def check(ctx, out, err):
        src = os.path.join(trained_run(ctx, full), ckpt(1))
        for root, _, files in os.walk(src):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), src)
                with open(os.path.join(root, name), "rb") as a, open(os.path.join(ctx.path(ckpt(1)), rel), "rb") as b:
                    if a.read() != b.read():
                        return "step-000001/%s changed" % rel
        if not os.path.isfile(ctx.path(ckpt(2, "COMPLETE"))):
            return "step 2 was not trained again"
        return None
    return check


def damaged(name, edit, says, full=False, extra=()):
    add("ckpt", ("full_" if full else "") + "damaged_" + name, train(full=full, extra=extra),
        run_dir(full, edit), expect="ok", says=("checkpoint run/ckpt/step-000002 is damaged and is skipped",) + says,
        changes=("run/ckpt", "run/config.json", "run/metrics.jsonl"), check=step1_untouched(full))


def on_step2(fn, name):
    return lambda ctx: fn(ctx.path(ckpt(2, name)))


STATE = "state.pb"
damaged("state_pb_truncated", on_step2(I.st_truncate(0.5), STATE), ("state.pb has", "(truncated)"))
damaged("state_pb_byte_flipped", on_step2(I.flip_byte, STATE), ("state.pb has changed since it was written",))
damaged("adapter_byte_flipped", on_step2(I.flip_byte, "adapter_model.safetensors"),
        ("adapter_model.safetensors has changed",))
damaged("optimizer_truncated", on_step2(I.st_truncate(0.3), "optimizer.safetensors"), ("optimizer.safetensors has",))
damaged("adapter_missing", on_step2(os.unlink, "adapter_model.safetensors"), ("adapter_model.safetensors is missing",))
damaged("complete_missing", on_step2(os.unlink, "COMPLETE"), ("no COMPLETE marker",))
damaged("complete_garbage", on_step2(lambda p: I.write(p, bytes(range(256)) * 3), "COMPLETE"),
        ("COMPLETE marker does not start with",))
damaged("complete_empty", on_step2(lambda p: I.write(p, b""), "COMPLETE"), ("COMPLETE marker does not start with",))
damaged("full_master_byte_flipped", on_step2(I.flip_byte, "master.safetensors"), ("master.safetensors has changed",),
        full=True)


def hand_made(name, says, *edits, raw=None, full=False):
    damaged("state_" + name, lambda ctx: I.edit_state(ctx.path(ckpt(2)), *edits, raw=raw), says, full=full)


hand_made("not_protobuf", ("not a valid TrainState protobuf",), raw=b"\xff\xff\xff\xff")
hand_made("empty", ("state format version 0",), raw=b"")
hand_made("format_version_99", ("state format version 99",), ((1,), 99))
hand_made("mode_unknown", ("unknown run mode 'weird'",), ((12,), "weird"))
hand_made("no_data_cursor", ("a required part",), raw=I.pb_encode([(1, 0, 1), (2, 0, 2)]))
hand_made("step_mismatch", ("records step 7, the directory name says 2",), ((2,), 7))
hand_made("world_size_negative", ("world size -1 is outside 1..1048576",), ((7,), -1))
hand_made("world_size_huge", ("world size 2147483647 is outside",), ((7,), (1 << 31) - 1))
hand_made("epoch_absurd", ("the data cursor (epoch 1099511627776",), ((4, 2), 1 << 40))
hand_made("cursor_negative", ("the data cursor (epoch 0, next -3)",), ((4, 3), -3))
hand_made("optimizer_step_absurd", ("optimizer step 4611686018427387904 is outside",), ((6, 1), 1 << 62))
hand_made("counters_negative", ("the counters (-5 samples",), ((9, 1), -5))
hand_made("elapsed_nan", ("elapsed time nan s is not a duration",), ((9, 8), float("nan")))
hand_made("full_world_size_zero", ("world size 0 is outside",), ((7,), 0), full=True)


# A step no run reaches (2^62), in a directory of that name with a COMPLETE of that step: it was taken as the run's
# last step ("the run is already complete"). Now damage: the run falls back to step-000001 and trains step 2 again.
def absurd_step(ctx):
    big = 1 << 62
    d = ctx.path("run/ckpt/step-%d" % big)
    os.rename(ctx.path(ckpt(2)), d)
    I.edit_state(d, ((2,), big))
    I.reseal(d, step=big)


add("ckpt", "state_step_absurd", train(), run_dir(edit=absurd_step), expect="ok",
    says=("step-4611686018427387904 is damaged and is skipped", "step 4611686018427387904 is outside 0..1000000000"),
    changes=("run/ckpt", "run/config.json", "run/metrics.jsonl"))


# `latest` is a pointer for people: pointing nowhere, or garbage, it changes nothing (the run is complete at step 2).
for label, text in (("latest_points_nowhere", "step-000099\n"), ("latest_garbage", bytes(range(256)))):
    add("ckpt", label, train(), run_dir(edit=lambda ctx, t=text: I.write(ctx.path("run/ckpt/latest"), t)),
        expect="ok", says=("the run is already complete",))


# ==== ckpt, used: translate, logits and export take a checkpoint only as it was written ==============================
# A file of a checkpoint changed after its COMPLETE marker was written is named, and nothing is written; an intact
# checkpoint is used as it is. --full checkpoints are read through their model/ directory, whose marker is one up.
def from_checkpoint(program, full=False):
    def argv(ctx):
        model, adapter = (ckpt(2, "model"), None) if full else (ctx.golden_model, ckpt(2))
        given = ["--model", model] + (["--adapter", adapter] if adapter else [])
        if program == "osstune-logits":
            return ["osstune-logits"] + given + ["--tokens", "1,2,3", "--out", "out.f32", "--backend", "cpu"]
        if program == "osstune-translate":
            return ["osstune-translate"] + given + ["--tokenizer", os.path.join(I.REPO, "data", "o200k_base.tiktoken"), "--in", "in.txt", "--direction", "zh2nan", "--backend",
                                                    "cpu", "--max-new-tokens", "2"]
        return ["osstune-export"] + given + ["--out", "out", "--only", "peft" if adapter else "modelfile"]
    return argv


def write_input(ctx):
    I.write(ctx.path("in.txt"), "今天天氣很好。\n")


for full in (False, True):
    damaged_file = "model/model.safetensors" if full else "adapter_model.safetensors"
    role = "--model run/ckpt/step-000002/model" if full else "--adapter run/ckpt/step-000002"
    for program in ("osstune-logits", "osstune-translate", "osstune-export"):
        short = program.split("-")[1]
        add("ckpt", "%s_%s_checkpoint_changed" % (short, "full" if full else "lora"), from_checkpoint(program, full),
            C.steps(run_dir(full, on_step2(I.flip_byte, damaged_file)), write_input),
            says=(role + " is a checkpoint that was damaged after it was written", damaged_file + " has changed"))
add("ckpt", "logits_lora_checkpoint_intact", from_checkpoint("osstune-logits"), run_dir(), expect="ok",
    creates=("out.f32",))
add("ckpt", "logits_full_checkpoint_intact", from_checkpoint("osstune-logits", True), run_dir(True), expect="ok",
    creates=("out.f32",))
