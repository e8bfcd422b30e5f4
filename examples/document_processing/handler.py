"""An example processing function: text extraction and statistics for a user document.

Run it from this repository with
`supaworker run --handler examples.document_processing.handler:process_user_document`, or from
an install with the `[local]` extra as `supaworker_local.examples.handler:process_user_document`
(the wheel carries this folder for `supaworker demo`).
It reads the `user_documents` row through the worker's Supabase client (service role),
extracts plain text from .txt / .md / .html / .csv content, and returns statistics that
are stored as the job's result. Copy it and replace `analyse` with your own work.

What it needs of `user_documents` beyond what supaworker needs (`id`, `user_id`): a `content`
text column holding the document's text (the table supaworker creates has one). `name`, used
for the file type, is optional. A project that keeps its files in Storage replaces `fetch`.
"""

from __future__ import annotations

import csv
import html
import io
import re
from collections import Counter
from html.parser import HTMLParser
from typing import Any

from supaworker import Job, JobContext, PermanentError

WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
VOWEL_GROUPS = re.compile(r"[aeiouy]+")
STOP_WORDS = frozenset(
    (
        "a an and are as at be by for from has have in is it its of on or that the this "
        "to was were will with which their they them than then there these can not but "
        "into also"
    ).split()
)


class _TextExtractor(HTMLParser):
    """Keeps the text of an HTML page, without scripts and styles."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style", "head"):
            self._skip += 1
        elif tag in ("p", "br", "li", "h1", "h2", "h3", "div", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style", "head") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def extract_text(name: str, content: str) -> str:
    """Plain text from a document's content, by its file type."""
    lower = name.lower()
    if lower.endswith((".html", ".htm")):
        parser = _TextExtractor()
        parser.feed(content)
        return html.unescape("".join(parser.parts))
    if lower.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(content)))
        return "\n".join(" ".join(cell for cell in row) for row in rows[1:])
    if lower.endswith(".md"):
        text = re.sub(r"`{3}.*?`{3}", " ", content, flags=re.S)
        return re.sub(r"[#>*_`\[\]()-]+", " ", text)
    return content


def _syllables(word: str) -> int:
    groups = VOWEL_GROUPS.findall(word.lower())
    count = len(groups) - (1 if word.lower().endswith("e") and len(groups) > 1 else 0)
    return max(1, count)


def analyse(text: str) -> dict[str, Any]:
    """Word and sentence counts, vocabulary, top terms and Flesch reading ease."""
    words = WORD.findall(text)
    sentences = max(1, len(SENTENCE_END.findall(text)))
    syllables = sum(_syllables(w) for w in words)
    terms = Counter(w.lower() for w in words if w.lower() not in STOP_WORDS and len(w) > 2)
    n = max(1, len(words))
    flesch = 206.835 - 1.015 * (len(words) / sentences) - 84.6 * (syllables / n)
    return {
        "characters": len(text),
        "words": len(words),
        "sentences": sentences,
        "unique_words": len({w.lower() for w in words}),
        "avg_word_length": round(sum(len(w) for w in words) / n, 2),
        "reading_time_seconds": round(len(words) / 230 * 60),
        "flesch_reading_ease": round(flesch, 1),
        "top_terms": [term for term, _ in terms.most_common(5)],
    }


async def fetch(job: Job, ctx: JobContext) -> tuple[str, str]:
    """The document's name and text. `select("*")`: a project's own table may lack `name`."""
    response = await (
        ctx.supabase.table("user_documents")
        .select("*")
        .eq("id", str(job.user_document_id))
        .limit(1)
        .execute()
    )
    if not response.data:
        raise PermanentError(f"document {job.user_document_id} no longer exists")
    document = response.data[0]
    if "content" not in document:
        raise PermanentError(
            "this example handler reads the text from user_documents.content, a column your "
            "table does not have: replace fetch() in the handler (e.g. download from Storage)"
        )
    return str(document.get("name") or document["id"]), document["content"] or ""


async def process_user_document(job: Job, ctx: JobContext) -> dict[str, Any]:
    """The handler: fetch the document, extract its text, compute statistics."""
    ctx.progress(5, "fetching document")
    name, content = await fetch(job, ctx)
    if job.payload.get("simulate_transient_failure") and job.retry_count == 0:
        # The demo's way of showing recovery: the first attempt hits a "network" error.
        raise ConnectionError("storage backend timed out (simulated, first attempt only)")
    if not content.strip():
        raise PermanentError(f"document {name!r} is empty")
    ctx.progress(30, "extracting text")
    text = extract_text(name, content)
    ctx.progress(60, "computing statistics")
    stats = analyse(text)
    ctx.progress(95, "saving")
    return {"document": name, **stats}
