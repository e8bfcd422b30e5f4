// A --handler-command worker in plain Node (no dependencies): the README's example, as is.
//   supaworker run --handler-command "node examples/handler-command/worker.mjs"
import { createInterface } from "node:readline";
import { processUserDocument } from "./lib/processing.js";

const send = (message) => process.stdout.write(JSON.stringify(message) + "\n");
createInterface({ input: process.stdin }).on("line", async (line) => {
  const message = JSON.parse(line);
  if (message.type !== "job") return;            // (a cancel: stop early if you can)
  const { job } = message;
  const progress = (percent, text) =>
    send({ type: "progress", job_id: job.id, percent, message: text });
  try {
    const result = await processUserDocument(job.user_document_id, { progress });
    send({ type: "result", job_id: job.id, result });
  } catch (err) {
    send({ type: "error", job_id: job.id, message: String(err), permanent: false });
  }
});
