// Edge function `job-status`: the caller's job for a document (or by job id).
// See handler.ts for the contract; this file only wires the real database in.
import { callerQueueApi } from "../_supaworker/supabase.ts";
import { createJobStatusHandler } from "./handler.ts";

Deno.serve(createJobStatusHandler(callerQueueApi));
