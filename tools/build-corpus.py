#!/usr/bin/env python3
"""Build the Mandarin <-> Taiwanese Hokkien corpus (train / dev / test / heldout / lexicon TSV) from local clones
of its public sources. Python standard library only; the output is a pure function of the input files.

usage: tools/build-corpus.py --moedict DIR [--icorpus DIR] [--chhoetaigi DIR] --out DIR

  --moedict DIR     a clone of g0v/moedict-data-twblg (reads uni/例句.csv)
  --icorpus DIR     a clone of Taiwanese-Corpus/icorpus_ka1_han3-ji7 (reads 語料/原始華語.txt,
                    語料/自動標人工改漢字.txt, 語料/自動標人工改音標.txt). Leave it out for a corpus without the
                    iCorpus rows, whose licence forbids commercial use (see data/README.md)
  --chhoetaigi DIR  a clone of ChhoeTaigi/ChhoeTaigiDatabase (reads
                    ChhoeTaigiDatabase/ChhoeTaigi_iTaigiHoataiTuichiautian.csv); without it, no lexicon.tsv
  --out DIR         where train.tsv, dev.tsv, test.tsv, heldout.tsv and lexicon.tsv go (created if missing; the
                    files are written under temporary names and renamed when all are complete)
  --quiet           only errors

Get the sources (the commits the published corpus was built from):

    git clone https://github.com/g0v/moedict-data-twblg && git -C moedict-data-twblg checkout 4626bfc
    git clone https://github.com/Taiwanese-Corpus/icorpus_ka1_han3-ji7 && git -C icorpus_ka1_han3-ji7 checkout f49537f
    git clone https://github.com/ChhoeTaigi/ChhoeTaigiDatabase && git -C ChhoeTaigiDatabase checkout b33c6a1

Output (UTF-8, a header `zh nan source nan_tl`, tab-separated, never quoted, one pair per line):
  train.tsv, dev.tsv, test.tsv  the splits (about 90 / 5 / 5 of the pairs not held out)
  heldout.tsv                   the 3.5 % of hash buckets set aside as a separate evaluation set: never train on it
  lexicon.tsv                   iTaigi word glosses, for training only

The rules (docs: data/README.md, "Rebuilding the corpus"):
  * Text: whitespace runs (U+3000 included) become one space; a space next to a CJK character or CJK
    punctuation is removed (this undoes the iCorpus word segmentation); nothing else is changed in zh and nan.
    nan_tl is NFC-normalized.
  * A pair is dropped when a side is empty, holds an HTML tag or entity, U+FFFD, a control / format / private-use
    / surrogate character, kana or an ideographic description character, numeric-tone romanization on the Hokkien
    side (kiann1-kah8), or when zh or nan is over 300 characters.
  * moedict-twblg: columns 例句 (nan), 例句標音 (nan_tl), 華語翻譯 (zh); rows without a translation are skipped.
    Rows whose Mandarin adds an explanation are dropped, never trimmed (CC BY-ND): more sentence-internal 。！？
    in zh than in nan, or one side longer than 2.5 x the other + 4 characters.
  * icorpus-hanji: the three files are line-aligned. Lines are joined into one unit while the Mandarin line ends
    in ，、；：; a unit ends at any other line end, or before a line that would take it past 300 characters. A unit
    with a broken line is dropped whole. A Hokkien (or Tâi-lô) line that lost its final mark gets the Mandarin
    line's. nan_tl: numeric tones become diacritics (a leading 0: neutral tone, "--"), full-width punctuation
    becomes ASCII, the first letter of the unit is capitalized.
  * Exact duplicate (zh, nan) pairs are removed, the first kept (moedict-twblg before icorpus-hanji).
  * Split: pairs sharing a zh key or a nan key (the text without punctuation, symbols and spaces) form one group;
    bucket = int(sha256("taigi-split-v1\\t" + the group's smallest zh key)[:8], 16) % 10000; buckets 0-349:
    heldout, 350-849: dev, 850-1349: test, the rest: train.
  * itaigi (lexicon.tsv): columns HoaBun (zh), HanLoTaibunKip (nan), the first variant of KipUnicode (nan_tl).
    Dropped: Han-Lo entries with Latin letters, broken entries (the rules above, on zh and nan), duplicates,
    zh == nan, and entries whose zh or nan key is that of a held-out pair (dev, test, heldout).
"""
import argparse
import csv
import hashlib
import os
import re
import sys
import unicodedata

# ---- the sources ---------------------------------------------------------------------------------------------------
MOE_FILE = os.path.join("uni", "例句.csv")
ICORPUS_FILES = {"zh": os.path.join("語料", "原始華語.txt"), "nan": os.path.join("語料", "自動標人工改漢字.txt"),
                 "nan_tl": os.path.join("語料", "自動標人工改音標.txt")}
ITAIGI_FILE = os.path.join("ChhoeTaigiDatabase", "ChhoeTaigi_iTaigiHoataiTuichiautian.csv")
# SHA-256 of the files the published corpus was built from (its README); a different file is used all the same.
PUBLISHED_SHA256 = {
    MOE_FILE: "358390643fcd508f53e434e0748a783151bc7dd3fca92681c04a1b18f5ab4137",
    ICORPUS_FILES["zh"]: "9c6dd3168c204dcfeabadb3b7e6ef9b5f1f0aef72ec3e607d07f4c47d1f7cf08",
    ICORPUS_FILES["nan"]: "5fcc2959b4c7853d3090907a30a2f20899c7a591ee09f3683e7bbb7f90d5eaf7",
    ICORPUS_FILES["nan_tl"]: "a82f312d26acb4a0e1660b9b9a6860fc7ebaeae7440326ca7c449704b654fe43",
    ITAIGI_FILE: "eec28ed3fec522b72a70257c6d6d454f4f710d0ad6d63a07994a6354a4f0d3b4",
}
# The iTaigi CSV has named its columns in two styles over its history.
ITAIGI_COLUMNS = {"zh": ("HoaBun", "hoabun"), "nan": ("HanLoTaibunKip", "hanlo_taibun_kip"),
                  "nan_tl": ("KipUnicode", "kiplmj_unicode")}

MAX_CHARS = 300
SPLIT_SALT = "taigi-split-v1\t"
SPLITS = ((350, "heldout"), (850, "dev"), (1350, "test"), (10000, "train"))  # (first bucket past it, split)
HEADER = "zh\tnan\tsource\tnan_tl"


class SourceError(Exception):
    """A source file that cannot be read as the format it should have: the message names file and line."""


# ---- text ----------------------------------------------------------------------------------------------------------
# The full-width marks the corpus treats as CJK punctuation: spaces next to them go, and in nan_tl they become ASCII.
TL_PUNCT = {"，": ",", "、": ",", "。": ".", "；": ";", "！": "!", "？": "?", "：": ":", "（": "(", "）": ")",
            "「": '"', "」": '"', "『": "'", "』": "'"}
TL_OPENERS = "（「『"
CJK_PUNCT = frozenset(TL_PUNCT)
CJK_RANGES = ((0x2E80, 0x2FDF), (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3040, 0x30FF),
              (0x3100, 0x312F), (0x31A0, 0x31FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
              (0x20000, 0x3FFFF))


def is_cjk(ch):
    o = ord(ch)
    return ch in CJK_PUNCT or any(lo <= o <= hi for lo, hi in CJK_RANGES)


def normalize(text):
    """Whitespace runs -> one space, stripped; a space next to a CJK character or CJK punctuation removed."""
    s = " ".join(text.split())
    out = []
    for i, ch in enumerate(s):
        if ch == " " and (is_cjk(s[i - 1]) or is_cjk(s[i + 1])):  # inner spaces only: s is stripped
            continue
        out.append(ch)
    return "".join(out)


def split_key(text):
    """The text without punctuation, symbols, separators and spaces: pairs equal up to these share a split."""
    return "".join(c for c in text if unicodedata.category(c)[0] not in "PSZ" and not c.isspace())


HTML = re.compile(r"<[A-Za-z/!][^<>]*>|&(?:[A-Za-z]+|#[0-9]+|#[xX][0-9A-Fa-f]+);")
NUMERIC_TONE = re.compile(r"(?<![A-Za-z0-9])[a-z]+[1-9](?![A-Za-z0-9])")  # kiann1, kah8: romanization left in Han


def bad_characters(text):
    """Why the text cannot be in the corpus (a character class rule), or None."""
    if HTML.search(text):
        return "HTML"
    for ch in text:
        o, cat = ord(ch), unicodedata.category(ch)
        if ch == "\ufffd" or cat in ("Cc", "Cf", "Co", "Cs"):
            return "control / format / private-use character"
        if 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9F or 0x2FF0 <= o <= 0x2FFF:
            return "kana / ideographic description character"
    return None


def drop_reason(zh, nan, tl=None):
    """The reason a pair is dropped under the rules every source shares, or None. The lexicon leaves tl out: its
    romanization is kept as the source has it (a few entries have none)."""
    sides = (zh, nan) if tl is None else (zh, nan, tl)
    if not all(sides):
        return "empty side"
    for text in sides:
        why = bad_characters(text)
        if why:
            return why
    if NUMERIC_TONE.search(nan):
        return "numeric-tone romanization in nan"
    if len(zh) > MAX_CHARS or len(nan) > MAX_CHARS:
        return "over %d characters" % MAX_CHARS
    return None


# ---- Tâi-lô: numeric tones to diacritics ---------------------------------------------------------------------------
TONE_MARKS = {2: "\u0301", 3: "\u0300", 5: "\u0302", 6: "\u030c", 7: "\u0304", 8: "\u030d", 9: "\u030b"}


def tone_vowel(syllable):
    """Index of the letter that carries the tone mark: a; else oo / o / e; else the later of i and u; else i or u;
    else the n of ng; else m; else n (the Ministry of Education's Tâi-lô rules)."""
    s = syllable.lower()
    if "a" in s:
        return s.index("a")
    if "oo" in s:
        return s.index("oo")
    oe = [s.index(v) for v in "oe" if v in s]
    if oe:
        return min(oe)
    iu = [s.index(v) for v in "iu" if v in s]
    if iu:
        return max(iu)
    for part in ("ng", "m", "n"):
        if part in s:
            return s.index(part)
    return 0


def mark_syllable(m):
    letters, tone = m.group(1), int(m.group(2))
    mark = TONE_MARKS.get(tone, "")
    k = tone_vowel(letters) + 1
    return letters[:k] + mark + letters[k:]


SYLLABLE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]+)([1-9])(?![A-Za-z0-9])")


def tailo_marks(text):
    """Numeric-tone Tâi-lô (normalized) -> diacritics, ASCII punctuation, NFC, first letter capitalized."""
    s = re.sub(r"-0(?=[A-Za-z])", "--", text)  # a leading 0 marks the neutral tone: kong2-0lai5 -> kóng--lâi
    s = re.sub(r"(?<![A-Za-z0-9-])0(?=[A-Za-z])", "--", s)
    s = SYLLABLE.sub(mark_syllable, s)
    out = []  # full-width marks to ASCII: no space inside brackets and quotes, none before a closing mark
    after_opener = False
    for ch in s:
        if ch in TL_OPENERS or ch == "(":
            if out and out[-1] != " " and not after_opener:
                out.append(" ")
            out.append(TL_PUNCT.get(ch, ch))
            after_opener = True
            continue
        if ch in TL_PUNCT or ch == ")":
            while out and out[-1] == " ":
                out.pop()
            out.append(TL_PUNCT.get(ch, ch))
            if ch != ")":
                out.append(" ")
        elif ch == " " and after_opener:
            continue
        else:
            out.append(ch)
        after_opener = False
    s = unicodedata.normalize("NFC", " ".join("".join(out).split()))
    for i, ch in enumerate(s):
        if ch.isalpha():
            return unicodedata.normalize("NFC", s[:i] + ch.upper() + s[i + 1:])
    return s


# ---- reading the sources ------------------------------------------------------------------------------------------
def read_text(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SourceError("%s: cannot read: %s" % (path, e.strerror))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise SourceError("%s:%d: not valid UTF-8 (byte %d of the file)" % (path, line, e.start))


def csv_rows(path, columns):
    """The named columns of every data row of a CSV, as (line, {name: value}); columns: {name: accepted headers}."""
    reader = csv.reader(read_text(path).splitlines())
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError("%s: empty file (expected a CSV header)" % path)
    index = {}
    for name, accepted in columns.items():
        found = [header.index(h) for h in accepted if h in header]
        if not found:
            raise SourceError("%s:1: no column %s in the header (%s)" % (path, " or ".join(accepted), ",".join(header)))
        index[name] = found[0]
    for row in reader:
        if not row:
            continue
        if len(row) <= max(index.values()):
            raise SourceError("%s:%d: %d fields, the header has %d" % (path, reader.line_num, len(row), len(header)))
        yield reader.line_num, {name: row[i] for name, i in index.items()}


def moedict_pairs(clone, stats):
    """(zh, nan, nan_tl) of the MOE dictionary examples, in file order."""
    path = os.path.join(clone, MOE_FILE)
    pairs = []
    for _, row in csv_rows(path, {"nan": ("例句",), "nan_tl": ("例句標音",), "zh": ("華語翻譯",)}):
        stats.count("moedict-twblg", "example rows")
        zh, nan = normalize(row["zh"]), normalize(row["nan"])
        tl = unicodedata.normalize("NFC", normalize(row["nan_tl"]))
        if not zh:
            continue
        stats.count("moedict-twblg", "with a Mandarin translation")
        why = drop_reason(zh, nan, tl)
        if not why and inner_marks(zh) > inner_marks(nan):
            why = "explanation: more sentence-internal 。！？ in zh"
        if not why and (len(zh) > 2.5 * len(nan) + 4 or len(nan) > 2.5 * len(zh) + 4):
            why = "explanation: one side over 2.5 x the other + 4"
        if why:
            stats.count("moedict-twblg", "dropped: " + why)
            continue
        pairs.append((zh, nan, tl))
    return pairs


SENTENCE_END = "。！？"
TRAILING = "。！？!?.」』）)”’\"' …"


def inner_marks(text):
    """The 。！？ of the text that do not end it (closing quotes and brackets after the last one included)."""
    return sum(text.rstrip(TRAILING).count(m) for m in SENTENCE_END)


CONTINUES = "，、；："  # a Mandarin line ending in one of these is continued by the next line
LINE_MARKS = CONTINUES + SENTENCE_END
ASCII_MARKS = ",;:.!?"


def icorpus_lines(clone):
    """The three line-aligned files as lists of lines, checked to have the same length."""
    texts = {}
    for col, rel in ICORPUS_FILES.items():
        text = read_text(os.path.join(clone, rel)).replace("\r\n", "\n")
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        texts[col] = lines
    counts = {col: len(v) for col, v in texts.items()}
    if len(set(counts.values())) != 1:
        raise SourceError("%s: the three files are not line-aligned: %s lines" % (
            os.path.join(clone, "語料"), ", ".join("%s %d" % (ICORPUS_FILES[c], n) for c, n in counts.items())))
    return texts


def icorpus_pairs(clone, stats):
    """(zh, nan, nan_tl) of the iCorpus units, in file order."""
    texts = icorpus_lines(clone)
    zh_l, nan_l, tl_l = texts["zh"], texts["nan"], texts["nan_tl"]
    stats.count("icorpus-hanji", "aligned lines", len(zh_l))
    pairs = []
    unit = []  # (zh, nan, tl, broken) of the lines of the current unit

    def close():
        if not unit:
            return
        stats.count("icorpus-hanji", "units")
        zh = normalize("".join(u[0] for u in unit))
        nan = normalize("".join(u[1] for u in unit))
        tl = tailo_marks(normalize(" ".join(u[2] for u in unit)))
        why = "broken line" if any(u[3] for u in unit) else drop_reason(zh, nan, tl)
        if why:
            stats.count("icorpus-hanji", "dropped: " + why)
        else:
            pairs.append((zh, nan, tl))
        unit.clear()

    for i in range(len(zh_l)):
        zh, nan, tl = normalize(zh_l[i]), normalize(nan_l[i]), normalize(tl_l[i])
        broken = drop_reason(zh, nan, tl) is not None
        mark = zh[-1:] if zh[-1:] in LINE_MARKS else ""
        if mark and nan and nan[-1] not in LINE_MARKS:
            nan += mark  # the Hokkien clause lost its final mark: the Mandarin clause's
        if mark and tl and tl[-1] not in LINE_MARKS + ASCII_MARKS:
            tl += mark
        if unit and (len("".join(u[0] for u in unit) + zh) > MAX_CHARS or
                     len("".join(u[1] for u in unit) + nan) > MAX_CHARS):
            close()
        unit.append((zh, nan, tl, broken))
        if not mark or mark not in CONTINUES:
            close()
    close()
    return pairs


def itaigi_entries(clone):
    """(zh, nan, nan_tl) of every iTaigi entry, in file order (nan_tl: the first variant)."""
    path = os.path.join(clone, ITAIGI_FILE)
    for _, row in csv_rows(path, ITAIGI_COLUMNS):
        tl = row["nan_tl"].split("/")[0]
        yield normalize(row["zh"]), normalize(row["nan"]), unicodedata.normalize("NFC", normalize(tl))


def has_latin(text):
    return any(ch.isalpha() and "LATIN" in unicodedata.name(ch, "") for ch in text)


# ---- dedup, groups, splits -----------------------------------------------------------------------------------------
def bucket_of(zh_key):
    return int(hashlib.sha256((SPLIT_SALT + zh_key).encode("utf-8")).hexdigest()[:8], 16) % 10000


def split_of_bucket(bucket):
    for end, name in SPLITS:
        if bucket < end:
            return name
    raise ValueError(bucket)


def assign_splits(pairs):
    """The split of every (zh, nan, ...) pair: groups of pairs linked by a shared zh key or nan key (union-find)
    land together, by the bucket of the group's smallest zh key."""
    parent = {}

    def find(x):
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for p in pairs:
        a, b = find(("zh", split_key(p[0]))), find(("nan", split_key(p[1])))
        if a != b:
            parent[max(a, b)] = min(a, b)
    smallest = {}
    for p in pairs:
        root, key = find(("zh", split_key(p[0]))), split_key(p[0])
        if root not in smallest or key < smallest[root]:
            smallest[root] = key
    return [split_of_bucket(bucket_of(smallest[find(("zh", split_key(p[0])))])) for p in pairs]


class Stats:
    """Counts per source and reason, in the order first seen (for the report)."""

    def __init__(self):
        self.counts = {}

    def count(self, source, what, n=1):
        self.counts.setdefault(source, {})
        self.counts[source][what] = self.counts[source].get(what, 0) + n


def build(moedict, icorpus, chhoetaigi, stats):
    """{split: [(zh, nan, source, nan_tl)]} for train, dev, test, heldout and (with chhoetaigi) lexicon."""
    tagged = [(zh, nan, "moedict-twblg", tl) for zh, nan, tl in moedict_pairs(moedict, stats)]
    if icorpus:
        tagged += [(zh, nan, "icorpus-hanji", tl) for zh, nan, tl in icorpus_pairs(icorpus, stats)]
    seen, unique = set(), []
    for p in tagged:
        if (p[0], p[1]) in seen:
            stats.count(p[2], "dropped: duplicate (zh, nan)")
            continue
        seen.add((p[0], p[1]))
        unique.append(p)
    out = {name: [] for _, name in SPLITS}
    for p, split in zip(unique, assign_splits(unique)):
        out[split].append(p)
        stats.count(p[2], "in " + split)
    if chhoetaigi:
        held = [p for name in ("dev", "test", "heldout") for p in out[name]]
        held_zh, held_nan = {split_key(p[0]) for p in held}, {split_key(p[1]) for p in held}
        lexicon, seen = [], set()
        for zh, nan, tl in itaigi_entries(chhoetaigi):
            stats.count("itaigi", "entries")
            why = None
            if has_latin(nan):
                why = "Han-Lo entry with Latin letters"
            elif drop_reason(zh, nan):
                why = "broken entry"
            elif (zh, nan) in seen:
                why = "duplicate"
            elif zh == nan:
                why = "zh == nan"
            elif split_key(zh) in held_zh or split_key(nan) in held_nan:
                why = "zh or nan in a held-out split"
            seen.add((zh, nan))
            if why:
                stats.count("itaigi", "dropped: " + why)
                continue
            lexicon.append((zh, nan, "itaigi", tl))
        out["lexicon"] = lexicon
        stats.count("itaigi", "in lexicon", len(lexicon))
    return out


# ---- writing -------------------------------------------------------------------------------------------------------
def file_id(path):
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return None


def write_outputs(out_dir, splits, inputs):
    """Every file under a temporary name first, then renamed: a failed run leaves the old files in place. An
    output never replaces an input (compared by device and inode, not by name)."""
    os.makedirs(out_dir, exist_ok=True)
    input_ids = {file_id(p) for p in inputs} - {None}
    staged = []
    try:
        for name, rows in splits.items():
            final = os.path.join(out_dir, name + ".tsv")
            if file_id(final) in input_ids:
                raise SourceError("%s is one of the inputs; choose another --out" % final)
            if os.path.lexists(final) and not os.path.isfile(final):
                raise SourceError("%s exists and is not a regular file" % final)
            tmp = "%s.tmp.%d" % (final, os.getpid())
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(HEADER + "\n")
                for zh, nan, source, tl in rows:
                    f.write("%s\t%s\t%s\t%s\n" % (zh, nan, source, tl))
                f.flush()
                os.fsync(f.fileno())
            staged.append((tmp, final))
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def main(argv=None):
    # The options are described in the module text, which --help prints.
    ap = argparse.ArgumentParser(prog="build-corpus.py", usage="%(prog)s --moedict DIR [--icorpus DIR] "
                                 "[--chhoetaigi DIR] --out DIR", description=__doc__.split("\n\n", 2)[2],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moedict", required=True, help=argparse.SUPPRESS)
    ap.add_argument("--icorpus", help=argparse.SUPPRESS)
    ap.add_argument("--chhoetaigi", help=argparse.SUPPRESS)
    ap.add_argument("--out", required=True, help=argparse.SUPPRESS)
    ap.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    say = (lambda *a: None) if args.quiet else (lambda *a: print("build-corpus:", *a, flush=True))

    inputs = [(args.moedict, MOE_FILE)]
    if args.icorpus:
        inputs += [(args.icorpus, rel) for rel in ICORPUS_FILES.values()]
    if args.chhoetaigi:
        inputs.append((args.chhoetaigi, ITAIGI_FILE))
    for clone, rel in inputs:
        path = os.path.join(clone, rel)
        if not os.path.isfile(path):
            print("build-corpus: %s is missing: is %s a clone of the right repository? (see --help)" % (path, clone),
                  file=sys.stderr)
            return 1
        digest = sha256_of(path)
        say("%s: sha256 %s (%s)" % (path, digest[:16], "the published corpus's input" if
                                    digest == PUBLISHED_SHA256[rel] else "not the published corpus's input: "
                                    "another commit; the output will differ from it"))
    stats = Stats()
    try:
        splits = build(args.moedict, args.icorpus, args.chhoetaigi, stats)
        write_outputs(args.out, splits, [os.path.join(c, r) for c, r in inputs])
    except SourceError as e:
        print("build-corpus: error: %s" % e, file=sys.stderr)
        return 1
    for source, counts in stats.counts.items():
        for what, n in counts.items():
            say("%-14s %-52s %7d" % (source, what, n))
    for name, rows in splits.items():
        say("wrote %s: %d pairs" % (os.path.join(args.out, name + ".tsv"), len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
