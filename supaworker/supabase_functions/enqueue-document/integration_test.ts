// enqueue-document through a running stack with supabase-js (see _supaworker/testing_stack.ts).
import { assert } from "../_supaworker/assert.ts";
import { unsignedJwt } from "../_supaworker/testing.ts";
import { clientFor, createDocument, httpFailure, stackEnv } from "../_supaworker/testing_stack.ts";

const env = stackEnv();
const ignore = env === null;
const UNKNOWN_DOC = "00000000-0000-4000-8000-000000000000";

Deno.test({ name: "enqueue: the owner's document is queued (202)", ignore }, async () => {
  const documentId = await createDocument(env!, env!.userToken);
  const { data, error } = await clientFor(env!, env!.userToken).functions.invoke(
    "enqueue-document",
    { body: { user_document_id: documentId, priority: 3 } },
  );
  assert.equal(error, null);
  assert.equal(data.success, true);
  assert.equal(data.status, "queued");
  assert.equal(data.job.user_document_id, documentId);
  assert.equal(data.job.status, "pending");
  assert.equal(data.job.priority, 3);
});

Deno.test({ name: "enqueue: another user's document is 403", ignore }, async () => {
  const documentId = await createDocument(env!, env!.userToken);
  const { error } = await clientFor(env!, env!.otherUserToken).functions.invoke(
    "enqueue-document",
    { body: { user_document_id: documentId } },
  );
  const failure = await httpFailure(error);
  assert.equal(failure.status, 403);
  assert.equal((failure.body as { error: string }).error, "forbidden");
});

Deno.test({ name: "enqueue: an unknown document is 404", ignore }, async () => {
  const { error } = await clientFor(env!, env!.userToken).functions.invoke("enqueue-document", {
    body: { user_document_id: UNKNOWN_DOC },
  });
  assert.equal((await httpFailure(error)).status, 404);
});

Deno.test({ name: "enqueue: the anon key alone is 401 (no user)", ignore }, async () => {
  const { error } = await clientFor(env!).functions.invoke("enqueue-document", {
    body: { user_document_id: UNKNOWN_DOC },
  });
  const failure = await httpFailure(error);
  assert.equal(failure.status, 401);
  assert.equal((failure.body as { error: string }).error, "unauthorized");
});

Deno.test({ name: "enqueue: a forged token is stopped by verify_jwt (401)", ignore }, async () => {
  const forged = unsignedJwt({ sub: UNKNOWN_DOC, role: "authenticated" });
  const { error } = await clientFor(env!, forged).functions.invoke("enqueue-document", {
    body: { user_document_id: UNKNOWN_DOC },
  });
  const failure = await httpFailure(error);
  assert.equal(failure.status, 401);
  assert.deepEqual(failure.body, { msg: "Invalid JWT" });
});

Deno.test({ name: "enqueue: a malformed id is 400", ignore }, async () => {
  const { error } = await clientFor(env!, env!.userToken).functions.invoke("enqueue-document", {
    body: { user_document_id: "not-a-uuid" },
  });
  assert.equal((await httpFailure(error)).status, 400);
});

Deno.test({ name: "enqueue: CORS preflight from a browser", ignore }, async () => {
  const resp = await fetch(`${env!.url}/functions/v1/enqueue-document`, {
    method: "OPTIONS",
    headers: {
      Origin: "https://app.example",
      "Access-Control-Request-Method": "POST",
      "Access-Control-Request-Headers": "authorization, x-client-info, apikey, content-type",
    },
  });
  await resp.body?.cancel();
  assert.equal(resp.status, 200);
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  assert.match(resp.headers.get("Access-Control-Allow-Methods") ?? "", /POST/);
});
