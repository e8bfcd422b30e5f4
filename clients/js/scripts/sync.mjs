#!/usr/bin/env node
// Writes the copies of the client that other parts of the repository load, or with --check
// fails when a committed copy differs from what this would write (CI runs that):
//   supaworker/supabase_functions/_supaworker/supaworker/*.ts  the sources for the edge
//     functions (copied into a project by `supaworker init`). Deployed
//     functions are bundled from supabase/functions/ only (the CLI does not reliably follow
//     imports above it), so the functions import a copy inside it, with supabase-js imported
//     as Deno's npm: specifier like the rest of the functions.
//   examples/vendor/supaworker.js  one ESM file for browsers (deno bundle), which the local
//     stack's gateway serves at /vendor/supaworker.js to both static examples.
// dist/ (Node, bundlers; not committed) is tsc's job: `npm run build -w clients/js`.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const client = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const root = resolve(client, "../..");
const src = join(client, "src");
const vendorDir = join(root, "supaworker/supabase_functions/_supaworker/supaworker");
const browserBundlePath = join(root, "examples", "vendor", "supaworker.js");
const check = process.argv.includes("--check");

function vendored(file) {
  const text = readFileSync(join(src, file), "utf8");
  const rewritten = text.replaceAll('from "@supabase/supabase-js"', 'from "npm:@supabase/supabase-js@2"');
  return `// Generated from clients/js/src/${file} by clients/js/scripts/sync.mjs: edit that file.\n${rewritten}`;
}

function browserBundle() {
  const out = join(mkdtempSync(join(tmpdir(), "supaworker-bundle-")), "supaworker.js");
  const deno = join(root, "node_modules/.bin/deno");
  const run = spawnSync(
    deno,
    ["bundle", "--quiet", "--platform", "browser", "--format", "esm", "-o", out, join(src, "index.ts")],
    { cwd: root, encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } },
  );
  if (run.status !== 0) throw new Error(`deno bundle failed: ${run.stderr}`);
  const body = readFileSync(out, "utf8");
  rmSync(dirname(out), { recursive: true });
  return "// supaworker's browser build (ESM), generated from clients/js/src by " +
    "clients/js/scripts/sync.mjs: do not edit.\n" + body;
}

const wanted = new Map();
for (const file of readdirSync(src).filter((f) => f.endsWith(".ts")).sort()) {
  wanted.set(join(vendorDir, file), vendored(file));
}
const bundle = browserBundle();
wanted.set(browserBundlePath, bundle);

const stale = [];
for (const [path, text] of wanted) {
  const current = existsSync(path) ? readFileSync(path, "utf8") : null;
  if (current === text) continue;
  stale.push(relative(root, path));
  if (!check) writeFileSync(path, text);
}
// A source removed from clients/js/src must not linger in the functions' copy.
if (existsSync(vendorDir)) {
  for (const file of readdirSync(vendorDir)) {
    const path = join(vendorDir, file);
    if (file.endsWith(".ts") && !wanted.has(path)) {
      stale.push(relative(root, path));
      if (!check) rmSync(path);
    }
  }
}
if (check && stale.length) {
  console.error(`out of date (run node clients/js/scripts/sync.mjs): ${stale.join(", ")}`);
  process.exit(1);
}
console.log(stale.length ? `updated ${stale.join(", ")}` : "copies up to date");
