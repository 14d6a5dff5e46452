// Parse and validate an AsyncAPI document with the official parser; print what the tests compare, as JSON.
// Usage: NODE_PATH=<node_modules> node validate.js schemas/asyncapi.yaml
const { Parser, fromFile } = require("@asyncapi/parser");

async function main() {
  const parser = new Parser();
  const { document, diagnostics } = await fromFile(parser, process.argv[2]).parse();
  const out = {
    errors: diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join(".")}: ${d.message}`),
    warnings: diagnostics.filter((d) => d.severity === 1).map((d) => `${d.path.join(".")}: ${d.message}`),
    channels: {},
    messages: {},
  };
  if (document) {
    for (const channel of document.channels()) {
      out.channels[channel.id()] = { address: channel.address(), messages: channel.messages().all().map((m) => m.id()) };
    }
    for (const message of document.components().messages()) {
      const json = message.json();
      out.messages[message.id()] = {
        headers: message.hasHeaders() ? message.headers().json() : null,
        payload: message.hasPayload() ? message.payload().json() : null,
        bindings: json.bindings || null,
      };
    }
  }
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
