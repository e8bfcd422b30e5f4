import { assert } from "./assert.ts";

import { decodeClaims, requireCaller } from "./auth.ts";
import { HttpError } from "./http.ts";
import { request, unsignedJwt, USER_ID, USER_TOKEN } from "./testing.ts";

function unauthorized(fn: () => unknown): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof HttpError);
    assert.equal(error.status, 401);
    assert.equal(error.code, "unauthorized");
    assert.equal(error.headers["WWW-Authenticate"], "Bearer");
    return true;
  });
}

Deno.test("a user's token identifies the user and is forwarded as is", () => {
  const caller = requireCaller(request("/f"));
  assert.equal(caller.userId, USER_ID);
  assert.equal(caller.role, "authenticated");
  assert.equal(caller.authorization, `Bearer ${USER_TOKEN}`);
});

Deno.test("the service role may call without a user", () => {
  const caller = requireCaller(request("/f", { token: unsignedJwt({ role: "service_role" }) }));
  assert.equal(caller.role, "service_role");
  assert.equal(caller.userId, undefined);
});

Deno.test("no token, a non-bearer header or a non-JWT is 401", () => {
  unauthorized(() => requireCaller(request("/f", { token: null })));
  unauthorized(() =>
    requireCaller(new Request("http://x/f", { headers: { Authorization: "Basic abc" } }))
  );
  unauthorized(() => requireCaller(request("/f", { token: "not-a-jwt" })));
  unauthorized(() => requireCaller(request("/f", { token: "a.%%%.c" })));
});

Deno.test("the anon key, or a user token without sub, is 401", () => {
  unauthorized(() => requireCaller(request("/f", { token: unsignedJwt({ role: "anon" }) })));
  unauthorized(() =>
    requireCaller(request("/f", { token: unsignedJwt({ role: "authenticated" }) }))
  );
});

Deno.test("decodeClaims reads base64url payloads", () => {
  const claims = decodeClaims(unsignedJwt({ sub: "ü/?>", role: "x" }));
  assert.deepEqual(claims, { sub: "ü/?>", role: "x" });
});
