// Verify Akece webhooks with the Standard Webhooks library, and deduplicate on webhook-id.
// Usage: npm install && WEBHOOK_SECRET=whsec_... node standard-webhooks.js
// Env: WEBHOOK_SECRET (required, as shown once by the API), HOST (127.0.0.1), PORT (8000; 0 picks a free one).
//
// Verify the raw body before parsing it: verify() checks the v1 HMAC of "<id>.<timestamp>.<body>" against
// every signature in webhook-signature (two during a secret rotation) and refuses a timestamp more than
// 5 minutes off. A refused request gets 401 (the sender retries, then dead-letters it). webhook-id is the
// same on every retry and replay: remember it (in your database, for a few days) and do the work once.
const http = require("node:http");
const { Webhook } = require("standardwebhooks");

const webhook = new Webhook(process.env.WEBHOOK_SECRET);
const seen = new Set(); // in production: a unique key in your database

function answer(res, status, payload) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(payload));
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks); // the raw bytes, not a re-serialised object
    let event;
    try {
      event = webhook.verify(body, req.headers);
    } catch (err) {
      return answer(res, 401, { error: err.message });
    }
    const id = req.headers["webhook-id"];
    if (seen.has(id)) {
      return answer(res, 200, { status: "duplicate" });
    }
    seen.add(id);
    console.log(`processed ${event.event} ${event.id}`);
    answer(res, 200, { status: "processed" });
  });
});

server.listen(Number(process.env.PORT ?? 8000), process.env.HOST || "127.0.0.1", () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
