// job-status through a running stack with supabase-js (see _supaworker/testing_stack.ts).
import { assert } from "../_supaworker/assert.ts";
import { clientFor, createDocument, httpFailure, stackEnv } from "../_supaworker/testing_stack.ts";

const env = stackEnv();
const ignore = env === null;

async function enqueuedDocument(): Promise<{ documentId: string; jobId: string }> {
  const documentId = await createDocument(env!, env!.userToken);
  const { data, error } = await clientFor(env!, env!.userToken).functions.invoke(
    "enqueue-document",
    { body: { user_document_id: documentId } },
  );
  assert.equal(error, null);
  return { documentId, jobId: data.job.id };
}

Deno.test({ name: "job-status: the owner sees the job by document or id", ignore }, async () => {
  const { documentId, jobId } = await enqueuedDocument();
  const client = clientFor(env!, env!.userToken);
  for (const query of [`user_document_id=${documentId}`, `job_id=${jobId}`]) {
    const { data, error } = await client.functions.invoke(`job-status?${query}`, {
      method: "GET",
    });
    assert.equal(error, null, query);
    assert.equal(data.job.id, jobId, query);
    assert.equal(data.job.status, "pending", query);
    assert.ok("progress_percent" in data.job && "result" in data.job, query);
  }
});

Deno.test({ name: "job-status: another user's job does not exist for them", ignore }, async () => {
  const { jobId } = await enqueuedDocument();
  const { error } = await clientFor(env!, env!.otherUserToken).functions.invoke(
    `job-status?job_id=${jobId}`,
    { method: "GET" },
  );
  assert.equal((await httpFailure(error)).status, 404);
});

Deno.test({ name: "job-status: no parameter is 400", ignore }, async () => {
  const { error } = await clientFor(env!, env!.userToken).functions.invoke("job-status", {
    method: "GET",
  });
  assert.equal((await httpFailure(error)).status, 400);
});
