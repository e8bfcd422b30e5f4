// Edge function `enqueue-document`: queue one of the caller's documents for processing.
// See handler.ts for the contract; this file only wires the real database in.
import { callerQueueApi } from "../_supaworker/supabase.ts";
import { createEnqueueHandler } from "./handler.ts";

Deno.serve(createEnqueueHandler(callerQueueApi));
