// Verify Chatwoot-compatible signatures (X-Chatwoot-Signature) with node:crypto only.
// Usage: WEBHOOK_SECRET=whsec_... node chatwoot.js
// Env: WEBHOOK_SECRET (required: the whole secret string, whsec_ included), HOST (127.0.0.1), PORT (8000; 0: free).
//
// X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Chatwoot-Timestamp>.<raw body>")>. Compare in
// constant time, refuse a timestamp more than 5 minutes off, deduplicate on X-Chatwoot-Delivery. Only the
// current secret signs this header: during a rotation, switch to the new secret at once (or verify the
// Standard Webhooks headers, which carry both signatures while the old secret overlaps).
const http = require("node:http");
const { createHmac, timingSafeEqual } = require("node:crypto");

const secret = process.env.WEBHOOK_SECRET;
const TOLERANCE_S = 5 * 60;
const seen = new Set(); // in production: a unique key in your database

function problem(body, timestamp, signature) {
  if (!timestamp || !signature) return "missing X-Chatwoot-Timestamp or X-Chatwoot-Signature";
  const sent = Number(timestamp);
  if (!Number.isInteger(sent)) return "invalid X-Chatwoot-Timestamp";
  if (Math.abs(Date.now() / 1000 - sent) > TOLERANCE_S) return "timestamp outside the 5 minute tolerance";
  const hmac = createHmac("sha256", secret).update(`${timestamp}.`).update(body).digest("hex");
  const expected = Buffer.from(`sha256=${hmac}`);
  const given = Buffer.from(signature);
  return expected.length === given.length && timingSafeEqual(expected, given) ? null : "signature mismatch";
}

function answer(res, status, payload) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(payload));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks); // the raw bytes
    const why = problem(body, req.headers["x-chatwoot-timestamp"], req.headers["x-chatwoot-signature"]);
    if (why) return answer(res, 401, { error: why });
    const id = req.headers["x-chatwoot-delivery"];
    if (seen.has(id)) return answer(res, 200, { status: "duplicate" });
    seen.add(id);
    const event = JSON.parse(body);
    console.log(`processed ${event.event} ${event.id}`);
    answer(res, 200, { status: "processed" });
  });
});

server.listen(Number(process.env.PORT ?? 8000), process.env.HOST || "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
