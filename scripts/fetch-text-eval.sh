#!/usr/bin/env bash
# fetch-text-eval.sh: real labeled sentences (MR, CR, topics) and ordered unlabeled prose
# for Quick Thoughts, fetched with the ordinary package clients (pip, apt-get).
#
# Usage: scripts/fetch-text-eval.sh [--no-cr-pretrain] [--manuals] [DIR]   (DIR: ~/selfsup-text)
#
# Sources (the data is not part of this repository; each keeps its licence):
#   - PyPI sdist vaderSentiment 3.3.2 (MIT; `pip download --no-binary :all: --no-deps`):
#     its hutto_ICWSM_2014/ folder (Hutto and Gilbert, ICWSM 2014) holds 10,605 movie-review
#     sentences (the MR sentences of Pang and Lee), 3,708 product-review sentences (Hu and
#     Liu 2004, the source of CR) and 5,190 New York Times editorial sentences, each with
#     the mean rating of about 20 people on a -4..+4 scale.
#   - Debian `fortunes` (quotations of many authors, distributed under fortune-mod's BSD
#     licence), `bible-kjv` + `bible-kjv-text` (the King James Version, public domain; the
#     `bible` program reads it), `jargon-text` (the Jargon File 4.4.7, public domain);
#     /usr/share/common-licenses (base-files).
#   - With --manuals, also Debian `perl-doc` (the Perl manual pages; GPL-1+ or Artistic)
#     and `python3-doc` (the Python documentation's reStructuredText sources; PSF
#     licence): 1.4 million more words of ordered prose (docs/results.md, "Results,
#     2026-12-08": +0.8 points on MR and +3.1 on the topics at 1% of the labels).
#
# Writes into DIR:
#   mr.tsv      label<TAB>sentence, label = sign of the mean rating (negative / positive).
#               Near-zero ratings are dropped: a sentence is kept when |mean| >= 0.8, i.e.
#               outside the middle fifth of the -4..+4 scale, the band that SST-2 (Socher
#               et al. 2013, the SentEval task built from graded ratings) drops as neutral
#               (its [0.4, 0.6] of a 0..1 slider). Override with NEUTRAL_BAND=0.5 etc.
#   cr.tsv      the product-review sentences, same rule.
#   topics.tsv  fortunes of 8 topic files: computers food law love medicine politics
#               science sports. One entry flattened to one line; the attribution lines
#               ("        -- Author, Work") are cut (a source names its file, not its
#               topic); entries of more than 60 words (stories, dialogues) and entries found
#               in more than one of the 8 files are left out. ASCII art, formatting-only
#               files and the offensive files (off/) are not used.
#   pretrain/   ordered unlabeled prose for `selfsup pretrain --method quickthought
#               --data text:DIR/pretrain`: kjv/ (one file per book, a chapter per
#               paragraph), jargon.txt (the Jargon File's prose, headwords and the table of
#               contents dropped), nyt-editorials/ (one file per editorial, its sentences in
#               order), product-reviews/ (one file per review, in order: the CR sentences
#               without their ratings; --no-cr-pretrain leaves them out), licenses/ (the
#               prose licences of /usr/share/common-licenses); with --manuals also perl/
#               (one file per manual page, `pod2text`, verbatim code dropped) and python/
#               (one file per documentation page, markup and code blocks dropped).
#   downloads/  the sdist and what was extracted from it.
#
# No evaluation sentence is in the pretraining text, except the product-review sentences
# of product-reviews/ (the CR-task labels are never seen): MR sentences and topic entries
# whose words occur in the pretraining text (an 8-word run, or the whole entry when it is
# shorter) are dropped from mr.tsv and topics.tsv and counted.
set -euo pipefail

VADER_VERSION=3.3.2
VADER_SHA256=5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9
NEUTRAL_BAND=${NEUTRAL_BAND:-0.8}
CR_PRETRAIN=1
MANUALS=0

die() { echo "fetch-text-eval: $*" >&2; exit 1; }

DIR=""
for arg in "$@"; do
    case "$arg" in
        --no-cr-pretrain) CR_PRETRAIN=0 ;;
        --manuals) MANUALS=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $arg (allowed: --no-cr-pretrain, --manuals, --help)" ;;
        *) [ -z "$DIR" ] || die "one DIR only (got $DIR and $arg)"; DIR=$arg ;;
    esac
done
DIR=${DIR:-$HOME/selfsup-text}

command -v python3 >/dev/null || die "python3 is needed (apt-get install python3)"
python3 -m pip --version >/dev/null 2>&1 || die "pip is needed to fetch the PyPI package vaderSentiment (apt-get install python3-pip)"

# Debian packages: installed with apt-get when missing (with sudo when not root).
install_debs() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "the Debian package ${missing[0]} is missing and there is no apt-get to install it"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "the Debian package ${missing[0]} is missing; install it as root (no sudo here)"
        sudo=(sudo)
    fi
    echo "installing ${missing[*]} with apt-get..." >&2
    for p in "${missing[@]}"; do
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null 2>&1; then
            "${sudo[@]}" apt-get update -q >/dev/null 2>&1 || true
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null 2>&1 ||
                die "cannot install the Debian package $p (apt-get install $p failed)"
        fi
    done
}
install_debs fortunes bible-kjv bible-kjv-text jargon-text
PERL_POD=/usr/share/perl/5.36/pod
PY_SOURCES=""
if [ "$MANUALS" = 1 ]; then
    install_debs perl-doc python3-doc
    command -v pod2text >/dev/null || die "--manuals: pod2text (Debian perl) is missing"
    PERL_POD=$(ls -d /usr/share/perl/5.*/pod 2>/dev/null | sort -V | tail -n 1)
    [ -n "$PERL_POD" ] || die "--manuals: the Debian package perl-doc is installed but /usr/share/perl/5.*/pod is missing"
    PY_SOURCES=$(ls -d /usr/share/doc/python3.*/html/_sources 2>/dev/null | sort -V | tail -n 1)
    [ -n "$PY_SOURCES" ] || die "--manuals: the Debian package python3-doc is installed but /usr/share/doc/python3.*/html/_sources is missing"
fi

FORTUNES=/usr/share/games/fortunes
JARGON=/usr/share/doc/jargon-text/jargon.txt.gz
[ -d "$FORTUNES" ] || die "the Debian package fortunes is installed but $FORTUNES is missing"
[ -f "$JARGON" ] || die "the Debian package jargon-text is installed but $JARGON is missing"
command -v bible >/dev/null || die "the Debian package bible-kjv is installed but the bible program is missing"

mkdir -p "$DIR/downloads"
DL="$DIR/downloads"
SDIST="$DL/vaderSentiment-$VADER_VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
    python3 -m pip download -q --no-binary :all: --no-deps "vaderSentiment==$VADER_VERSION" -d "$DL" >&2 ||
        die "cannot download the PyPI package vaderSentiment==$VADER_VERSION (pip download failed)"
fi
[ -f "$SDIST" ] || die "pip download did not write $SDIST"
sum=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$SDIST")
[ "$sum" = "$VADER_SHA256" ] || die "$SDIST: sha256 $sum, expected $VADER_SHA256 (remove it and run again)"
rm -rf "$DL/vaderSentiment-$VADER_VERSION" "$DL/hutto_ICWSM_2014"
tar -xzf "$SDIST" -C "$DL"
tar -xzf "$DL/vaderSentiment-$VADER_VERSION/additional_resources/hutto_ICWSM_2014.tar.gz" -C "$DL"
HUTTO="$DL/hutto_ICWSM_2014"

KJV="$DL/kjv.txt"
bible -l80 "gen1:1-rev22:21" >"$KJV" 2>/dev/null || die "the bible program (Debian bible-kjv) failed to print the text"

rm -rf "$DIR/pretrain"
python3 - "$DIR" "$HUTTO" "$KJV" "$JARGON" "$FORTUNES" "$NEUTRAL_BAND" "$CR_PRETRAIN" "$MANUALS" "$PERL_POD" "$PY_SOURCES" <<'PY'
import glob, gzip, os, re, subprocess, sys
from collections import Counter, defaultdict

out, hutto, kjv, jargon, fortunes, band, cr_pretrain, manuals, perl_pod, py_sources = sys.argv[1:]
band, cr_pretrain = float(band), cr_pretrain == "1"
pre = os.path.join(out, "pretrain")
TOPICS = ["computers", "food", "law", "love", "medicine", "politics", "science", "sports"]
MAX_WORDS = 60

def clean(s):
    return " ".join(s.replace("\t", " ").split())

def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)

def rated(name):
    """(id, mean rating, text) rows of a hutto_ICWSM_2014 *_GroundTruth.txt file."""
    rows = []
    with open(os.path.join(hutto, name), encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 3:
                sys.exit(f"fetch-text-eval: {name}:{n}: expected id<TAB>rating<TAB>text")
            rows.append((parts[0], float(parts[1]), clean(parts[2])))
    return rows

def by_document(rows):
    """Rows with ids `doc_sentence`, grouped by document in file order."""
    docs = defaultdict(list)
    for rid, _, text in rows:
        docs[rid.split("_")[0]].append(text)
    return docs

# ---- pretraining text -----------------------------------------------------------------
# The King James Version: one file per book, one paragraph per chapter.
books, book, chapter = [], None, []
lines = open(kjv, encoding="utf-8").read().split("\n")
for i, line in enumerate(lines):
    head = re.fullmatch(r"(\S.*?) (\d+)", line)
    if head and (i == 0 or not lines[i - 1].strip()):
        if chapter:
            book[1].append(" ".join(chapter))
            chapter = []
        if book is None or book[0] != head.group(1):
            book = (head.group(1), [])
            books.append(book)
        continue
    verse = re.sub(r"^\s*\d+ ", "", line).strip()
    if verse:
        chapter.append(verse)
if chapter:
    book[1].append(" ".join(chapter))
for k, (name, chapters) in enumerate(books, 1):
    write(os.path.join(pre, "kjv", f"{k:02d}-{name.replace(' ', '_')}.txt"), "\n\n".join(chapters) + "\n")

# The Jargon File: its prose paragraphs ({links} unwrapped), headwords and lists dropped.
paras = []
for para in re.split(r"\n\s*\n", gzip.open(jargon, "rt", encoding="utf-8").read()):
    p = clean(para)
    if re.match(r"^:[^:]+:", p):
        continue  # a headword line
    p = re.sub(r"\{([^{}]*)\}", r"\1", p)
    if len(p.split()) >= 6 and re.search(r"[.!?][\"'”)]?$", p):
        paras.append(p)
write(os.path.join(pre, "jargon.txt"), "\n\n".join(paras) + "\n")

# The editorials and product reviews: one file per document, one sentence per paragraph
# (the corpus's own segmentation kept).
nyt = rated("nytEditorialSnippets_GroundTruth.txt")
for k, (_, sents) in enumerate(by_document(nyt).items(), 1):
    write(os.path.join(pre, "nyt-editorials", f"{k:03d}.txt"), "\n\n".join(sents) + "\n")
amazon = rated("amazonReviewSnippets_GroundTruth.txt")
if cr_pretrain:
    for k, (_, sents) in enumerate(by_document(amazon).items(), 1):
        write(os.path.join(pre, "product-reviews", f"{k:03d}.txt"), "\n\n".join(sents) + "\n")

# Licences: the prose ones of /usr/share/common-licenses (symlinked duplicates skipped).
lic_dir, seen = "/usr/share/common-licenses", set()
if os.path.isdir(lic_dir):
    for name in sorted(os.listdir(lic_dir)):
        p = os.path.join(lic_dir, name)
        real = os.path.realpath(p)
        if not os.path.isfile(p) or real in seen:
            continue
        seen.add(real)
        try:
            text = open(p, encoding="utf-8").read()
        except UnicodeDecodeError:
            continue
        write(os.path.join(pre, "licenses", name + ".txt"), text)

# Manuals (--manuals): Perl's manual pages through pod2text, verbatim (code) paragraphs
# dropped; the Python documentation's reStructuredText sources with directives, code
# blocks, tables, underlines and inline markup stripped. One file per page, a paragraph
# per paragraph; pages under 50 words and paragraphs under 4 are left out.
def rst_prose(text):
    keep, para, in_code = [], [], False
    for line in text.split("\n"):
        if in_code:
            if line.strip() == "" or line.startswith((" ", "\t")):
                continue
            in_code = False
        s = line.strip()
        if line.startswith((" ", "\t")) and not para:
            continue
        if s.endswith("::"):
            in_code = True
            s = "" if s == "::" else s[:-1]
        if s.startswith(("..", "+-", "|", ">>>", "...")) or re.fullmatch(r"[=\-~^\"'`#*+.:_]{3,}", s):
            s = ""
        if not s:
            if para:
                keep.append(" ".join(para))
                para = []
            continue
        s = re.sub(r":[a-z:]+:`~?([^`<]*?)(\s*<[^>]*>)?`", r"\1", s)
        s = re.sub(r"`+([^`]*)`+_?", r"\1", s)
        para.append(s.replace("**", "").replace("*", ""))
    if para:
        keep.append(" ".join(para))
    return "\n\n".join(p for p in keep if len(p.split()) >= 4)

if manuals == "1":
    for f in sorted(glob.glob(os.path.join(py_sources, "**", "*.rst.txt"), recursive=True)):
        text = rst_prose(open(f, encoding="utf-8", errors="replace").read())
        if len(text.split()) >= 50:
            name = os.path.relpath(f, py_sources).replace("/", "_")[: -len(".rst.txt")]
            write(os.path.join(pre, "python", name + ".txt"), text + "\n")
    for f in sorted(glob.glob(os.path.join(perl_pod, "*.pod"))):
        raw = subprocess.run(["pod2text", "-w", "100000", f], capture_output=True).stdout
        paras = []
        for p in re.split(r"\n\s*\n", raw.decode("utf-8", "replace")):
            lines = [l for l in p.split("\n") if l.strip()]
            if not lines or all(l.startswith("        ") for l in lines):
                continue
            s = " ".join(l.strip() for l in lines)
            if len(s.split()) >= 4:
                paras.append(s)
        if len(" ".join(paras).split()) >= 50:
            write(os.path.join(pre, "perl", os.path.basename(f)[:-4] + ".txt"), "\n\n".join(paras) + "\n")

# ---- what the pretraining text holds, for the overlap check ------------------------
def words(s):
    return re.findall(r"[a-z0-9]+", s.lower())

pre_words = []
for root, _, files in sorted(os.walk(pre)):
    for f in sorted(files):
        if cr_pretrain or "product-reviews" not in root:
            pre_words.extend(words(open(os.path.join(root, f), encoding="utf-8").read()))
            pre_words.append("\x00")  # no n-gram across files
N = 8
grams = {hash(tuple(pre_words[i:i + N])) for i in range(len(pre_words) - N + 1)}
joined = " " + " ".join(pre_words) + " "

def in_pretraining(s):
    w = words(s)
    if len(w) >= N:
        return any(hash(tuple(w[i:i + N])) in grams for i in range(len(w) - N + 1))
    return len(w) >= 4 and (" " + " ".join(w) + " ") in joined

# ---- evaluation files ------------------------------------------------------------------
counts = {}

def sentiment(rows, name, check):
    kept, neutral, overlap = [], 0, 0
    for _, r, text in rows:
        if abs(r) < band or not text:
            neutral += 1
        elif check and in_pretraining(text):
            overlap += 1
        else:
            kept.append(("positive" if r > 0 else "negative", text))
    write(os.path.join(out, name), "".join(f"{l}\t{t}\n" for l, t in kept))
    where = f"{overlap} found in the pretraining text dropped" if check else "in the pretraining text by design, without labels (pretrain/product-reviews)"
    counts[name] = (Counter(l for l, _ in kept), f"{neutral} with |mean| < {band} dropped; {where}")

sentiment(rated("movieReviewSnippets_GroundTruth.txt"), "mr.tsv", True)
sentiment(amazon, "cr.tsv", not cr_pretrain)

entries = {}
for t in TOPICS:
    raw = open(os.path.join(fortunes, t), "rb").read().decode("utf-8", errors="replace")
    es, cur, cut = [], [], False
    for line in raw.split("\n") + ["%"]:
        if line == "%":
            text = clean(" ".join(cur))
            if text:
                es.append(text)
            cur, cut = [], False
        elif cut or (cur and re.match(r"^\s+--\s", line)):
            cut = True  # the attribution and anything after it
        else:
            cur.append(line)
    entries[t] = es
where = defaultdict(set)
for t, es in entries.items():
    for e in es:
        where[e.lower()].add(t)
rows, long_, multi, overlap, dup = [], 0, 0, 0, 0
seen = set()
for t in TOPICS:
    for e in entries[t]:
        if len(e.split()) > MAX_WORDS:
            long_ += 1
        elif len(where[e.lower()]) > 1:
            multi += 1
        elif e.lower() in seen:
            dup += 1
        elif in_pretraining(e):
            overlap += 1
        else:
            seen.add(e.lower())
            rows.append((t, e))
write(os.path.join(out, "topics.tsv"), "".join(f"{l}\t{s}\n" for l, s in rows))
counts["topics.tsv"] = (Counter(l for l, _ in rows), f"{long_} longer than {MAX_WORDS} words, {multi} in several topic files, {dup} repeated, {overlap} found in the pretraining text: dropped")

# ---- counts ----------------------------------------------------------------------------
for name, (c, note) in counts.items():
    total = sum(c.values())
    labels = ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
    print(f"{os.path.join(out, name)}: {total} sentences ({labels}); {note}")
for part in sorted(os.listdir(pre)):
    p = os.path.join(pre, part)
    files = [os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs] if os.path.isdir(p) else [p]
    n_words = sum(len(open(f, encoding="utf-8").read().split()) for f in files)
    print(f"{p}: {len(files)} file(s), {n_words} words")
print(f"pretrain with: selfsup pretrain --method quickthought --data text:{pre}")
PY
