"""Generate ``docs/results.md`` from the benchmark outputs: never type results by hand.

Reads every ``benchmarks/results/<stem>.md`` (and ``<stem>.json`` next to it),
copies the plots ``benchmarks/results/*.png`` into ``docs/img/`` and writes one
section per results file: the command that produced it (the JSON's
``command`` field when present, else ``COMMANDS`` below), the markdown table
the benchmark wrote, and its plots (``<stem>*.png``).

Usage::

    PYTHONPATH=. python -m benchmarks.make_docs [--results benchmarks/results] [--docs docs]
"""

import argparse
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"

#: Commands of the benchmarks whose JSON has no ``command`` field.
COMMANDS = {
    "index": "PYTHONPATH=. python benchmarks/index_bench.py --n-synthetic 200000",
    "torch_speed": "PYTHONPATH=. python benchmarks/torch_speed.py",
    "speed": "PYTHONPATH=. python -m benchmarks.speed --sizes 1e3 1e4 1e5 1e6 --repeats 3",
    "streaming": "PYTHONPATH=. python -m benchmarks.streaming",
}

#: Section titles; files not listed get a title derived from their name.
TITLES = {
    "speed": "Speed and memory of the closed-form adapter",
    "index": "HNSW index against exact search",
    "torch_speed": "Torch training loop overhead",
    "streaming": "Streaming stage 1 (partial_fit_align)",
    "stage2": "Stage 2 (softmax default): stability and speed",
    "paper_parity": "paper_recipe() against the official ERA code",
}

#: Sections first, by file-name prefix: the quality tables, then the few-label ones.
LEADING = ("quality_", "fewlabel_")
#: Order of the sections after those: these, then anything else.
ORDER = ["stage2", "paper_parity", "speed", "streaming", "torch_speed", "index"]

_COMMAND_LINE = re.compile(r"^\s*(Command|Run with|Usage)\s*:.*$", re.IGNORECASE)


def title_for(stem):
    if stem in TITLES:
        return TITLES[stem]
    match = re.fullmatch(r"(?P<kind>quality|fewlabel)_(?P<dataset>[^_]+)_(?P<rest>.+)", stem)
    if match:
        kind = "Retrieval quality" if match["kind"] == "quality" else "Few labels"
        return f"{kind}: {match['dataset']}, documents by {match['rest']}"
    return stem.replace("_", " ").capitalize()


def command_for(stem, meta):
    if isinstance(meta, dict) and meta.get("command"):
        return str(meta["command"])
    if stem in COMMANDS:
        return COMMANDS[stem]
    for prefix in LEADING:
        if stem.startswith(prefix):
            module = prefix.rstrip("_")
            return f"PYTHONPATH=. python -m benchmarks.{module} (see benchmarks/{module}.py)"
    return None


def sort_key(stem):
    for i, prefix in enumerate(LEADING):
        if stem.startswith(prefix):
            return (0, f"{i:03d}{stem}")
    if stem in ORDER:
        return (1, f"{ORDER.index(stem):03d}")
    return (2, stem)


def demote_headings(text, levels=2):
    """Push the file's own headings below the section heading (``#`` -> ``###``)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"^#{1,4} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out)


def strip_command_line(text):
    """Drop a leading ``Command: ...`` line: the section prints the command itself."""
    lines = text.strip("\n").splitlines()
    kept = [line for line in lines[:3] if not _COMMAND_LINE.match(line)] + lines[3:]
    if kept and re.match(r"^# ", kept[0]):  # the section heading replaces the file's title
        kept = kept[1:]
    return "\n".join(kept).strip("\n")


def relink_images(text, pngs):
    """Point the table's own image links at ``img/`` (where the PNGs are copied).

    Returns the text and the names of the images it already shows.
    """
    names = {png.name for png in pngs}
    shown = set()

    def repl(match):
        target = match.group(2)
        name = Path(target).name
        if name in names:
            shown.add(name)
            return f"{match.group(1)}(img/{name})"
        return match.group(0)

    return re.sub(r"(!\[[^\]]*\])\(([^)\s]+\.png)\)", repl, text), shown


def read_json(path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def build(results=RESULTS, docs=DOCS):
    """Write ``docs/results.md`` (and ``docs/img/*.png``); return its path."""
    results, docs = Path(results), Path(docs)
    img = docs / "img"
    pngs = sorted(results.glob("*.png"))
    if pngs:
        img.mkdir(parents=True, exist_ok=True)
        for png in pngs:
            shutil.copyfile(png, img / png.name)
    # docs/img holds copies only: a plot whose results file is gone goes too.
    for stale in set(img.glob("*.png")) - {img / p.name for p in pngs}:
        stale.unlink()
    stems = {p.stem for p in results.glob("*.md")} | {p.stem for p in results.glob("*.json")}
    parts = [
        "# Results",
        "",
        "<!-- Generated by benchmarks/make_docs.py from benchmarks/results/: do not edit. -->",
        "",
        ("Every number on this page was produced by the benchmark command shown in its "
        "section and copied here by `python -m benchmarks.make_docs`."),
    ]
    if not stems:
        parts += ["", "No benchmark results yet: run the benchmarks, then `make_docs`."]
    for stem in sorted(stems, key=sort_key):
        meta = read_json(results / f"{stem}.json")
        parts += ["", f"## {title_for(stem)}", ""]
        command = command_for(stem, meta)
        if command:
            parts += ["Made with:", "", "```bash", command, "```", ""]
        md = results / f"{stem}.md"
        shown = set()
        if md.exists():
            text, shown = relink_images(strip_command_line(md.read_text()), pngs)
            parts.append(demote_headings(text))
        else:
            parts.append(f"Raw results: `benchmarks/results/{stem}.json` (no table written).")
        for png in pngs:
            if png.name not in shown and (png.stem == stem or png.stem.startswith(stem + "_")):
                parts += ["", f"![{png.stem}](img/{png.name})"]
        parts.append("")
        parts.append(f"Source files: `benchmarks/results/{stem}.*`.")
    out = docs / "results.md"
    out.write_text("\n".join(parts).rstrip() + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    print(build(args.results, args.docs))


if __name__ == "__main__":
    main()
