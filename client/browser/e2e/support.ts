// What the browser tests drive: the real local stack (moto + airwave-stack),
// the demo served by Vite, a real headless Chromium, and a publisher outside
// the browser (this package's client on Node's WebSocket).
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { createServer, type ViteDevServer } from "vite";
import { AirwaveClient } from "../src/index.js";

export const packageRoot = fileURLToPath(new URL("..", import.meta.url));
export const repoRoot = fileURLToPath(new URL("../../..", import.meta.url));

export interface Stack {
  url: string;
  /** The HTTP API (publish and poll), on the gateway's port. */
  http: string;
  management: string;
  /** The test-only endpoint of airwave-stack; absent from builds without it. */
  control?: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * Starts `infra/with-moto.sh airwave-stack` and waits for its ready line.
 * `env`: more of its options (see tests/src/bin/airwave-stack.rs), such as
 * `AIRWAVE_STACK_SECRET`.
 */
export async function startStack(port = 0, env: Record<string, string> = {}): Promise<Stack> {
  const binary = process.env.AIRWAVE_STACK_BIN ?? join(repoRoot, "target/debug/airwave-stack");
  const child: ChildProcessWithoutNullStreams = spawn(join(repoRoot, "infra/with-moto.sh"), [binary], {
    cwd: repoRoot,
    env: { ...process.env, ...env, AIRWAVE_STACK_PORT: String(port), RUST_LOG: process.env.RUST_LOG ?? "warn" },
    stdio: ["pipe", "pipe", "pipe"],
    // Its own process group, so a stack that does not stop in time is killed
    // with the moto server and the wrapper script, not left holding sockets.
    detached: true,
  });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const line = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`the stack did not start in 90 s: ${stderr}`)), 90_000);
    lines.once("line", (text) => {
      clearTimeout(timer);
      resolve(text);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the stack exited (${code}) before it was ready: ${stderr}`));
    });
  });
  const ready = JSON.parse(line) as { url: string; http: string; management: string; control?: string };
  return {
    ...ready,
    port: Number(new URL(ready.url).port),
    async stop() {
      // Closing stdin is the stack's signal to shut down cleanly.
      child.stdin.end();
      const timer = setTimeout(() => {
        console.warn(`the stack did not stop in 20 s; killing it: ${stderr}`);
        if (child.pid !== undefined) process.kill(-child.pid, "SIGKILL");
      }, 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** A free loopback port (bound and released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createNetServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export interface GatewayConnections {
  /** Sockets the gateway holds open. */
  open: number;
  /** Connection records in the table. */
  ids: string[];
}

export async function gatewayConnections(stack: Stack): Promise<GatewayConnections> {
  if (!stack.control) {
    throw new Error("this airwave-stack build has no control endpoint; rebuild it from tests/src/bin/airwave-stack.rs");
  }
  const response = await fetch(`${stack.control}/connections`);
  return (await response.json()) as GatewayConnections;
}

/** Ids whose socket the gateway still holds, per the Management API's GET. */
export async function liveIds(stack: Stack, ids: string[]): Promise<string[]> {
  const live: string[] = [];
  for (const id of ids) {
    const response = await fetch(`${stack.management}/@connections/${encodeURIComponent(id)}`);
    if (response.status === 200) live.push(id);
  }
  return live;
}

/** Closes a connection from the server side, as a backend would. */
export async function deleteConnection(stack: Stack, id: string): Promise<number> {
  const response = await fetch(`${stack.management}/@connections/${encodeURIComponent(id)}`, { method: "DELETE" });
  return response.status;
}

/**
 * A publisher outside the browser; `token` for a stack with authentication on.
 * Node 20 has WebSocket behind --experimental-websocket (set by the npm script).
 */
export async function publisher(url: string, token?: () => string): Promise<AirwaveClient> {
  if (typeof globalThis.WebSocket !== "function") {
    throw new Error("no WebSocket in this Node; run with --experimental-websocket");
  }
  const client = new AirwaveClient({ url, lifecycle: null, ...(token ? { getToken: token } : {}) });
  await client.connect();
  return client;
}

export async function startDemoServer(): Promise<{ server: ViteDevServer; url: string }> {
  const server = await createServer({
    configFile: join(packageRoot, "demo/vite.config.ts"),
    server: { port: 0, host: "127.0.0.1", strictPort: false, hmr: false },
    logLevel: "warn",
  });
  await server.listen();
  const address = server.httpServer?.address();
  if (!address || typeof address === "string") throw new Error("vite did not listen");
  return { server, url: `http://127.0.0.1:${address.port}/` };
}

/** An HS256 JWT, signed as an application's token endpoint would. */
export function signToken(secret: string, claims: Record<string, unknown>): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const unsigned = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  return `${unsigned}.${createHmac("sha256", secret).update(unsigned).digest("base64url")}`;
}

/** Serves `e2e/harness.html`: a bare page that makes one client from the settings a test passes. */
export async function startHarnessServer(): Promise<{ server: ViteDevServer; url: string }> {
  const server = await createServer({
    configFile: false,
    root: join(packageRoot, "e2e"),
    server: { port: 0, host: "127.0.0.1", strictPort: false, hmr: false },
    optimizeDeps: { noDiscovery: true },
    logLevel: "warn",
    clearScreen: false,
  });
  await server.listen();
  const address = server.httpServer?.address();
  if (!address || typeof address === "string") throw new Error("vite did not listen");
  return { server, url: `http://127.0.0.1:${address.port}/harness.html` };
}

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

/** Debian's Chromium (override with CHROMIUM_PATH), headless, with a fresh profile. */
export async function launchBrowser(): Promise<Browser> {
  const profile = mkdtempSync(join(tmpdir(), "airwave-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    // Root in a container needs --no-sandbox; the rest keeps Chromium from
    // reaching out to the network, which is closed here.
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Polls `check` until it returns a value other than undefined/false. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** The dashboard, opened on `stack` with extra query settings. */
export async function openDashboard(
  browser: Browser,
  demoUrl: string,
  stack: Stack,
  settings: Record<string, string> = {},
): Promise<Page> {
  const page = await browser.context.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  const query = new URLSearchParams({ url: stack.url, ...settings });
  await page.goto(`${demoUrl}?${query}`);
  return page;
}

export async function pageState(page: Page): Promise<string> {
  return page.evaluate(() => window.airwaveDemo.client?.state ?? "none");
}

/** How many sockets the page's client has opened so far (its own counter). */
export async function socketsOpened(page: Page): Promise<number> {
  return page.evaluate(() => window.airwaveDemo.client?.stats().socketsOpened ?? 0);
}

/** Resolves once the page's client has a confirmed subscription to `channel` on its current socket. */
export async function subscribedOnPage(page: Page, channel: string): Promise<void> {
  await eventually(`the page subscribed to ${channel}`, () =>
    page.evaluate((name) => window.airwaveDemo.client?.stats().channels[name]?.subscribed === true, channel),
  );
}

export interface Received {
  id: string;
  channel: string | null;
  data: unknown;
  offset: number | null;
}

export async function receivedOnPage(page: Page, channel: string): Promise<Received[]> {
  return page.evaluate(
    (name) =>
      window.airwaveDemo.received
        .filter((m) => m.channel === name)
        .map((m) => ({ id: m.id, channel: m.channel, data: m.data, offset: m.position?.offset ?? null })),
    channel,
  );
}

/**
 * A new page on the harness, whose client's `getToken` calls `token` in this
 * process (a token endpoint, as far as the page can tell).
 */
export async function openHarness(browser: Browser, harnessUrl: string, token: () => string): Promise<Page> {
  const page = await browser.context.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
  await page.exposeFunction("airwaveToken", token);
  await page.goto(harnessUrl);
  await page.waitForFunction(() => window.airwaveHarness !== undefined);
  return page;
}

/** The harness page's client state ("none" before `start`). */
export async function harnessState(page: Page): Promise<string> {
  return page.evaluate(() => window.airwaveHarness.client?.state ?? "none");
}
