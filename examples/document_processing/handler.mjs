// The example handler of handler.py, in JavaScript: `supaworker run --handler-command "node
// handler.mjs"` (`supaworker demo --handler node` runs it from the wheel, which carries it as
// supaworker_local/examples/handler.mjs). Same work, same result: it reads the
// `user_documents` row over PostgREST with the service key the worker passes on in its
// environment (SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY), extracts plain text from .txt / .md /
// .html / .csv content and returns the same statistics, plus `runtime` (which handler ran).
//
// No dependencies, so it runs anywhere Node 18+ is: it speaks the JSON-lines protocol of
// --handler-command itself (README, "Handlers in other languages"). A real worker file uses
// `serve()` from the `supaworker` npm package instead of the protocol code at the bottom:
//   serve(async (job, ctx) => processUserDocument(job, ctx))
import { realpathSync } from "node:fs";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";

class PermanentError extends Error {
  permanent = true;
}

const WORD = /[A-Za-z][A-Za-z'-]*/g;
// A run of ., ! or ? that ends a sentence, once per run (handler.py, issue 19): the lookbehind
// refuses to start inside a run, so each run is tried once and this stays linear.
const SENTENCE_END = /(?<![.!?])[.!?]+(?:\s|$)/g;
const VOWEL_GROUPS = /[aeiouy]+/g;
const STOP_WORDS = new Set(
  (
    "a an and are as at be by for from has have in is it its of on or that the this " +
    "to was were will with which their they them than then there these can not but " +
    "into also"
  ).split(" ")
);
const ENTITIES = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: "\u00a0" };

// Character references (the common named ones, and numeric ones); Python's html.unescape
// knows every HTML5 name.
function unescape(text) {
  return text.replace(/&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);/g, (whole, ref) => {
    if (ref[0] !== "#") return ENTITIES[ref] ?? whole;
    const code = ref[1] === "x" || ref[1] === "X" ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
    return code > 0 && code <= 0x10ffff ? String.fromCodePoint(code) : whole;
  });
}

// The text of an HTML page without scripts, styles and head, as handler.py's _TextExtractor.
function htmlText(content) {
  const parts = [];
  let skip = 0;
  let last = 0;
  const tokens = /<!--[\s\S]*?-->|<!\[CDATA\[[\s\S]*?\]\]>|<[!?][^>]*>|<(\/?)([a-zA-Z][^\s/>]*)[^>]*>/g;
  for (const token of content.matchAll(tokens)) {
    if (!skip) parts.push(unescape(content.slice(last, token.index)));
    last = token.index + token[0].length;
    const tag = token[2]?.toLowerCase();
    if (tag === undefined) continue;
    if (["script", "style", "head"].includes(tag)) {
      if (!token[1]) skip += 1;
      else if (skip) skip -= 1;
    } else if (!token[1] && ["p", "br", "li", "h1", "h2", "h3", "div", "tr"].includes(tag)) {
      parts.push("\n");
    }
  }
  if (!skip) parts.push(unescape(content.slice(last)));
  return unescape(parts.join(""));
}

// Rows of a CSV document (quoted fields, "" inside quotes, newlines inside quotes).
function csvRows(content) {
  const rows = [];
  let row = [];
  let cell = "";
  let quoted = false;
  for (let i = 0; i < content.length; i++) {
    const c = content[i];
    if (quoted) {
      if (c === '"' && content[i + 1] === '"') (cell += '"'), i++;
      else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") row.push(cell), (cell = "");
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && content[i + 1] === "\n") i++;
      row.push(cell), rows.push(row), (row = []), (cell = "");
    } else cell += c;
  }
  if (cell !== "" || row.length) row.push(cell), rows.push(row);
  return rows;
}

export function extractText(name, content) {
  const lower = name.toLowerCase();
  if (lower.endsWith(".html") || lower.endsWith(".htm")) return htmlText(content);
  if (lower.endsWith(".csv")) return csvRows(content).slice(1).map((row) => row.join(" ")).join("\n");
  if (lower.endsWith(".md")) {
    return content.replace(/`{3}[\s\S]*?`{3}/g, " ").replace(/[#>*_`\[\]()-]+/g, " ");
  }
  return content;
}

function syllables(word) {
  const groups = word.toLowerCase().match(VOWEL_GROUPS) ?? [];
  const count = groups.length - (word.toLowerCase().endsWith("e") && groups.length > 1 ? 1 : 0);
  return Math.max(1, count);
}

// Python's round(): the nearest value, an exact tie to the even digit (toFixed takes it up).
function round(value, digits = 0) {
  const scaled = value * 10 ** digits;
  if (Math.abs(scaled % 1) === 0.5) {
    const even = Math.floor(scaled) % 2 === 0 ? Math.floor(scaled) : Math.ceil(scaled);
    return even / 10 ** digits;
  }
  return Number(value.toFixed(digits));
}

export function analyse(text) {
  const words = text.match(WORD) ?? [];
  const sentences = Math.max(1, (text.match(SENTENCE_END) ?? []).length);
  const syllableCount = words.reduce((sum, w) => sum + syllables(w), 0);
  const terms = new Map(); // insertion order breaks ties, as Python's Counter.most_common
  for (const w of words) {
    const term = w.toLowerCase();
    if (!STOP_WORDS.has(term) && w.length > 2) terms.set(term, (terms.get(term) ?? 0) + 1);
  }
  const n = Math.max(1, words.length);
  const flesch = 206.835 - 1.015 * (words.length / sentences) - 84.6 * (syllableCount / n);
  return {
    characters: [...text].length,
    words: words.length,
    sentences,
    unique_words: new Set(words.map((w) => w.toLowerCase())).size,
    avg_word_length: round(words.reduce((sum, w) => sum + w.length, 0) / n, 2),
    reading_time_seconds: round((words.length / 230) * 60),
    flesch_reading_ease: round(flesch, 1),
    top_terms: [...terms].sort((a, b) => b[1] - a[1]).slice(0, 5).map(([term]) => term),
  };
}

// The document's name and text, read as handler.py's fetch() reads them (service role).
async function fetchDocument(job) {
  const key = process.env.SUPABASE_SERVICE_ROLE_KEY || process.env.SUPABASE_SECRET_KEY;
  if (!process.env.SUPABASE_URL || !key) {
    // The worker runs with both and its child inherits them: this is a start outside a worker.
    throw new PermanentError("SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY must be set");
  }
  const url = new URL("/rest/v1/user_documents", process.env.SUPABASE_URL);
  url.search = new URLSearchParams({ select: "*", id: `eq.${job.user_document_id}`, limit: "1" });
  const response = await fetch(url, { headers: { apikey: key, Authorization: `Bearer ${key}` } });
  if (!response.ok) throw new Error(`reading the document: HTTP ${response.status} ${await response.text()}`);
  const [document] = await response.json();
  if (!document) throw new PermanentError(`document ${job.user_document_id} no longer exists`);
  if (!("content" in document)) {
    throw new PermanentError(
      "this example handler reads the text from user_documents.content, a column your " +
        "table does not have: replace fetchDocument() in the handler (e.g. download from Storage)"
    );
  }
  return [String(document.name || document.id), document.content ?? ""];
}

export async function processUserDocument(job, ctx) {
  ctx.progress(5, "fetching document");
  const [name, content] = await fetchDocument(job);
  if (job.payload?.simulate_transient_failure && job.retry_count === 0) {
    // The demo's way of showing recovery: the first attempt hits a "network" error.
    throw new Error("storage backend timed out (simulated, first attempt only)");
  }
  if (!content.trim()) throw new PermanentError(`document '${name}' is empty`);
  ctx.progress(30, "extracting text");
  const text = extractText(name, content);
  ctx.progress(60, "computing statistics");
  const stats = analyse(text);
  ctx.progress(95, "saving");
  return { document: name, ...stats, runtime: `node ${process.version}` };
}

// -- the JSON-lines protocol (what serve() does for you) ---------------------------------------
// Only when run as the worker's child, not when imported (a test imports analyse()).
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const send = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);
  createInterface({ input: process.stdin }).on("line", async (line) => {
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      return console.error(`ignoring a line that is not JSON: ${line.slice(0, 200)}`);
    }
    // A cancel: these jobs take milliseconds, so let the job answer (its answer is ignored).
    if (message.type !== "job") return;
    const { job } = message;
    const progress = (percent, text) => send({ type: "progress", job_id: job.id, percent, message: text });
    try {
      send({ type: "result", job_id: job.id, result: await processUserDocument(job, { progress }) });
    } catch (error) {
      send({ type: "error", job_id: job.id, message: error.message, permanent: error.permanent === true });
    }
  });
}
