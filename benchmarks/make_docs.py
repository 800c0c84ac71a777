"""Generate ``docs/results.md`` from the benchmark outputs: never type results by hand.

Reads every ``benchmarks/results/<stem>.md`` (and ``<stem>.json`` next to it),
copies the plots ``benchmarks/results/*.png`` into ``docs/img/`` and writes one
section per results file: the command that produced it (the JSON's
``command`` field when present, else ``COMMANDS`` below), the markdown table
the benchmark wrote, and its plots (``<stem>*.png``).

Other pages cite figures between ``<!-- make_docs:NAME -->`` and
``<!-- /make_docs:NAME -->``: every run rewrites what lies between from the
results files (``FIGURES`` below), so a figure reads the same on every page
that cites it and is never typed in.

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
    "encoder_cost": "Cost per query: encoders, adapter, search",
    "penalty_default": "Default penalty: fixed C on training queries only",
}

#: Sections first, by file-name prefix: the quality tables, then the few-label ones.
LEADING = ("quality_", "fewlabel_")
#: Order of the sections after those: these, then anything else.
ORDER = ["penalty_default", "stage2", "paper_parity", "encoder_cost", "speed", "streaming", "torch_speed", "index"]

#: Sections of older results files that a later benchmark took over: quality runs
#: before benchmarks/encoder_cost.py noted the hybrid rows' encoder cost themselves
#: (mostly "not measured"); that figure now comes from encoder_cost only.
SUPERSEDED_SECTIONS = ("Hybrid query cost",)

_COMMAND_LINE = re.compile(r"^\s*(Command|Run with|Usage)\s*:.*$", re.IGNORECASE)
_FIGURE = re.compile(r"(?P<open><!-- make_docs:(?P<name>[\w-]+) -->)(?P<body>.*?)"
                     r"(?P<close><!-- /make_docs:(?P=name) -->)", re.DOTALL)
_NOT_MEASURED = ("not measured yet: run `python -m benchmarks.encoder_cost --out "
                 "benchmarks/results`, then `python -m benchmarks.make_docs`")


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


def drop_sections(text, titles):
    """``text`` without its ``## <title>`` sections (heading to the next heading)."""
    out, dropping = [], False
    for line in text.splitlines():
        heading = re.match(r"^#{1,4} (.*)$", line)
        if heading:
            dropping = heading.group(1).strip() in titles
        if not dropping:
            out.append(line)
    return "\n".join(out)


# -- figures cited on other pages ---------------------------------------------------
def hybrid_cost(results):
    """The hybrid adapter's extra cost per query: the cheap encoder run on each query."""
    cost = (read_json(Path(results) / "encoder_cost.json") or {}).get("hybrid_cost")
    if not cost:
        return _NOT_MEASURED
    return (f"{cost['ms_per_query']:.2f} ms per query ({cost['encoder']} encoding one SciFact "
            f"test claim at a time on CPU, {cost['threads']} thread(s); "
            "`python -m benchmarks.encoder_cost`)")


def encoder_cost_table(results):
    """The tables of benchmarks/encoder_cost.py, as its results file holds them."""
    md = Path(results) / "encoder_cost.md"
    body = strip_command_line(md.read_text()) if md.exists() else f"*The table: {_NOT_MEASURED}.*"
    return f"\n\n{body}\n\n"


#: What ``<!-- make_docs:NAME -->`` spans hold, from the results folder.
FIGURES = {"hybrid_cost": hybrid_cost, "encoder_cost_table": encoder_cost_table}


def fill_figures(text, results=RESULTS):
    """``text`` with every figure span rewritten from ``results``."""
    def fill(match):
        name = match["name"]
        if name not in FIGURES:
            raise KeyError(f"unknown figure {name!r}; make_docs knows {sorted(FIGURES)}")
        return match["open"] + FIGURES[name](results) + match["close"]

    return _FIGURE.sub(fill, text)


def figure_span(name):
    """An empty span for ``name``, as a page or a generated section writes it."""
    return f"<!-- make_docs:{name} --><!-- /make_docs:{name} -->"


def refresh_pages(results=RESULTS, docs=DOCS):
    """Rewrite the figure spans of every page but results.md; return the pages changed."""
    changed = []
    for page in sorted(Path(docs).glob("*.md")):
        if page.name == "results.md":
            continue
        text = page.read_text(encoding="utf-8")
        filled = fill_figures(text, results)
        if filled != text:
            page.write_text(filled, encoding="utf-8")
            changed.append(page)
    return changed


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
            text = drop_sections(strip_command_line(md.read_text()), SUPERSEDED_SECTIONS)
            text, shown = relink_images(text, pngs)
            parts.append(demote_headings(text))
        else:
            parts.append(f"Raw results: `benchmarks/results/{stem}.json` (no table written).")
        if stem == "encoder_cost":
            parts += ["", f"The hybrid adapter's extra cost: {figure_span('hybrid_cost')}."]
        for png in pngs:
            if png.name not in shown and (png.stem == stem or png.stem.startswith(stem + "_")):
                parts += ["", f"![{png.stem}](img/{png.name})"]
        parts.append("")
        parts.append(f"Source files: `benchmarks/results/{stem}.*`.")
    if "encoder_cost" not in stems:
        parts += ["", f"## {title_for('encoder_cost')}", "",
                  f"The hybrid adapter's extra cost: {figure_span('hybrid_cost')}."]
    out = docs / "results.md"
    out.write_text(fill_figures("\n".join(parts).rstrip() + "\n", results))
    refresh_pages(results, docs)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--docs", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    print(build(args.results, args.docs))


if __name__ == "__main__":
    main()
