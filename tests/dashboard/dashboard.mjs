// Drives examples/dashboard in headless Chromium (Debian's, through playwright-core).
// Env: PAGE_URL, TOKEN, SCENARIO (admin | refused), SCREENSHOT; for "admin" also API_URL,
// SERVICE_KEY, WORKER_ID, QUEUE, FAILED_JOB_ID, PARKED_JOB_ID.
// Prints one JSON line with what the page showed; `error` names the step that timed out.
import { chromium } from "playwright-core";

const env = process.env;
const browser = await chromium.launch({
  executablePath: env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { steps: [], error: null, log: "" };
const page = await browser.newPage();
const cells = (selector) => page.$$eval(`${selector} td`, (tds) => tds.map((td) => td.textContent));
const rows = (tbody) => page.$$eval(`#${tbody} tr`, (trs) => trs.length);

async function step(name, action) {
  result.steps.push(name);
  await action();
}

async function admin() {
  const worker = `#workers tr[data-worker-id="${env.WORKER_ID}"]`;
  const failed = `#jobs tr[data-job-id="${env.FAILED_JOB_ID}"]`;
  const failure = `#failures tr[data-job-id="${env.FAILED_JOB_ID}"]`;
  const parked = `#jobs tr[data-job-id="${env.PARKED_JOB_ID}"]`;
  const depth = `#depth tr[data-queue="${env.QUEUE}"]`;
  await step("subscribed", () => page.waitForFunction(
    () => document.getElementById("realtime-status").textContent === "realtime: subscribed",
    null, { timeout: 20000 }));
  await step("sees the worker", async () => {
    await page.waitForSelector(`${worker}[data-status="active"]`, { timeout: 15000 });
    result.workerBefore = await cells(worker);
  });
  await step("sees the failed job and its error", async () => {
    await page.waitForSelector(`${failed}[data-status="failed"]`, { timeout: 15000 });
    await page.waitForSelector(failure, { timeout: 15000 });
    result.failureRow = await cells(failure);
    result.depthBefore = await cells(depth);
  });
  await step("pauses the worker", async () => {
    await page.click(`${worker} button[data-action="pause"]`);
    await page.waitForSelector(`${worker}[data-status="paused"]`, { timeout: 10000 });
    result.workerPaused = await cells(worker);
  });
  await step("retries the failed job", async () => {
    await page.click(`${failure} button[data-action="retry"]`);
    await page.waitForSelector(`${failed}[data-status="pending"]`, { timeout: 10000 });
    await page.waitForSelector(failure, { state: "detached", timeout: 10000 });
  });
  await step("cancels another job", async () => {
    await page.click(`${parked} button[data-action="cancel"]`);
    await page.waitForSelector(`${parked}[data-status="cancelled"]`, { timeout: 10000 });
  });
  await step("sees a resume made elsewhere", async () => {
    // service_role resumes the worker over PostgREST, not through the page: only Realtime
    // can bring this change to the page.
    const reply = await fetch(`${env.API_URL}/rest/v1/rpc/set_worker_status`, {
      method: "POST",
      headers: { apikey: env.SERVICE_KEY, Authorization: `Bearer ${env.SERVICE_KEY}`,
        "Content-Type": "application/json" },
      body: JSON.stringify({ p_worker_id: env.WORKER_ID, p_status: "active" }),
    });
    if (!reply.ok) throw new Error(`set_worker_status: ${reply.status} ${await reply.text()}`);
    await page.waitForSelector(`${worker}[data-status="active"]`, { timeout: 10000 });
  });
  await step("sees the retried job complete", async () => {
    await page.waitForSelector(`${failed}[data-status="completed"]`, { timeout: 30000 });
    await page.waitForFunction((selector) => {
      const row = document.querySelector(selector);
      const n = (status) => row && row.querySelector(`[data-cell="${status}"]`).textContent;
      return n("completed") === "1" && n("cancelled") === "1" && n("failed") === "0";
    }, depth, { timeout: 10000 });
    result.depthAfter = await cells(depth);
    result.workerAfter = await cells(worker);
  });
}

async function refused() {
  await step("refused", async () => {
    await page.waitForSelector("#refusal:not([hidden])", { timeout: 15000 });
    await page.waitForTimeout(1500); // anything that would still arrive, arrives now
    result.refusal = await page.textContent("#refusal");
    result.code = await page.getAttribute("#refusal", "data-code");
    result.dashboardHidden = await page.$eval("#dashboard", (el) => el.hidden);
    result.rows = {};
    for (const tbody of ["depth", "workers", "failures", "jobs"]) result.rows[tbody] = await rows(tbody);
    result.realtime = await page.textContent("#realtime-status");
  });
}

try {
  await page.goto(env.PAGE_URL);
  await page.fill("#token", env.TOKEN);
  await page.click("#signin-button");
  await (env.SCENARIO === "refused" ? refused() : admin());
} catch (e) {
  result.error = `${result.steps.at(-1)}: ${e.message.split("\n")[0]}`;
} finally {
  result.log = await page.textContent("#log").catch(() => "");
  if (env.SCREENSHOT) await page.screenshot({ path: env.SCREENSHOT, fullPage: true }).catch(() => {});
  await browser.close();
}
console.log(JSON.stringify(result));
