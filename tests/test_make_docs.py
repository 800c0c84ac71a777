"""benchmarks/make_docs.py: docs/img mirrors the results' plots."""

from benchmarks.make_docs import build


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
