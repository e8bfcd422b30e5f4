import { assert } from "./assert.ts";

import { HttpError, MAX_BODY_BYTES, readJsonObject, serve } from "./http.ts";

const echo = serve(["POST"], async (req) => new Response(await req.text()));

Deno.test("preflight is answered with the CORS headers, before anything else", async () => {
  const resp = await echo(new Request("http://x/f", { method: "OPTIONS" }));
  assert.equal(resp.status, 200);
  assert.equal(await resp.text(), "ok");
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  assert.match(resp.headers.get("Access-Control-Allow-Headers") ?? "", /authorization/);
  assert.match(resp.headers.get("Access-Control-Allow-Headers") ?? "", /apikey/);
});

Deno.test("other methods get 405 with Allow and CORS", async () => {
  const resp = await echo(new Request("http://x/f", { method: "GET" }));
  assert.equal(resp.status, 405);
  assert.equal(resp.headers.get("Allow"), "POST, OPTIONS");
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  const body = await resp.json();
  assert.equal(body.error, "method_not_allowed");
  assert.equal(typeof body.message, "string");
});

Deno.test("a thrown HttpError becomes JSON {error, message} with its status", async () => {
  const handler = serve(["GET"], () => {
    throw new HttpError(418, "teapot", "I am a teapot.", { "X-Extra": "1" });
  });
  const resp = await handler(new Request("http://x/f"));
  assert.equal(resp.status, 418);
  assert.equal(resp.headers.get("Content-Type"), "application/json");
  assert.equal(resp.headers.get("X-Extra"), "1");
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  assert.deepEqual(await resp.json(), { error: "teapot", message: "I am a teapot." });
});

Deno.test("an unexpected error is a 500 that does not leak its message", async () => {
  const quiet = console.error;
  console.error = () => {};
  try {
    const handler = serve(["GET"], () => {
      throw new Error("secret internals");
    });
    const resp = await handler(new Request("http://x/f"));
    assert.equal(resp.status, 500);
    const body = await resp.json();
    assert.equal(body.error, "internal_error");
    assert.doesNotMatch(body.message, /secret/);
  } finally {
    console.error = quiet;
  }
});

function post(body: BodyInit, headers: Record<string, string> = {}): Request {
  return new Request("http://x/f", { method: "POST", body, headers });
}

async function rejects(promise: Promise<unknown>, status: number, code: string): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    return true;
  });
}

Deno.test("readJsonObject accepts a JSON object", async () => {
  assert.deepEqual(await readJsonObject(post('{"a": 1}')), { a: 1 });
});

Deno.test("readJsonObject: not JSON, or not an object, is 400", async () => {
  for (const body of ["", "{", "[1]", "null", '"text"', "42"]) {
    await rejects(readJsonObject(post(body)), 400, "invalid_body");
  }
});

Deno.test("readJsonObject: a declared or actual size over the limit is 413", async () => {
  const big = JSON.stringify({ pad: "x".repeat(MAX_BODY_BYTES) });
  await rejects(readJsonObject(post(big)), 413, "payload_too_large");
  await rejects(
    readJsonObject(post("{}", { "Content-Length": "999999" })),
    413,
    "payload_too_large",
  );
  const stream = new Blob([big]).stream(); // chunked: no Content-Length
  await rejects(readJsonObject(post(stream)), 413, "payload_too_large");
});
