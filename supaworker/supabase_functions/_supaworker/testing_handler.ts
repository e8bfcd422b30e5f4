// A handler process for client_integration_test.ts: serve() under Deno, as
// `supaworker run --handler-command "deno run supaworker/supabase_functions/_supaworker/testing_handler.ts"`
// would start it. Not imported by any function.
import { PermanentError, serve } from "./supaworker/index.ts";

await serve(async (job, ctx) => {
  const payload = job.payload as { value?: unknown; permanent?: boolean; waitForCancel?: boolean };
  console.log(`console.log from job ${job.id}`); // must reach stderr, not stdout
  ctx.progress(25, "started");
  if (payload.permanent) throw new PermanentError("bad input");
  if (payload.waitForCancel) {
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
    throw new Error("stopped");
  }
  return { echo: payload.value ?? null };
});
