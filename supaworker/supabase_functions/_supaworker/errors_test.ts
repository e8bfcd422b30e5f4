import { assert } from "./assert.ts";

import { fromPostgrestError } from "./errors.ts";

Deno.test("the SQL contract's SQLSTATEs map to their statuses", () => {
  const cases: Array<[string, number, number, string]> = [
    ["PT403", 403, 403, "forbidden"],
    ["PT404", 404, 404, "not_found"],
    ["PT409", 409, 409, "conflict"],
    ["PT413", 413, 413, "payload_too_large"],
    ["22023", 400, 400, "invalid_argument"],
    ["22P02", 400, 400, "invalid_argument"],
    ["42501", 403, 403, "forbidden"],
    ["PGRST301", 401, 401, "unauthorized"],
  ];
  for (const [code, httpStatus, status, name] of cases) {
    const error = fromPostgrestError({ code, message: "m" }, httpStatus);
    assert.equal(error.status, status, code);
    assert.equal(error.code, name, code);
  }
});

Deno.test("a 401 from PostgREST is a 401 whatever the code (anonymous + 42501)", () => {
  const error = fromPostgrestError({ code: "42501", message: "permission denied" }, 401);
  assert.equal(error.status, 401);
  assert.equal(error.code, "unauthorized");
});

Deno.test("the hint is appended: it says what to fix", () => {
  const error = fromPostgrestError({ code: "22023", message: "bad priority", hint: "use 0-100" });
  assert.equal(error.message, "bad priority (use 0-100)");
});

Deno.test("other PTxyz codes keep their status", () => {
  assert.equal(fromPostgrestError({ code: "PT429", message: "slow down" }).status, 429);
});

Deno.test("unknown failures are a generic 502", () => {
  const quiet = console.error;
  console.error = () => {};
  try {
    const error = fromPostgrestError({ code: "XX000", message: "internal detail" }, 500);
    assert.equal(error.status, 502);
    assert.equal(error.code, "database_error");
    assert.doesNotMatch(error.message, /internal detail/);
  } finally {
    console.error = quiet;
  }
});
