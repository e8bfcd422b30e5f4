// The operator dashboard: queue depth, workers, failures and jobs of every user. Workers are
// live (the private Broadcast topic `workers`). No topic carries every user's jobs, and
// processing_queue is not in the Realtime publication (its DELETEs would reach every
// subscriber with other users' job ids: migration 0026), so the job lists are read every 2 s,
// and the owners of the running and waiting jobs shown (up to 20) are followed live on their
// `jobs:<user_id>` topics, which a queue admin may join: their status and progress move at
// once, and the database sends those messages anyway, for the owners.
//
// The page decides nothing about who is an admin. It signs in with a pasted access token and
// shows what the database answers: the admin_* functions refuse anyone whose JWT does not
// carry app_metadata.queue_admin (PT403), and the queue-admin RLS policies decide which rows
// of processing_queue and vps_workers a table read returns, and the RLS policy on
// realtime.messages who may join `workers`.
// supabase-js is the npm package's UMD build; config.js holds the project URL and anon key;
// the admin_* calls go through the supaworker client's browser build (/vendor/supaworker.js,
// generated from clients/js), whose errors carry the database's code (PT403 here).
/* global supabase, SUPAWORKER_CONFIG */
import {
  adminCancelJob,
  adminQueueStats,
  adminRecentFailures,
  adminRetryJob,
  adminSetWorkerStatus,
} from "/vendor/supaworker.js";

const STATUSES = ["pending", "assigned", "processing", "completed", "failed", "cancelled"];
const RUNNING = new Set(["pending", "assigned", "processing"]);
const WORKER_ORDER = { active: 0, paused: 1, offline: 2 };
const JOB_COLUMNS = "id, user_id, queue, status, priority, attempt, retry_count, max_attempts, " +
  "error_message, assigned_to, progress_percent, progress_message, cancel_requested, run_at, " +
  "created_at, updated_at, completed_at";
const ACTIVE_JOBS = 100;    // running or waiting jobs loaded and kept
const FINISHED_JOBS = 50;   // plus the most recently finished ones
const FAILURES = 20;
const REFRESH_DELAY_MS = 300;     // stats are re-read once a burst of changes is over ...
const REFRESH_MAX_WAIT_MS = 2000; // ... or at least this often while changes keep coming
const JOBS_POLL_MS = 2000;        // the job lists are read again this often
const LIVE_OWNERS = 20;           // owners of shown running or waiting jobs followed live

const state = {
  session: 0, client: null, workersChannel: null, ticker: null, jobsTimer: null, live: false,
  ownerChannels: new Map(), // user_id -> the channel of jobs:<user_id>
  workers: new Map(), jobs: new Map(), failures: [],
  skewMs: 0, horizonSeconds: 30,
  refreshTimer: null, refreshFirst: 0, refreshing: false, refreshAgain: false,
};
const $ = (id) => document.getElementById(id);

function log(message) {
  const el = $("log");
  el.textContent += `${new Date().toISOString().slice(11, 23)} ${message}\n`;
  el.scrollTop = el.scrollHeight;
}

// Postgres timestamps ("2026-11-28T12:00:00.123456+00:00") as microseconds since the epoch,
// so that two changes within one millisecond still order correctly.
function micros(ts) {
  if (!ts) return 0;
  const fraction = /\.(\d+)/.exec(ts);
  const seconds = Date.parse(ts.replace(/\.\d+/, "")) / 1000;
  return seconds * 1e6 + Number(`${fraction ? fraction[1] : ""}000000`.slice(0, 6));
}

function secondsSince(ts) {
  // The browser's clock corrected by the database's (server_time from admin_queue_stats).
  return (Date.now() + state.skewMs - micros(ts) / 1000) / 1000;
}

function duration(seconds) {
  if (seconds < 60) return `${Math.max(0, seconds).toFixed(1)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

const shortId = (id) => id.slice(0, 8);

// ---- rendering: one <tr> per item, updated in place so buttons survive the updates -------

function makeRow(keys) {
  const tr = document.createElement("tr");
  for (const key of keys) {
    const td = document.createElement("td");
    td.dataset.cell = key;
    tr.appendChild(td);
  }
  return tr;
}

function syncRows(tbody, items, keyOf, keys, update) {
  const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  items.forEach((item, index) => {
    const key = keyOf(item);
    let tr = existing.get(key);
    existing.delete(key);
    if (!tr) {
      tr = makeRow(keys);
      tr.dataset.key = key;
    }
    update(tr, item, (name) => tr.querySelector(`[data-cell="${name}"]`));
    if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
  });
  existing.forEach((tr) => tr.remove());
}

function setText(td, text, className = "") {
  if (td.textContent !== text) td.textContent = text;
  if (td.className !== className) td.className = className;
}

function setButton(td, action, target) {
  let button = td.querySelector("button");
  if (!action) {
    if (button) button.remove();
    return;
  }
  if (!button) button = td.appendChild(document.createElement("button"));
  button.dataset.action = action;
  button.dataset.target = target;
  button.textContent = action[0].toUpperCase() + action.slice(1);
}

function renderStats(stats) {
  const rows = [["*", stats.by_status],
    ...Object.entries(stats.by_queue).sort(([a], [b]) => a.localeCompare(b))];
  syncRows($("depth"), rows, ([queue]) => queue, ["queue", ...STATUSES], (tr, [queue, counts], td) => {
    tr.dataset.queue = queue;
    setText(td("queue"), queue === "*" ? "all queues" : queue, queue === "*" ? "status" : "");
    for (const status of STATUSES) {
      const n = counts[status] || 0;
      setText(td(status), String(n), n && status !== "completed" ? `num ${status}` : "num");
    }
  });
  const workers = stats.workers;
  const parts = [
    ["oldest waiting", stats.oldest_pending_seconds == null ? "none"
      : duration(Number(stats.oldest_pending_seconds))],
    ["completed", `${stats.completed_last_minute} last minute, ${stats.completed_last_hour} last hour`],
    ["failed", `${stats.failed_last_minute} last minute, ${stats.failed_last_hour} last hour`],
    ["workers", `${workers.active} active, ${workers.paused} paused, ${workers.offline} offline`],
  ];
  $("summary").replaceChildren(...parts.map(([label, text]) => {
    const span = document.createElement("span");
    span.textContent = `${label}: ${text}`;
    return span;
  }));
}

function renderWorkers() {
  const workers = [...state.workers.values()].sort((a, b) =>
    (WORKER_ORDER[a.status] - WORKER_ORDER[b.status]) || a.worker_id.localeCompare(b.worker_id));
  const keys = ["worker", "status", "heartbeat", "load", "queues", "host", "action"];
  syncRows($("workers"), workers, (w) => w.worker_id, keys, (tr, w, td) => {
    tr.dataset.workerId = w.worker_id;
    tr.dataset.status = w.status;
    setText(td("worker"), w.worker_id, "id");
    setText(td("status"), w.status, `status ${w.status}`);
    const age = secondsSince(w.last_heartbeat);
    setText(td("heartbeat"), `${duration(age)} ago`,
      w.status !== "offline" && age > state.horizonSeconds ? "stale" : "");
    const load = td("load");
    const meter = load.querySelector("meter") || load.appendChild(document.createElement("meter"));
    const label = load.querySelector("span") || load.appendChild(document.createElement("span"));
    meter.max = w.max_concurrent_jobs;
    meter.value = w.current_jobs;
    label.textContent = ` ${w.current_jobs}/${w.max_concurrent_jobs}`;
    setText(td("queues"), w.queues ? w.queues.join(", ") : "all");
    setText(td("host"), [w.host, w.version && `v${w.version}`].filter(Boolean).join(" "), "muted");
    setButton(td("action"), w.status === "paused" ? "resume" : "pause", w.worker_id);
  });
}

function jobAction(job) {
  if (job.status === "failed" || job.status === "cancelled") return "retry";
  if (RUNNING.has(job.status) && !job.cancel_requested) return "cancel";
  return null;
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) =>
    (RUNNING.has(b.status) - RUNNING.has(a.status)) || (micros(b.updated_at) - micros(a.updated_at)));
  const keys = ["job", "queue", "status", "worker", "priority", "tries", "progress", "error", "action"];
  syncRows($("jobs"), jobs, (j) => j.id, keys, (tr, job, td) => {
    tr.dataset.jobId = job.id;
    tr.dataset.status = job.status;
    setText(td("job"), shortId(job.id), "id");
    td("job").title = `job ${job.id}\nuser ${job.user_id}`;
    setText(td("queue"), job.queue);
    setText(td("status"), job.status + (job.cancel_requested && RUNNING.has(job.status)
      ? " (cancel requested)" : ""), `status ${job.status}`);
    setText(td("worker"), job.assigned_to || "", "id");
    setText(td("priority"), String(job.priority), "num");
    setText(td("tries"), `${job.retry_count}/${job.max_attempts}`, "num");
    setText(td("progress"), job.progress_percent == null ? ""
      : `${Math.round(job.progress_percent)}%${job.progress_message ? ` ${job.progress_message}` : ""}`);
    setText(td("error"), job.error_message || "", "error");
    setButton(td("action"), jobAction(job), job.id);
  });
}

function renderFailures() {
  const keys = ["job", "queue", "failed", "worker", "attempts", "error", "action"];
  syncRows($("failures"), state.failures, (j) => j.id, keys, (tr, job, td) => {
    tr.dataset.jobId = job.id;
    setText(td("job"), shortId(job.id), "id");
    td("job").title = `job ${job.id}\nuser ${job.user_id}`;
    setText(td("queue"), job.queue);
    setText(td("failed"), job.completed_at ? `${duration(secondsSince(job.completed_at))} ago` : "");
    setText(td("worker"), job.assigned_to || "", "id");
    setText(td("attempts"), `${job.retry_count}/${job.max_attempts}`, "num");
    setText(td("error"), job.error_message || "", "error");
    setButton(td("action"), "retry", job.id);
  });
}

// ---- state ------------------------------------------------------------------------------

function isNewer(known, row) {
  return !known || micros(row.updated_at) >= micros(known.updated_at);
}

// Both return the row known before, or undefined; an older version arriving late (a reply
// or a Realtime change overtaken by a newer one) is ignored.
function putJob(job) {
  const known = state.jobs.get(job.id);
  if (!isNewer(known, job)) return known;
  state.jobs.set(job.id, { ...known, ...job });
  // Keep the latest ACTIVE_JOBS running or waiting jobs and the latest FINISHED_JOBS others.
  const newestFirst = [...state.jobs.values()]
    .sort((a, b) => micros(b.updated_at) - micros(a.updated_at));
  for (const [keep, running] of [[ACTIVE_JOBS, true], [FINISHED_JOBS, false]]) {
    newestFirst.filter((j) => RUNNING.has(j.status) === running).slice(keep)
      .forEach((j) => state.jobs.delete(j.id));
  }
  return known;
}

function putWorker(worker) {
  const known = state.workers.get(worker.worker_id);
  if (isNewer(known, worker)) state.workers.set(worker.worker_id, { ...known, ...worker });
  return known;
}

function applyStats(stats) {
  state.skewMs = micros(stats.server_time) / 1000 - Date.now();
  state.horizonSeconds = Number(stats.dead_worker_horizon_seconds) || state.horizonSeconds;
  renderStats(stats);
}

// An error from the database while signed in. PT403 means the token is not (or no longer) a
// queue admin's: show the refusal instead of stale data.
function reportError(what, error) {
  log(`${what}: ${error.code || ""} ${error.message}`);
  if (error.code === "PT403") refuse(error);
}

async function loadSummary() {
  const session = state.session;
  let stats;
  let failures;
  try {
    [stats, failures] = await Promise.all([
      adminQueueStats(state.client),
      adminRecentFailures(state.client, FAILURES),
    ]);
  } catch (error) {
    if (session === state.session) reportError("stats", error);
    return;
  }
  if (session !== state.session) return;
  applyStats(stats);
  state.failures = failures;
  renderFailures();
}

async function loadAll() {
  const session = state.session;
  const [workers] = await Promise.all([
    state.client.from("vps_workers").select("*").order("worker_id"),
    loadJobs(),
    loadSummary(),
  ]);
  if (session !== state.session) return;
  if (workers.error) return reportError("workers", workers.error);
  workers.data.forEach(putWorker);
  renderWorkers();
}

// The running or waiting jobs and the latest ones, merged by updated_at; a status change
// since the last read is logged and re-reads the stats.
async function loadJobs() {
  const session = state.session;
  const [active, recent] = await Promise.all([
    state.client.from("processing_queue").select(JOB_COLUMNS)
      .in("status", [...RUNNING]).order("updated_at", { ascending: false }).limit(ACTIVE_JOBS),
    state.client.from("processing_queue").select(JOB_COLUMNS)
      .order("updated_at", { ascending: false }).limit(FINISHED_JOBS),
  ]);
  if (session !== state.session) return;
  for (const reply of [active, recent]) {
    if (reply.error) return reportError("jobs", reply.error);
  }
  let moved = false;
  for (const job of [...active.data, ...recent.data]) {
    const known = putJob(job);
    if (known && known.status !== job.status && isNewer(known, job)) {
      log(`jobs: ${job.id} ${known.status} -> ${job.status}`);
      moved = true;
    }
  }
  renderJobs();
  followOwners();
  if (moved) scheduleRefresh();
}

async function pollJobs() {
  const session = state.session;
  try {
    await loadJobs();
  } catch (e) {
    log(`jobs: read failed: ${e.message}`);
  }
  if (session === state.session) state.jobsTimer = setTimeout(pollJobs, JOBS_POLL_MS);
}

// Stats and failures are re-read (not patched) after changes, debounced.
function scheduleRefresh() {
  const now = Date.now();
  if (state.refreshTimer === null) state.refreshFirst = now;
  clearTimeout(state.refreshTimer);
  const wait = Math.max(0, Math.min(REFRESH_DELAY_MS, state.refreshFirst + REFRESH_MAX_WAIT_MS - now));
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refreshSummary();
  }, wait);
}

async function refreshSummary() {
  if (state.refreshing) {
    state.refreshAgain = true;
    return;
  }
  state.refreshing = true;
  try {
    do {
      state.refreshAgain = false;
      await loadSummary();
    } while (state.refreshAgain);
  } catch (e) {
    log(`refresh failed: ${e.message}`);
  } finally {
    state.refreshing = false;
  }
}

// ---- Realtime ---------------------------------------------------------------------------

// The owners of the newest running or waiting jobs shown, each on its own topic: joined when
// one appears, left when none of its jobs is shown running or waiting any more.
function followOwners() {
  const wanted = new Set();
  const newestFirst = [...state.jobs.values()]
    .sort((a, b) => micros(b.updated_at) - micros(a.updated_at));
  for (const job of newestFirst) {
    if (wanted.size >= LIVE_OWNERS) break;
    if (RUNNING.has(job.status) && job.user_id) wanted.add(job.user_id);
  }
  for (const [owner, channel] of state.ownerChannels) {
    if (wanted.has(owner)) continue;
    state.client.removeChannel(channel).catch(() => {});
    state.ownerChannels.delete(owner);
  }
  for (const owner of wanted) {
    if (state.ownerChannels.has(owner)) continue;
    const channel = state.client
      .channel(`jobs:${owner}`, { config: { private: true } })
      .on("broadcast", { event: "job" }, ({ payload }) => onOwnerMessage(payload))
      .subscribe((status) => log(`owner channel jobs:${owner} ${status}`));
    state.ownerChannels.set(owner, channel);
  }
}

function leaveOwners() {
  for (const channel of state.ownerChannels.values()) {
    state.client.removeChannel(channel).catch(() => {});
  }
  state.ownerChannels.clear();
}

// A jobs:<user_id> message: the changes one statement made to that user's jobs (no payload
// or result; a DELETE is {id}). A job not shown yet waits for the next read, which brings
// the whole row.
function onOwnerMessage(message) {
  if (!message || !Array.isArray(message.records)) return;
  let moved = false;
  for (const record of message.records) {
    if (message.type === "DELETE") {
      moved = state.jobs.delete(record.id) || moved;
      continue;
    }
    const known = state.jobs.get(record.id);
    // Only a strictly newer version: a read may already have brought this one.
    if (!known || micros(record.updated_at) <= micros(known.updated_at)) continue;
    putJob(record);
    if (known.status !== record.status) {
      log(`realtime jobs:${record.user_id} ${message.type} ${record.id} -> ${record.status}`);
      moved = true;
    }
  }
  renderJobs();
  if (moved) {
    followOwners();
    scheduleRefresh();
  }
}

function onWorkerChange(change) {
  if (change.errors) log(`realtime vps_workers: ${change.errors}`);
  if (change.eventType === "DELETE") return; // workers are never deleted by the queue
  if (!isNewer(state.workers.get(change.new.worker_id), change.new)) return;
  const known = putWorker(change.new);
  renderWorkers();
  if (!known || known.status !== change.new.status) {
    log(`realtime vps_workers ${change.eventType} ${change.new.worker_id} -> ${change.new.status}`);
    scheduleRefresh();
  }
}

function subscribe() {
  const session = state.session;
  // Workers: the private Broadcast topic `workers` (queue admins only, by the RLS policy on
  // realtime.messages), sent when a worker registers or its status changes. vps_workers is
  // not published any more: every heartbeat would be a Realtime message (issue 20).
  state.workersChannel = state.client
    .channel("workers", { config: { private: true } })
    .on("broadcast", { event: "worker" }, ({ payload }) =>
      onWorkerChange({ eventType: payload.type, new: payload.record }),
    )
    .subscribe((status, error) => {
      log(`workers channel ${status}${error ? `: ${error.message}` : ""}`);
      if (session !== state.session) return;
      state.live = status === "SUBSCRIBED";
      $("realtime-status").textContent = state.live
        ? "realtime: subscribed"
        : `realtime: ${status.toLowerCase()}`;
      if (state.live) {
        loadAll().catch((e) => log(`reload failed: ${e.message}`)); // catch up on missed changes
      }
    });
}

// ---- sign-in, refusal, actions ----------------------------------------------------------

function emailOf(token) {
  // Display only: the database verifies the token and decides what it may do.
  try {
    const body = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(body));
    return claims.email || claims.sub || "?";
  } catch {
    return "?";
  }
}

// Ends what a signed-in session runs: its channels, the job reads and the ticker. Resolves
// once the `workers` channel is left.
function endSession() {
  state.session += 1; // drop whatever is still in flight for this token
  state.live = false;
  const left = state.client && state.workersChannel
    ? state.client.removeChannel(state.workersChannel)
    : Promise.resolve();
  state.workersChannel = null;
  if (state.client) leaveOwners();
  clearTimeout(state.jobsTimer);
  clearInterval(state.ticker);
  return left;
}

async function reset() {
  const left = endSession();
  clearTimeout(state.refreshTimer);
  state.refreshTimer = null;
  await left;
  state.workers.clear();
  state.jobs.clear();
  state.failures = [];
  for (const id of ["depth", "workers", "failures", "jobs", "summary"]) $(id).replaceChildren();
  $("dashboard").hidden = true;
  $("refusal").hidden = true;
  $("realtime-status").textContent = "realtime: not connected";
}

function refuse(error) {
  endSession().catch(() => {});
  for (const id of ["depth", "workers", "failures", "jobs", "summary"]) $(id).replaceChildren();
  $("dashboard").hidden = true;
  $("refusal").hidden = false;
  $("refusal").dataset.code = error.code || "";
  $("refusal-title").textContent = error.code === "PT403"
    ? "Not a queue admin: the database refused this account."
    : "Sign-in failed: the database refused the token.";
  $("refusal-detail").textContent =
    [`${error.code || "error"}: ${error.message}`, error.hint].filter(Boolean).join("\n");
  $("whoami").textContent = "";
  $("realtime-status").textContent = "realtime: not connected";
  log(`refused: ${error.code} ${error.message}`);
}

async function signIn() {
  const token = $("token").value.trim();
  if (!token) return;
  await reset();
  const session = state.session;
  state.client = supabase.createClient(SUPAWORKER_CONFIG.url, SUPAWORKER_CONFIG.anonKey, {
    // The token for every request and every Realtime (re)join: with realtime.setAuth(token)
    // alone, supabase-js rejoins with the anon key after a reconnect, which private topics
    // refuse.
    accessToken: async () => token,
  });
  $("whoami").textContent = "checking...";
  // The first call decides: admin_queue_stats answers PT403 unless the token is a queue admin's.
  let data;
  try {
    data = await adminQueueStats(state.client);
  } catch (error) {
    if (session === state.session) refuse(error);
    return;
  }
  if (session !== state.session) return;
  $("whoami").textContent = `signed in as ${emailOf(token)} (queue admin)`;
  $("dashboard").hidden = false;
  applyStats(data);
  await loadAll();
  subscribe();
  state.jobsTimer = setTimeout(pollJobs, JOBS_POLL_MS);
  state.ticker = setInterval(() => {
    renderWorkers(); // heartbeat ages
    renderFailures();
  }, 1000);
}

// Each action: the call, and whether its reply is a worker (else a job).
const ACTIONS = {
  pause: [(client, id) => adminSetWorkerStatus(client, id, "paused"), true],
  resume: [(client, id) => adminSetWorkerStatus(client, id, "active"), true],
  cancel: [adminCancelJob, false],
  retry: [adminRetryJob, false],
};

async function act(button) {
  const { action, target } = button.dataset;
  const [call, isWorker] = ACTIONS[action];
  button.disabled = true;
  try {
    let data;
    try {
      data = await call(state.client, target);
    } catch (error) {
      log(`${action} ${target} refused: ${error.code} ${error.message}${error.hint ? ` (${error.hint})` : ""}`);
      if (error.code === "PT403") refuse(error);
      return;
    }
    log(`${action} ${target}: now ${data.status}`);
    // A job's new state is the reply, shown at once (the job lists are read every 2 s); a
    // worker's arrives on the `workers` topic a moment later, so its reply is shown only
    // while that topic is not joined.
    if (!isWorker) putJob(data);
    else if (!state.live) putWorker(data);
    renderWorkers();
    renderJobs();
    scheduleRefresh();
  } finally {
    button.disabled = false;
  }
}

$("signin-button").addEventListener("click", () => signIn().catch((e) => log(`sign-in failed: ${e.message}`)));
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button && !button.disabled) act(button).catch((e) => log(`${button.dataset.action} failed: ${e.message}`));
});
