// Starts Spotlight's sidecar (Sentry's local event sink) for agent-trace's integration tests.
//
//   node server.mjs [--port N]     (N = 0, the default, lets the kernel pick a free port)
//
// Prints one line `listening 127.0.0.1:PORT` on stdout once it accepts connections.
//
// Why not the `spotlight` CLI: it initialises Sentry's own SDK towards sentry.io with no switch
// to turn that off, and it listens on every interface. The library entry point imported here
// starts the same HTTP server without any telemetry (nothing calls Sentry's `init`), but it
// offers no host option either, so the listen call is pinned to 127.0.0.1 below.
import net from "node:net";

const HOST = "127.0.0.1";

function parsePort(argv) {
  const index = argv.indexOf("--port");
  const value = index === -1 ? "0" : argv[index + 1];
  const port = Number(value);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`server.mjs: --port must be an integer in 0..65535, got ${JSON.stringify(value)}`);
    process.exit(2);
  }
  return port;
}

// Spotlight's server (through @hono/node-server) calls `listen(port, undefined, callback)`,
// which binds every interface. Every listen call without an explicit host in this process is
// given 127.0.0.1 instead; this process runs nothing but Spotlight.
const originalListen = net.Server.prototype.listen;
net.Server.prototype.listen = function listenOnLoopback(...args) {
  const [first, second] = args;
  if (typeof first === "object" && first !== null && !("path" in first) && !first.host) {
    args[0] = { ...first, host: HOST };
  } else if (
    (typeof first === "number" || typeof first === "string") &&
    (second === undefined || typeof second === "function")
  ) {
    if (second === undefined) {
      args[1] = HOST;
    } else {
      args.splice(1, 0, HOST);
    }
  }
  return originalListen.apply(this, args);
};

const port = parsePort(process.argv.slice(2));

// Imported after the patch: module evaluation must not bind anything before it is in place.
const { startServer } = await import("@spotlightjs/spotlight");

let server;
try {
  server = await startServer({ port });
} catch (error) {
  console.error(`server.mjs: Spotlight did not start: ${error?.message ?? error}`);
  process.exit(1);
}

const address = server.address();
if (address === null || typeof address === "string" || address.address !== HOST) {
  console.error(`server.mjs: refusing to run on ${JSON.stringify(address)}, expected ${HOST}`);
  process.exit(1);
}

// The test harness stops this process by PID; open server-sent-event streams would otherwise
// keep a graceful close waiting forever.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => process.exit(0));
}

process.stdout.write(`listening ${address.address}:${address.port}\n`);
