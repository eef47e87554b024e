// The official TypeScript MCP SDK's client over stdio: `calls` chat calls with a progress callback.
// argv: SDK package root, then one JSON request {command, args, env, calls, arguments};
// prints {version, results: [{text, pieces}], errors} (errors: what the client passed to onerror).
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [sdkRoot, requestJson] = process.argv.slice(2);
const request = JSON.parse(requestJson);
const load = (path) => import(pathToFileURL(`${sdkRoot}/dist/esm/${path}`).href);
const { Client } = await load("client/index.js");
const { StdioClientTransport } = await load("client/stdio.js");
const version = JSON.parse(readFileSync(`${sdkRoot}/package.json`, "utf8")).version;

const transport = new StdioClientTransport({ command: request.command, args: request.args, env: request.env });
const client = new Client({ name: "gguf-mcp-tests", version: "0" });
const errors = [];
client.onerror = (error) => errors.push(String(error?.message ?? error));
await client.connect(transport);
const results = [];
for (let call = 0; call < request.calls; call++) {
  const pieces = [];
  const result = await client.callTool({ name: "chat", arguments: request.arguments }, undefined, {
    onprogress: (progress) => pieces.push(progress.message ?? ""),
  });
  results.push({ text: result.structuredContent.text, pieces });
}
await client.close();
process.stdout.write(JSON.stringify({ version, results, errors }));
