// A user's view of their jobs: supabase-js (the npm package's UMD build, served locally),
// the user's JWT for every call, Realtime Broadcast on the user's private topic jobs:<user id>
// (the database sends every change of the user's jobs there; an RLS policy on
// realtime.messages lets only that user, and queue admins, join it), and the supaworker client's browser build (/vendor/supaworker.js, generated from
// clients/js) to queue documents and read jobs. enqueue() calls enqueue_job as the user, so
// the database decides ownership; the enqueue-document edge function does the same call for
// apps that want it behind an HTTP endpoint.
/* global supabase, SUPAWORKER_CONFIG */
import { enqueue, listJobs } from "/vendor/supaworker.js";

const state = { client: null, userId: null, names: new Map(), rows: new Map(), channel: null };
const $ = (id) => document.getElementById(id);

function log(message) {
  $("log").textContent += `${new Date().toISOString().slice(11, 23)} ${message}\n`;
}

function userIdOf(token) {
  const body = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(body)).sub;
}

function render() {
  const rows = [...state.rows.values()].sort((a, b) => a.created_at.localeCompare(b.created_at));
  $("jobs").replaceChildren(...rows.map((job) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    const cells = [
      state.names.get(job.user_document_id) || job.user_document_id,
      job.status,
      job.progress_percent == null ? "" : `${Math.round(job.progress_percent)}%`,
      job.result ? `${job.result.words} words, ${job.result.sentences} sentences` : (job.error_message || ""),
    ];
    cells.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (i === 1) td.className = `status ${job.status}`;
      if (i === 2 && job.progress_percent != null) {
        const bar = document.createElement("progress");
        bar.max = 100;
        bar.value = job.progress_percent;
        td.prepend(bar);
      }
      tr.appendChild(td);
    });
    return tr;
  }));
}

function upsert(job) {
  const known = state.rows.get(job.id);
  if (known && known.updated_at > job.updated_at) return; // an older event arriving late
  state.rows.set(job.id, { ...known, ...job });
  render();
}

async function loadJobs() {
  const docs = await state.client.from("user_documents").select("id, name");
  (docs.data || []).forEach((d) => state.names.set(d.id, d.name));
  (await listJobs(state.client, { limit: 1000 })).forEach(upsert);
}

function subscribe() {
  // Broadcast rather than postgres_changes: one message per statement that changed this user's jobs,
  // nothing about other users' (postgres_changes also sends every subscriber a frame for
  // other users' changes and their DELETEd job ids), and no per-subscriber RLS check.
  state.channel = state.client
    .channel(`jobs:${state.userId}`, { config: { private: true } })
    .on("broadcast", { event: "job" }, ({ payload }) => {
      // One message per database statement: that statement's changes to this user's jobs.
      if (payload.type === "DELETE") return; // purged: the list keeps what it showed
      for (const record of payload.records || []) {
        log(`${payload.type} ${record.id} -> ${record.status}`);
        upsert(record);
      }
    })
    .subscribe((status, error) => {
      log(`channel ${status}${error ? ": " + error.message : ""}`);
      if (status === "SUBSCRIBED") {
        $("realtime-status").textContent = "realtime: subscribed";
        loadJobs(); // catch up on anything that changed before the subscription was live
      }
    });
}

async function signIn() {
  const token = $("token").value.trim();
  state.userId = userIdOf(token);
  state.client = supabase.createClient(SUPAWORKER_CONFIG.url, SUPAWORKER_CONFIG.anonKey, {
    // The token for every request and every Realtime (re)join: with realtime.setAuth(token)
    // alone, supabase-js rejoins with the anon key after a reconnect, which private topics
    // refuse.
    accessToken: async () => token,
  });
  $("whoami").textContent = `signed in as ${state.userId}`;
  $("new-doc").disabled = false;
  await loadJobs();
  subscribe();
}

async function createAndProcess() {
  const insert = await state.client.from("user_documents")
    .insert({ user_id: state.userId, name: $("doc-name").value, content: $("doc-content").value })
    .select().single();
  if (insert.error) return log(`insert failed: ${insert.error.message}`);
  state.names.set(insert.data.id, insert.data.name);
  let job;
  try {
    job = await enqueue(state.client, insert.data.id);
  } catch (error) {
    return log(`enqueue failed: ${error.code} ${error.message}`); // a SupaworkerError
  }
  log(`queued job ${job.id}`);
  upsert(job);
}

$("signin-button").addEventListener("click", () => signIn().catch((e) => log(`sign-in failed: ${e.message}`)));
$("create-button").addEventListener("click", () => createAndProcess().catch((e) => log(e.message)));
