"""Malformed inputs for the robustness suite: every reader's file format, broken one way at a time.

Each maker writes into a case's own directory (`d`) and returns nothing; the cases (cases.py) say which program reads
the result and what it must answer. Standard library only, except the HDF5 pairs files (h5py, numpy).
"""
import json
import os
import shutil
import struct

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN = os.path.join(REPO, "tests", "fixtures", "golden")  # a 3-layer gpt-oss (vocab 331, MXFP4) and an adapter
TIKTOKEN = os.path.join(REPO, "data", "o200k_base.tiktoken")
SHARD0 = "model-00000-of-00002.safetensors"
SHARD1 = "model-00001-of-00002.safetensors"


# The environment every program runs in (the cases, and the fixtures some cases train once). Sanitizer builds
# (OT_SANITIZE=ON): report and stop at the first error. Leak checking is off: the programs leave through error paths
# that free nothing on purpose (exit reclaims it), and Open MPI's own start-up allocations are reported as leaks by
# every MPI program; neither is what this suite is about.
PROGRAM_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "OMPI_ALLOW_RUN_AS_ROOT": "1",
    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    "OMPI_MCA_rmaps_base_oversubscribe": "1",
}


def write(path, data):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


# ---- pairs (TSV / JSONL) -------------------------------------------------------------------------------------------
GOOD_ROWS = ["今仔日天氣真好。\t今天天氣很好。", "我欲去學校。\t我要去學校。"]


def tsv(d, *bad_lines, name="in.tsv", header="nan\tzh", bom=False):
    """A pairs TSV: the header, good rows, then the given lines (str or bytes) -- so a bad line is line 4 on."""
    body = (("\ufeff" if bom else "") + header + "\n" + "\n".join(GOOD_ROWS) + "\n").encode()
    for line in bad_lines:
        body += (line.encode() if isinstance(line, str) else line) + b"\n"
    write(os.path.join(d, name), body)


def jsonl(d, *bad_lines, name="in.jsonl", bom=False):
    """A pairs JSONL: good objects, then the given lines -- a bad line is line 3 on."""
    rows = [json.dumps({"nan": r.split("\t")[0], "zh": r.split("\t")[1]}, ensure_ascii=False) for r in GOOD_ROWS]
    body = (("\ufeff" if bom else "") + "\n".join(rows) + "\n").encode()
    for line in bad_lines:
        body += (line.encode() if isinstance(line, str) else line) + b"\n"
    write(os.path.join(d, name), body)


# ---- tokenizers ----------------------------------------------------------------------------------------------------
def tiktoken_lines(edit):
    """The o200k_base .tiktoken lines with edit(lines) applied; written as tok.tiktoken by tiktoken()."""
    with open(TIKTOKEN, "rb") as f:
        lines = f.read().split(b"\n")
    return edit(lines)


def tiktoken(d, edit, name="tok.tiktoken"):
    write(os.path.join(d, name), b"\n".join(tiktoken_lines(edit)))


def tokenizer_json(d, good_json, edit, name="tokenizer.json"):
    """A copy of a valid tokenizer.json (built once per run from the .tiktoken file) with edit(obj) applied."""
    with open(good_json, encoding="utf-8") as f:
        obj = json.load(f)
    edit(obj)
    write(os.path.join(d, name), json.dumps(obj, ensure_ascii=False))


# ---- model directories ---------------------------------------------------------------------------------------------
def model(d, name="m"):
    """A private copy of the golden model (its files are edited in place by the makers below)."""
    dst = os.path.join(d, name)
    shutil.copytree(os.path.join(GOLDEN, "model"), dst)
    return dst


def adapter(d, name="a"):
    dst = os.path.join(d, name)
    shutil.copytree(os.path.join(GOLDEN, "adapter"), dst)
    return dst


def edit_json(path, edit):
    with open(path, encoding="utf-8") as f:
        obj = json.load(f)
    edit(obj)
    write(path, json.dumps(obj, indent=1))


def config(d, edit, name="m"):
    """A model whose config.json went through edit(cfg) (a function that changes the dict)."""
    edit_json(os.path.join(model(d, name), "config.json"), edit)


def config_text(d, text, name="m"):
    """A model whose config.json is exactly `text` (bytes or str)."""
    write(os.path.join(model(d, name), "config.json"), text)


def set_keys(**kv):
    def edit(cfg):
        for k, v in kv.items():
            if v is DELETE:
                cfg.pop(k, None)
            else:
                cfg[k] = v
    return edit


def set_rope(**kv):
    def edit(cfg):
        cfg["rope_parameters"].update(kv)
    return edit


DELETE = object()


# ---- safetensors ---------------------------------------------------------------------------------------------------
def st_read(path):
    """(header dict, data bytes) of a safetensors file."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path, header, data, header_bytes=None):
    h = header_bytes if header_bytes is not None else json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    write(path, struct.pack("<Q", len(h)) + h + data)


def first_tensor(header):
    return sorted(k for k in header if k != "__metadata__")[0]


def shard(d, edit, name=SHARD1, model_name="m"):
    """A model whose shard `name` went through edit(path): the edit rewrites the file."""
    m = model(d, model_name)
    edit(os.path.join(m, name))


def st_edit_header(edit):
    """An edit of the header dict (data unchanged)."""
    def run(path):
        h, data = st_read(path)
        edit(h)
        st_write(path, h, data)
    return run


def st_truncate(keep_fraction):
    def run(path):
        with open(path, "rb") as f:
            raw = f.read()
        write(path, raw[:int(len(raw) * keep_fraction)])
    return run


def st_raw(data):
    def run(path):
        write(path, data)
    return run


def st_header_bytes(header_bytes):
    def run(path):
        _, data = st_read(path)
        st_write(path, None, data, header_bytes=header_bytes)
    return run


def st_replace_with(kind):
    """The shard's place taken by a directory, a FIFO, or a symlink to a directory."""
    def run(path):
        os.unlink(path)
        if kind == "dir":
            os.mkdir(path)
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "dirlink":
            os.mkdir(path + ".d")
            os.symlink(os.path.basename(path) + ".d", path)
    return run


def drop_tensor(d, tensor, model_name="m"):
    """A model without `tensor`, removed from its shard and from the index (so only the architecture check sees it)."""
    m = model(d, model_name)
    index_path = os.path.join(m, "model.safetensors.index.json")
    with open(index_path) as f:
        index = json.load(f)
    fname = index["weight_map"].pop(tensor)
    write(index_path, json.dumps(index))
    path = os.path.join(m, fname)
    h, data = st_read(path)
    h.pop(tensor)
    # Re-pack the remaining tensors so their ranges tile the buffer again.
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])
    out, off = b"", 0
    for k in names:
        lo, hi = h[k]["data_offsets"]
        out += data[lo:hi]
        h[k]["data_offsets"] = [off, off + hi - lo]
        off += hi - lo
    st_write(path, h, out)


# ---- HDF5 pairs files ----------------------------------------------------------------------------------------------
def pairs_h5(path, vocab=331, edit=None):
    """A valid osstune pairs file (schema of formats/pairs_h5.h) for a model with `vocab` ids: 6 samples of 9..14
    tokens; edit(arrays, attrs) may change the arrays and attributes before they are written."""
    import h5py
    import numpy as np
    lens = [9, 10, 11, 12, 13, 14]
    tokens = np.array([(7 * i + 3) % vocab for i in range(sum(lens))], dtype=np.uint32)
    arrays = {
        "tokens": tokens,
        "offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.uint64),
        "loss_start": np.array([n // 2 for n in lens], dtype=np.uint32),
        "direction": np.array([i % 2 for i in range(len(lens))], dtype=np.uint8),
        "source_line": np.array([2 + i // 2 for i in range(len(lens))], dtype=np.uint64),
    }
    attrs = {"format": "osstune-pairs", "version": np.uint32(1), "tokenizer_sha256": "0" * 64,
             "tokenizer_vocab_size": np.uint32(vocab), "system_text": "s", "instruction_zh2nan": "a",
             "instruction_nan2zh": "b", "directions": "both", "source_file": "x.tsv",
             "n_samples": np.uint64(len(lens)), "n_tokens": np.uint64(len(tokens)), "n_pairs": np.uint64(3),
             "n_rejected": np.uint64(0)}
    if edit:
        edit(arrays, attrs)
    with h5py.File(path, "w", libver=("v108", "latest")) as f:
        for k, v in attrs.items():
            if v is not DELETE:
                f.attrs[k] = v
        for k, v in arrays.items():
            if v is not DELETE:
                f.create_dataset(k, data=v, chunks=True, compression="gzip", fletcher32=True)


def flip_byte_in_dataset(path, dataset="tokens"):
    """Flips one byte inside the dataset's first stored chunk: its fletcher32 checksum no longer matches."""
    import h5py
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset = ds.id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as f:
        f.seek(offset + 3)
        b = f.read(1)
        f.seek(offset + 3)
        f.write(bytes([b[0] ^ 0x55]))


# ---- checkpoints: state.pb (protobuf wire format, read and written here without a protobuf library) ---------------
# proto/osstune.proto: the field numbers of TrainState and of its sub-messages that the cases edit.
STATE_SUBMESSAGES = {4: "data", 5: "rng", 6: "optimizer", 8: "fingerprints", 9: "metrics"}


def _varint(b, i):
    shift = value = 0
    while True:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _put_varint(v):
    v &= (1 << 64) - 1  # negative int32/int64 values are 10-byte two's complement varints
    out = bytearray()
    while True:
        byte, v = v & 0x7F, v >> 7
        out.append(byte | (0x80 if v else 0))
        if not v:
            return bytes(out)


def pb_decode(b):
    """[(field, wire type, value)]: varints as unsigned ints, 64/32-bit fields and length-delimited ones as bytes."""
    fields, i = [], 0
    while i < len(b):
        key, i = _varint(b, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        elif wt == 2:
            n, i = _varint(b, i)
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wt)
        fields.append((num, wt, v))
    return fields


def pb_encode(fields):
    out = b""
    for num, wt, v in fields:
        out += _put_varint(num << 3 | wt)
        if wt == 0:
            out += _put_varint(v)
        elif wt == 2:
            out += _put_varint(len(v)) + v
        else:
            out += v
    return out


def pb_set(fields, path, value):
    """Sets the field at path (numbers, e.g. (4, 2) = data.epoch) to value: an int (varint), a float (double, wire
    type 1), or bytes / str (length-delimited); missing fields and sub-messages are added."""
    import struct as st
    num = path[0]
    if len(path) > 1:
        for k, (n, wt, v) in enumerate(fields):
            if n == num and wt == 2:
                fields[k] = (n, 2, pb_encode(pb_set(pb_decode(v), path[1:], value)))
                return fields
        fields.append((num, 2, pb_encode(pb_set([], path[1:], value))))
        return fields
    if isinstance(value, float):
        new = (num, 1, st.pack("<d", value))
    elif isinstance(value, (bytes, str)):
        new = (num, 2, value.encode() if isinstance(value, str) else value)
    else:
        new = (num, 0, value)
    fields[:] = [f for f in fields if f[0] != num] + [new]
    return fields


def reseal(ckpt_dir, step=None):
    """Rewrites COMPLETE for the files as they are now (and, given, the step it records): a hand-made change that
    only the readers of the files themselves can find."""
    import hashlib
    path = os.path.join(ckpt_dir, "COMPLETE")
    with open(path) as f:
        lines = f.read().splitlines()
    out = []
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "file":
            with open(os.path.join(ckpt_dir, parts[1]), "rb") as g:
                data = g.read()
            line = "file %s %d %s" % (parts[1], len(data), hashlib.sha256(data).hexdigest())
        elif parts and parts[0] == "step" and step is not None:
            line = "step %d" % step
        out.append(line)
    write(path, "\n".join(out) + "\n")


def edit_state(ckpt_dir, *edits, raw=None):
    """state.pb of a checkpoint directory with pb_set edits ((path, value), ...) or replaced by raw bytes, resealed."""
    path = os.path.join(ckpt_dir, "state.pb")
    if raw is None:
        with open(path, "rb") as f:
            fields = pb_decode(f.read())
        for where, value in edits:
            pb_set(fields, where, value)
        raw = pb_encode(fields)
    write(path, raw)
    reseal(ckpt_dir)


def flip_byte(path, at=0.5):
    with open(path, "r+b") as f:
        f.seek(0, 2)
        k = int(f.tell() * at)
        f.seek(k)
        b = f.read(1)
        f.seek(k)
        f.write(bytes([b[0] ^ 0x5A]))
