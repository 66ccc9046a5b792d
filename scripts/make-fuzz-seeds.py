#!/usr/bin/python3
"""Write the seed corpora of the fuzzers in fuzz/corpus/.

fuzz_decode: one candidate seed per conformance test case
(../shared/conformance/mqtt-sequences/*.json): the test's `send` payloads
concatenated, prefixed with the mode byte fuzz_decode.c expects (protocol
level; bit 5 when the case starts before CONNECT).  The broker's expected
replies (`recv` payloads) become seeds decoded as a client (bit 4).  The
candidates are many more than the corpus may hold (at most 300 files), so
with --fuzzer they are reduced with libFuzzer's -merge=1 to a set with the
same coverage; without it the script stops after writing the candidates to
--candidates (for inspection).

fuzz_topic: the hand-written "<filter>\\0<topic>" seeds in TOPIC_SEEDS.

File names are the SHA-1 of the content (libFuzzer's convention), so runs
are reproducible and re-running only adds what is new.

Usage (from the repository root, after building with -DDROVER_FUZZ=ON):
    scripts/make-fuzz-seeds.py --fuzzer build/fz/fuzz_decode
"""
import argparse
import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_CONFORMANCE = ROOT.parent / "shared" / "conformance" / "mqtt-sequences"

MODE_FROM_SERVER = 0x10
MODE_BEFORE_CONNECT = 0x20
MAX_FILES = 300
MAX_BYTES = 1 << 20

# Hand-written seeds for fuzz_topic: (filter, topic).
TOPIC_SEEDS = [
    (b"a/b", b"a/b"),
    (b"a/+", b"a/b"),
    (b"a/+/c", b"a//c"),
    (b"a/#", b"a"),
    (b"a/#", b"a/b/c"),
    (b"#", b"/"),
    (b"+", b""),
    (b"+/+", b"/"),
    (b"/#", b"/finance"),
    (b"sport/tennis/+", b"sport/tennis/player1/ranking"),
    (b"#", b"$SYS/broker/uptime"),
    (b"+/x", b"$SYS/x"),
    (b"$SYS/#", b"$SYS"),
    (b"$share/group/a/+", b"a/b"),
    (b"$share//a", b"a"),
    (b"$share/g+/#", b"x"),
    (b"a/#/b", b"a/x/b"),
    (b"a+/b", b"a+/b"),
    ("caf\u00e9/+".encode(), "caf\u00e9/\U0001F600".encode()),
    (b"\xc0\xaf/+", b"\xed\xa0\x80/x"),
    (b"t/\xef\xbf\xbf", b"t/\xf4\x8f\xbf\xbd"),
    (b"a/b/c/d/e/f/g/h/i/j/+/#", b"a/b/c/d/e/f/g/h/i/j/k/l/m"),
]


def hexbytes(s):
    return bytes.fromhex(s.replace(" ", ""))


def decode_candidates(conformance):
    """Yield seed contents for fuzz_decode from the conformance corpus."""
    files = sorted(conformance.glob("*.json"))
    if not files:
        sys.exit(f"no conformance files in {conformance}")
    for path in files:
        for group in json.loads(path.read_text()):
            if group.get("disable"):
                continue
            for test in group["tests"]:
                ver = test.get("ver", group.get("ver", 4))
                connect = test.get("connect", group.get("connect", True))
                sends = [hexbytes(m["payload"]) for m in test["msgs"] if m["type"] == "send"]
                if sends:
                    mode = ver | (0 if connect else MODE_BEFORE_CONNECT)
                    yield bytes([mode]) + b"".join(sends)
                for m in test["msgs"]:
                    if m["type"] == "recv":
                        yield bytes([ver | MODE_FROM_SERVER]) + hexbytes(m["payload"])


def write_seeds(directory, seeds):
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for s in seeds:
        name = directory / hashlib.sha1(s).hexdigest()
        if not name.exists():
            name.write_bytes(s)
            n += 1
    return n


def corpus_size(directory):
    files = [p for p in directory.iterdir() if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conformance", type=pathlib.Path, default=DEFAULT_CONFORMANCE)
    ap.add_argument("--fuzzer", type=pathlib.Path, help="built fuzz_decode, to merge candidates")
    ap.add_argument("--candidates", type=pathlib.Path, help="keep the unmerged candidates here")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "fuzz" / "corpus")
    args = ap.parse_args()

    topic_dir = args.out / "fuzz_topic"
    n = write_seeds(topic_dir, [f + b"\0" + t for f, t in TOPIC_SEEDS])
    print(f"fuzz_topic: {n} new seeds, {corpus_size(topic_dir)[0]} in {topic_dir}")

    candidates = list(dict.fromkeys(decode_candidates(args.conformance)))
    tmp = None
    cand_dir = args.candidates
    if cand_dir is None:
        tmp = tempfile.mkdtemp(prefix="drover-seeds-")
        cand_dir = pathlib.Path(tmp)
    try:
        write_seeds(cand_dir, candidates)
        print(f"fuzz_decode: {len(candidates)} distinct candidates")
        if args.fuzzer is None:
            print("no --fuzzer given: not merging (fuzz/corpus/fuzz_decode unchanged)")
            return
        decode_dir = args.out / "fuzz_decode"
        decode_dir.mkdir(parents=True, exist_ok=True)
        # -merge=1 adds to decode_dir only the candidates that bring new coverage.
        subprocess.run(
            [str(args.fuzzer), "-merge=1", "-rss_limit_mb=1024", str(decode_dir), str(cand_dir)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        files, total = corpus_size(decode_dir)
        print(f"fuzz_decode: {files} seeds, {total} bytes in {decode_dir}")
        if files > MAX_FILES or total > MAX_BYTES:
            sys.exit(f"corpus over budget ({MAX_FILES} files, {MAX_BYTES} bytes)")
    finally:
        if tmp:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
