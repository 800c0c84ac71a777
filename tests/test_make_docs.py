"""benchmarks/make_docs.py: docs/img mirrors the results' plots, and the figures other pages
cite are copied from the results files, the same on every page."""

import json
import re
from pathlib import Path

from benchmarks.make_docs import RESULTS, build, fill_figures, hybrid_cost


def test_plots_are_copied_and_stale_ones_removed(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    (docs / "img").mkdir(parents=True)
    (results / "speed.md").write_text("# Speed\n\n| a |\n|---|\n| 1 |\n", encoding="utf-8")
    (results / "speed.png").write_bytes(b"new plot")
    (docs / "img" / "gone.png").write_bytes(b"plot of a removed result")
    page = build(results, docs)
    assert (docs / "img" / "speed.png").read_bytes() == b"new plot"
    assert not (docs / "img" / "gone.png").exists()
    assert "| 1 |" in page.read_text(encoding="utf-8")


# -- figures cited on other pages (benchmarks/make_docs.py FIGURES) -------------------
DOCS = Path(__file__).resolve().parents[1] / "docs"
_SPAN = re.compile(r"<!-- make_docs:hybrid_cost -->(.*?)<!-- /make_docs:hybrid_cost -->",
                   re.DOTALL)


def test_hybrid_cost_is_one_figure_from_the_results_on_every_page_citing_it():
    cited = {page: _SPAN.findall((DOCS / page).read_text(encoding="utf-8"))
             for page in ("user_guide.md", "encoders.md", "results.md")}
    assert all(cited.values()), f"a page lost its hybrid_cost span: {cited}"
    assert {body for bodies in cited.values() for body in bodies} == {hybrid_cost(RESULTS)}


def test_committed_pages_hold_what_make_docs_writes():
    """No page was edited by hand between make_docs runs (or left stale after a rerun)."""
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        assert fill_figures(text, RESULTS) == text, f"{page.name}: run python -m benchmarks.make_docs"


def test_no_timing_is_typed_into_a_page():
    """Timings reach the docs from results files only: results.md, or a make_docs span."""
    timing = re.compile(r"\d\s?(ms|milliseconds?)\b")
    for page in sorted(DOCS.glob("*.md")):
        if page.name == "results.md":
            continue
        outside = re.sub(r"<!-- make_docs:([\w-]+) -->.*?<!-- /make_docs:\1 -->", "",
                         page.read_text(encoding="utf-8"), flags=re.DOTALL)
        assert not timing.search(outside), f"{page.name}: {timing.search(outside).group(0)!r}"


def test_cited_figures_follow_the_results_file(tmp_path):
    results, docs = tmp_path / "results", tmp_path / "docs"
    results.mkdir()
    docs.mkdir()
    span = "<!-- make_docs:hybrid_cost -->typed by hand<!-- /make_docs:hybrid_cost -->"
    for name in ("a.md", "b.md"):
        (docs / name).write_text(f"The extra cost: {span}.\n", encoding="utf-8")
    (results / "quality_x_y.md").write_text(
        "# Quality\n\n| a |\n|---|\n| 1 |\n\n## Hybrid query cost\n\nnot measured (Error)\n\n"
        "## Targets\n\nmet\n", encoding="utf-8")
    page = build(results, docs)
    assert "not measured yet" in (docs / "a.md").read_text(encoding="utf-8")
    (results / "encoder_cost.json").write_text(json.dumps({"hybrid_cost": {
        "ms_per_query": 12.345, "encoder": "all-MiniLM-L6-v2", "batch_size": 1, "threads": 1}}))
    (results / "encoder_cost.md").write_text("Command: `x`\n\n| encoder | ms |\n|---|---|\n")
    page = build(results, docs)
    texts = [(docs / n).read_text(encoding="utf-8") for n in ("a.md", "b.md")]
    assert texts[0] == texts[1] and "12.35 ms per query (all-MiniLM-L6-v2" in texts[0]
    generated = page.read_text(encoding="utf-8")
    assert "12.35 ms per query" in generated and "typed by hand" not in texts[0]
    # The quality file's own (superseded) cost note is gone; its other sections stay.
    assert "not measured (Error)" not in generated and "#### Targets" in generated
