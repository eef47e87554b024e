// A real OAuth 2.1 / OpenID authorization server for the tests: node-oidc-provider (OpenID Certified),
// configured the way an MCP deployment needs it, on loopback. Started by tests/support/oidc.py.
//
// argv[2]: a JSON file with
//   module     path of oidc-provider's entry module (the package lives in the test cache, not here)
//   issuerPath "" or "/tenant": the issuer's path; the provider is mounted there
//   rfc8414    whether to serve /.well-known/oauth-authorization-server[/path] besides OpenID discovery
//              (false: 404 there, as an OpenID-only provider answers)
//   jwks       the signing keys (private JWKs; the test holds them too, to mint tokens of its own)
//   clients    statically registered clients (a machine client, the resource server's introspection client)
//   cookieKeys keys for signing the provider's cookies
// Prints one JSON line on stdout once listening: {"issuer": "http://127.0.0.1:<port>[/path]"}.
//
// Test-only routes (never part of a real server), under /_test/:
//   GET  /_test/requests   every request served so far, as ["GET /path", ...] (query strings dropped)
//   POST /_test/resources  {"resource", "format": "jwt"|"opaque", "alg", "ttl", "scope"}: how tokens
//                          for that resource are issued (default: JWT, RS256, 300 s, the gguf scopes)
//   POST /_test/faults     {"path", "status"}: answer `status` at that path from now on (0: stop)
import * as http from "node:http";
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { default: Provider } = await import(pathToFileURL(config.module).href);

const SCOPES = ["gguf:models", "gguf:generate", "gguf:embed", "gguf:metrics"];
const resources = new Map();
const faults = new Map();
const requests = [];

const server = http.createServer();
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const origin = `http://127.0.0.1:${server.address().port}`;
const issuer = origin + config.issuerPath;

const provider = new Provider(issuer, {
  clients: config.clients,
  jwks: config.jwks,
  cookies: { keys: config.cookieKeys },
  scopes: ["openid", "offline_access", ...SCOPES],
  // Login and consent as plain HTML forms (any user name, any password) that a test posts over HTTP.
  features: {
    devInteractions: { enabled: true },
    registration: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // A client that asked for one resource gets tokens for it without naming it again.
      useGrantedResource: async () => true,
      async getResourceServerInfo(ctx, resource) {
        const spec = resources.get(resource) ?? {};
        const info = {
          scope: spec.scope ?? SCOPES.join(" "),
          accessTokenTTL: spec.ttl ?? 300,
          accessTokenFormat: spec.format ?? "jwt",
        };
        if (info.accessTokenFormat === "jwt") info.jwt = { sign: { alg: spec.alg ?? "RS256" } };
        return info;
      },
    },
  },
  pkce: { required: () => true },
});

function remember(req) {
  requests.push(`${req.method} ${new URL(req.url, origin).pathname}`);
}

async function testRoute(req, res) {
  res.setHeader("content-type", "application/json");
  if (req.method === "GET" && req.url === "/_test/requests") {
    res.end(JSON.stringify(requests));
    return;
  }
  if (req.method === "POST" && (req.url === "/_test/resources" || req.url === "/_test/faults")) {
    let body = "";
    for await (const chunk of req) body += chunk;
    const spec = JSON.parse(body);
    if (req.url === "/_test/resources") resources.set(spec.resource, spec);
    else if (spec.status) faults.set(spec.path, spec.status);
    else faults.delete(spec.path);
    res.end("{}");
    return;
  }
  res.statusCode = 404;
  res.end("{}");
}

// The provider answers under its issuer's path; RFC 8414 puts the metadata of an issuer with a
// path at /.well-known/oauth-authorization-server/<path>, outside it.
const rfc8414 = "/.well-known/oauth-authorization-server" + config.issuerPath;
const callback = provider.callback();
server.on("request", (req, res) => {
  if (req.url.startsWith("/_test/")) return testRoute(req, res);
  remember(req);
  const path = new URL(req.url, origin).pathname;
  if (faults.has(path)) {
    res.statusCode = faults.get(path);
    res.end("injected fault");
    return;
  }
  if (path.startsWith("/.well-known/oauth-authorization-server") && !config.rfc8414) {
    res.statusCode = 404;
    res.end("not found");
    return;
  }
  if (path === rfc8414) req.url = "/.well-known/openid-configuration";
  else if (path === config.issuerPath || path.startsWith(config.issuerPath + "/")) {
    req.url = req.url.slice(config.issuerPath.length) || "/";
  } else {
    res.statusCode = 404;
    res.end("not found");
    return;
  }
  req.originalUrl = config.issuerPath + req.url;
  callback(req, res);
});

process.stdout.write(JSON.stringify({ issuer }) + "\n");
process.on("SIGTERM", () => process.exit(0));
