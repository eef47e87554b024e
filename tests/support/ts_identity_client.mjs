// The official TypeScript SDK v2 client (@modelcontextprotocol/client) as a machine-to-machine agent:
// it signs in with the client-credentials grant (ClientCredentialsProvider) knowing only the MCP
// server's URL and its own credentials, lists the tools and calls one. Started by
// tests/test_http_identity.py.
//
// argv[2]: the package's ESM entry (it lives in the test cache, not here)
// argv[3]: JSON {url, clientId, clientSecret, issuer, tool, arguments}
// Prints one JSON line: {"version", "tools": [names], "result": CallToolResult}.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const entry = process.argv[2];
const request = JSON.parse(process.argv[3]);
const sdk = await import(pathToFileURL(entry).href);
const manifest = JSON.parse(readFileSync(join(dirname(dirname(fileURLToPath(pathToFileURL(entry)))), "package.json")));

const authProvider = new sdk.ClientCredentialsProvider({
  clientId: request.clientId,
  clientSecret: request.clientSecret,
  expectedIssuer: request.issuer, // the credentials go to that authorization server only
});
const transport = new sdk.StreamableHTTPClientTransport(new URL(request.url), { authProvider });
const client = new sdk.Client({ name: "ts-identity-client", version: "0" });
await client.connect(transport);
try {
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: request.tool, arguments: request.arguments });
  console.log(JSON.stringify({ version: manifest.version, tools: tools.map((t) => t.name), result }));
} finally {
  await client.close();
}
