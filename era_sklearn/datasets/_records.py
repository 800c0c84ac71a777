"""Reading the data sets' files: JSON lines, qrels TSV, their fields and grades.

Private to :mod:`era_sklearn.datasets`. Every reader names the file and line of
a malformed record, so a broken download fails with a message that says where.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

# errors="surrogateescape" turns each byte that is not UTF-8 into one of these
# characters, which valid UTF-8 never decodes to: finding one names the line.
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _text_lines(path, newline=None):
    """``(line number, line)`` of a UTF-8 text file, a byte-order mark dropped.

    ``utf-8-sig`` drops the mark (editors on Windows write one), which would otherwise
    make the first line invalid. A byte that is not UTF-8 is a ValueError naming the
    file and line (Python's UnicodeDecodeError names neither).
    """
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline=newline) as f:
        for lineno, line in enumerate(f, 1):
            bad = _NOT_UTF8.search(line)
            if bad:
                raise ValueError(
                    f"{path} line {lineno} is not UTF-8 text (byte 0x{ord(bad.group()) - 0xDC00:02x} "
                    f"at character {bad.start() + 1}); convert the file to UTF-8."
                )
            yield lineno, line


def _read_jsonl(path):
    """``(line number, JSON object)`` of a jsonl file, one per non-blank line."""
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} line {lineno} is not valid JSON: {e}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path} line {lineno} is not a JSON object.")  # noqa: TRY004 (bad file content)
        yield lineno, row


@dataclass(frozen=True)
class _Records:
    """Numbered records of one jsonl file (``unit="line"``) or hub split (``unit="row"``)."""

    source: str
    unit: str
    numbered: Iterable

    def located(self):
        """``(number, record, "<source> <unit> <number>")`` of every record."""
        for n, row in self.numbered:
            yield n, row, f"{self.source} {self.unit} {n}"

    def id_map(self, triples):
        """``{id: value}`` of ``(number, id, value)`` triples; a repeated id is an error."""
        out, first = {}, {}
        for n, key, value in triples:
            if key in out:
                raise ValueError(
                    f"{self.source} {self.unit} {n} repeats the id {key!r} of {self.unit} "
                    f"{first[key]}; ids must be unique."
                )
            out[key], first[key] = value, n
        return out


def _field(row, key, where):
    if key not in row:
        raise ValueError(f"{where} has no {key!r} field.")
    return row[key]


def _id_field(row, key, where):
    """An id: a string, or an integer read as its decimal string (never null or a float)."""
    value = _field(row, key, where)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise ValueError(f"{where}: {key!r} must be a string or an integer id, got {value!r:.60}.")


def _text_field(row, key, where, *, optional=False):
    """A text: a string; with ``optional``, a missing or null one is the empty string."""
    value = row.get(key) if optional else _field(row, key, where)
    if optional and value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(  # noqa: TRY004 (bad file content)
            f"{where}: {key!r} must be a string, got {type(value).__name__} {value!r:.60}."
        )
    return value


# A decimal number as trec_eval and BEIR write grades; float() would also take "1_0" (10),
# non-ASCII digits and padding. inf and nan pass here to be refused as not finite.
_GRADE = re.compile(r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)",
                    re.ASCII | re.IGNORECASE)


def _grade(value, where):
    """A relevance grade: an int, or a float when the file gives a fractional one."""
    if isinstance(value, str) and not _GRADE.fullmatch(value.strip()):
        raise ValueError(f"{where}: grade {value!r} is not a number.")
    try:
        grade = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: grade {value!r} is not a number.") from None
    if not math.isfinite(grade):
        raise ValueError(f"{where}: grade {value!r} is not finite.")
    return int(grade) if grade.is_integer() else grade


def _warn_fractional(fractional, where, stacklevel):
    if fractional:
        warnings.warn(
            f"{where} has {len(fractional)} fractional grade(s) (first: {fractional[0]}); "
            "they are kept as floats. era_sklearn.metrics and qrels_to_pairs use them as "
            "they are; trec_eval-based tools (pytrec_eval, ir_measures) need int grades.",
            UserWarning,
            stacklevel=stacklevel + 1,
        )


_QRELS_COLUMNS = ("query-id", "corpus-id", "score")


def _read_qrels_tsv(path):
    """BEIR qrels: a ``query-id corpus-id score`` header, then tab-separated rows.

    Fields are split on tabs only: BEIR's TSV has no quoting, so a ``"`` is part
    of an id (the csv module would read it as a quote and merge lines).
    """
    lines = [line.rstrip("\r\n") for _, line in _text_lines(path, newline="")]
    if not lines or [name.strip() for name in lines[0].split("\t")] != list(_QRELS_COLUMNS):
        found = lines[0] if lines else "an empty file"
        raise ValueError(
            f"{path} must start with the tab-separated header {' '.join(_QRELS_COLUMNS)}; "
            f"found {found!r}."
        )
    qrels, line_of, fractional, conflicts = {}, {}, [], []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{path} line {lineno} has {len(fields)} tab-separated fields, not 3.")
        qid, doc, text = fields
        grade = _grade(text, f"{path} line {lineno}")
        if isinstance(grade, float):
            fractional.append(f"line {lineno}: {text}")
        if (qid, doc) in line_of and qrels[qid][doc] != grade:
            conflicts.append(f"lines {line_of[qid, doc]} and {lineno}")
        line_of[qid, doc] = lineno
        qrels.setdefault(qid, {})[doc] = grade
    if not line_of:
        raise ValueError(f"{path} has a header but no judgements.")
    if conflicts:
        warnings.warn(
            f"{path} grades {len(conflicts)} (query, document) pair(s) twice, differently "
            f"(first: {conflicts[0]}); the later line is kept.",
            UserWarning,
            stacklevel=3,
        )
    _warn_fractional(fractional, path, stacklevel=3)
    qrels = {q: {d: g for d, g in docs.items() if g > 0} for q, docs in qrels.items()}
    qrels = {q: docs for q, docs in qrels.items() if docs}
    if not qrels:
        raise ValueError(f"{path} has no judgement with a grade > 0.")
    return qrels


def _document_text(row, where):
    title = _text_field(row, "title", where, optional=True)
    return f"{title} {_text_field(row, 'text', where, optional=True)}".strip()


def _query_text(row, where):
    return _text_field(row, "text", where)


def _beir_texts(file, text_of):
    """``{_id: text_of(row, where)}`` of a BEIR jsonl file; ids present and unique."""
    records = _Records(str(file), "line", _read_jsonl(file))
    return records.id_map(
        (n, _id_field(row, "_id", where), text_of(row, where)) for n, row, where in records.located()
    )


def _keep_judged(queries, qrels, all_queries):
    # Most BEIR query files hold every split's queries; an evaluation only wants the
    # judged ones of its split.
    return queries if all_queries else {q: t for q, t in queries.items() if q in qrels}


def _dataset_root(extracted):
    # BEIR's zips hold one top folder named after the set; accept a flat zip too.
    entries = [p for p in extracted.iterdir() if not p.name.startswith("__MACOSX")]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else extracted
