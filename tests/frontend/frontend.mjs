// Drives examples/frontend in headless Chromium (Debian's, through playwright-core).
// Env: PAGE_URL, USER_TOKEN, SCREENSHOT. Prints one JSON line with what the page showed.
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const result = { statuses: [], progress: [], rows: 0, foreignRows: 0, log: "" };
try {
  const page = await browser.newPage();
  await page.goto(process.env.PAGE_URL);
  await page.fill("#token", process.env.USER_TOKEN);
  await page.click("#signin-button");
  await page.waitForFunction(
    () => document.getElementById("realtime-status").textContent === "realtime: subscribed",
    null, { timeout: 20000 });
  await page.click("#create-button");
  const deadline = Date.now() + 45000;
  while (Date.now() < deadline) {
    const row = await page.$("#jobs tr[data-status]");
    if (row) {
      const status = await row.getAttribute("data-status");
      if (result.statuses.at(-1) !== status) result.statuses.push(status);
      const cells = await row.$$eval("td", (tds) => tds.map((td) => td.textContent));
      if (cells[2] && result.progress.at(-1) !== cells[2]) result.progress.push(cells[2]);
      if (status === "completed" || status === "failed") break;
    }
    await page.waitForTimeout(25);
  }
  result.rows = await page.$$eval("#jobs tr", (trs) => trs.length);
  result.foreignRows = await page.$$eval("#jobs tr", (trs, foreign) =>
    trs.filter((tr) => foreign.includes(tr.dataset.jobId)).length,
  (process.env.FOREIGN_JOB_IDS || "").split(","));
  result.log = await page.textContent("#log");
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
