import { mkdirSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";
import type { Page } from "playwright-core";
import type { ViteDevServer } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AirwaveClient } from "../src/index.js";
import {
  deleteConnection,
  eventually,
  freePort,
  gatewayConnections,
  launchBrowser,
  liveIds,
  openDashboard,
  packageRoot,
  pageState,
  publisher,
  receivedOnPage,
  socketsOpened,
  startDemoServer,
  startStack,
  subscribedOnPage,
  type Browser,
  type Stack,
} from "./support.js";

let stack: Stack;
let demo: { server: ViteDevServer; url: string };
let browser: Browser;
let outside: AirwaveClient;
/** The publisher's own connection records, so the page's can be told apart. */
let publisherIds: Set<string>;

beforeAll(async () => {
  [stack, demo, browser] = await Promise.all([startStack(), startDemoServer(), launchBrowser()]);
  outside = await publisher(stack.url);
  publisherIds = new Set((await gatewayConnections(stack)).ids);
  expect(publisherIds.size).toBe(1);
});

afterAll(async () => {
  outside?.close();
  await browser?.close();
  await demo?.server.close();
  await stack?.stop();
});

/** The page's connections the gateway still holds. */
async function pageConnections(): Promise<string[]> {
  const { ids } = await gatewayConnections(stack);
  return liveIds(
    stack,
    ids.filter((id) => !publisherIds.has(id)),
  );
}

async function openOn(channel: string, settings: Record<string, string> = {}): Promise<Page> {
  const page = await openDashboard(browser, demo.url, stack, { channel, ...settings });
  await eventually("the page to connect", async () => (await pageState(page)) === "open");
  await subscribedOnPage(page, channel);
  return page;
}

describe("the dashboard against the local stack", () => {
  it("receives a message published from outside the browser", async () => {
    const page = await openOn("e2e-basic");
    const id = await outside.publish("e2e-basic", { text: "hello from node" });
    const received = await eventually("the message on the page", async () => {
      const got = await receivedOnPage(page, "e2e-basic");
      return got.length > 0 ? got : undefined;
    });
    expect(received.map((m) => m.id)).toEqual([id]);
    expect(received[0]?.data).toEqual({ text: "hello from node" });
    await expect.poll(() => page.locator(`[data-testid=messages] li[data-id="${id}"]`).count()).toBe(1);
    await page.close();
  });

  it("under StrictMode, mount / unmount / re-render leaves exactly one open connection", async () => {
    const page = await openOn("e2e-strict");
    await eventually("one page connection", async () => (await pageConnections()).length === 1);
    // The page and the publisher (an earlier test's page may still be closing).
    await eventually("two open sockets", async () => (await gatewayConnections(stack)).open === 2);
    const firstSockets = await page.evaluate(() => window.airwaveDemo.client?.stats().socketsOpened);
    expect(firstSockets).toBe(1); // StrictMode's double mount made no second socket

    await page.evaluate(() => window.airwaveDemo.setMounted(false));
    await eventually("the page's connection to close", async () => (await gatewayConnections(stack)).open === 1);
    await page.evaluate(() => window.airwaveDemo.setMounted(true));
    await eventually("the page to connect again", async () => (await pageState(page)) === "open");
    await subscribedOnPage(page, "e2e-strict");
    const subscribes = await page.evaluate(() => window.airwaveDemo.client?.stats().subscribeRequests);
    expect(subscribes).toBe(2); // its two channels (messages and chart), once each despite the double mount
    // Each render passes the hook a new handler function: no resubscribe for it.
    for (let i = 0; i < 5; i++) await page.evaluate(() => window.airwaveDemo.rerender());
    // Give a stray socket time to show up before counting.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    expect((await gatewayConnections(stack)).open).toBe(2);
    expect(await pageConnections()).toHaveLength(1);
    expect(await page.evaluate(() => window.airwaveDemo.client?.stats().socketsOpened)).toBe(1);
    expect(await page.evaluate(() => window.airwaveDemo.client?.stats().subscribeRequests)).toBe(subscribes);

    const id = await outside.publish("e2e-strict", { n: 1 });
    await eventually("the message after the remount", async () =>
      (await receivedOnPage(page, "e2e-strict")).some((m) => m.id === id),
    );
    // Delivered once, though the component subscribed through several mounts.
    expect((await receivedOnPage(page, "e2e-strict")).filter((m) => m.id === id)).toHaveLength(1);
    await page.close();
    await eventually("the closed page's connection to go", async () => (await gatewayConnections(stack)).open === 1);
  });

  it("reconnects, resubscribes and receives the next message after a server-side close", async () => {
    const page = await openOn("e2e-reconnect", { base: "300", cap: "2000" });
    const [first] = await eventually("the page's connection", async () => {
      const ids = await pageConnections();
      return ids.length === 1 ? ids : undefined;
    });
    expect(await deleteConnection(stack, first ?? "")).toBe(204);
    await eventually("a new connection", async () => {
      const ids = await pageConnections();
      return ids.length === 1 && ids[0] !== first;
    });
    await eventually("the page to be open again", async () => (await pageState(page)) === "open");
    await subscribedOnPage(page, "e2e-reconnect");
    const states = await page.evaluate(() => window.airwaveDemo.states);
    expect(states).toContain("reconnecting");
    const id = await outside.publish("e2e-reconnect", { after: "reconnect" });
    await eventually("the next message", async () => (await receivedOnPage(page, "e2e-reconnect")).some((m) => m.id === id));
    expect(await page.evaluate(() => window.airwaveDemo.client?.stats().reconnects)).toBe(1);
    await page.close();
  });

  it("recovers every message published while its socket was closed, in order, each once", async () => {
    const channel = "e2e-recovery";
    const page = await openOn(channel);
    const before = await outside.publish(channel, { n: 0 });
    await eventually("the first message", async () => (await receivedOnPage(page, channel)).some((m) => m.id === before));
    // Offline, the client waits for the `online` event instead of reconnecting:
    // that holds the page disconnected while the messages are published.
    await browser.context.setOffline(true);
    const [id] = await pageConnections();
    const status = await deleteConnection(stack, id ?? "");
    expect([204, 410]).toContain(status);
    await eventually("the page to notice", async () => (await pageState(page)) === "reconnecting");
    const published: string[] = [];
    for (let n = 1; n <= 5; n++) published.push(await outside.publish(channel, { n }));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(await pageConnections()).toEqual([]); // still disconnected: the messages were missed live
    await browser.context.setOffline(false);
    await eventually("the page to reconnect", async () => (await pageState(page)) === "open");
    const received = await eventually(
      "the recovered messages",
      async () => {
        const got = await receivedOnPage(page, channel);
        return published.every((p) => got.some((m) => m.id === p)) ? got : undefined;
      },
      15_000,
    );
    const ids = received.map((m) => m.id);
    expect(ids).toEqual([before, ...published]);
    const offsets = received.map((m) => m.offset);
    expect(offsets.every((o) => typeof o === "number")).toBe(true);
    for (let i = 1; i < offsets.length; i++) expect(offsets[i]).toBe((offsets[i - 1] ?? 0) + 1);
    const recoveries = await page.evaluate(() => window.airwaveDemo.recoveries);
    expect(recoveries).toContainEqual({ channel, recovered: true, reason: "reconnect" });
    await page.close();
  });

  it("renders the dashboard (screenshot)", async () => {
    const page = await openOn("prices");
    let price = 100;
    for (let i = 0; i < 30; i++) {
      price += Math.sin(i / 3) * 2 + (i % 4) - 1.5;
      await outside.publish("prices", { price: Math.round(price * 100) / 100 });
    }
    await eventually("30 points on the chart", async () => (await receivedOnPage(page, "prices")).length >= 30);
    await expect.poll(() => page.locator("[data-testid=stats] tr").count()).toBeGreaterThan(5);
    await expect.poll(() => page.locator("[data-testid=price]").textContent()).toMatch(/30 points/);
    const dir = join(packageRoot, "test-results");
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: join(dir, "dashboard.png"), fullPage: true });
    await page.close();
  });
});

describe("protocol versions", () => {
  /** What a bare browser WebSocket offering `protocols` ends with: the selected protocol, or its close code. */
  async function offer(protocols: string[]): Promise<{ opened: boolean; protocol: string; code: number }> {
    const page = await browser.context.newPage();
    try {
      await page.goto(demo.url);
      return await page.evaluate(
        ({ url, protocols }) =>
          new Promise<{ opened: boolean; protocol: string; code: number }>((resolve) => {
            const socket = new WebSocket(url, protocols);
            let opened = false;
            socket.onopen = () => {
              opened = true;
              socket.close(1000);
            };
            socket.onclose = (event) => resolve({ opened, protocol: socket.protocol, code: event.code });
          }),
        { url: stack.url, protocols },
      );
    } finally {
      await page.close();
    }
  }

  it("selects airwave.v1, and refuses a client offering only airwave.v2 (close 1006, never open)", async () => {
    expect(await offer(["airwave.v1"])).toEqual({ opened: true, protocol: "airwave.v1", code: 1000 });
    const refused = await offer(["airwave.v2"]);
    expect(refused.opened).toBe(false);
    // A browser reports every refused handshake as 1006; the server answered 426 unsupported_protocol.
    expect(refused.code).toBe(1006);
  });
});

describe("with the gateway gone", () => {
  it("backs off and gives up after its bound, without a storm", async () => {
    const port = await freePort();
    const own = await startStack(port);
    const attempts = 5;
    const page = await openDashboard(browser, demo.url, own, {
      channel: "e2e-down",
      base: "200",
      cap: "1000",
      attempts: String(attempts),
      breaker: "0",
      // A keep-alive ping after 2 s without a frame sent (the page sends
      // nothing once subscribed): should the closing socket's end not reach
      // the page (it is offline), the missed pong says the socket is dead.
      ping: "2000",
      debug: "1",
    });
    // The client's own account of its attempts, shown when an assertion fails.
    const started = Date.now();
    const clientLog: string[] = [];
    page.on("console", (message) => {
      if (message.text().startsWith("[airwave]")) clientLog.push(`${Date.now() - started} ms ${message.text()}`);
    });
    try {
      await eventually("the page to connect", async () => (await pageState(page)) === "open");
      // Offline first, so no attempt is spent between the stack's exit and the
      // refusing server taking its port. The page learns it is offline a little
      // after the browser does: the stack stops only once the page knows, or a
      // socket closed before then would spend attempts against a closed port.
      const mark = (what: string) => clientLog.push(`${Date.now() - started} ms test: ${what}`);
      await browser.context.setOffline(true);
      await eventually("the page to see it is offline", () => page.evaluate(() => !navigator.onLine));
      mark("offline");
      await own.stop();
      mark("stack stopped");
      await eventually("the page to lose its socket", async () => (await pageState(page)) === "reconnecting", 40_000);

      const upgrades: number[] = [];
      const refuser: Server = createServer((_request, response) => {
        response.writeHead(503).end();
      });
      refuser.on("upgrade", (_request, socket) => {
        upgrades.push(Date.now());
        socket.end("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
      });
      await new Promise<void>((resolve) => refuser.listen(port, "127.0.0.1", resolve));
      try {
        const openedBefore = await socketsOpened(page);
        mark(`refuser listening; ${openedBefore} sockets opened so far`);
        await browser.context.setOffline(false);
        mark("online");
        await eventually("the page to give up", async () => (await pageState(page)) === "gave_up", 60_000);
        const atGiveUp = upgrades.length;
        // Quiet after giving up: no attempt in the next seconds.
        await new Promise((resolve) => setTimeout(resolve, 3000));
        expect(upgrades.length).toBe(atGiveUp);
        // The client spends exactly its budget. Chromium may fail the first
        // attempts after going back online before they reach the server, so
        // the server sees at most that many, and at least one.
        expect((await socketsOpened(page)) - openedBefore, clientLog.join("\n")).toBe(attempts);
        expect(atGiveUp).toBeGreaterThanOrEqual(1);
        expect(atGiveUp).toBeLessThanOrEqual(attempts);
        const gaps = upgrades.slice(1).map((at, i) => at - (upgrades[i] ?? at));
        console.log(`refused attempts: ${upgrades.length}; gaps between them (ms): ${gaps.join(", ")}`);
        // Each gap is a jittered delay under the 1 s cap, plus handshake time:
        // a generous bound that still catches a retry loop without backoff's cap.
        for (const gap of gaps) expect(gap).toBeLessThan(1000 + 4000);
        const state = await page.evaluate(() => window.airwaveDemo.client?.stats());
        expect(state?.state).toBe("gave_up");

        // reconnect() starts again: one more attempt arrives.
        await page.evaluate(() => void window.airwaveDemo.client?.reconnect().catch(() => {}));
        await eventually("a fresh attempt", () => upgrades.length > atGiveUp, 10_000);
      } finally {
        await new Promise<void>((resolve) => refuser.close(() => resolve()));
        refuser.closeAllConnections();
      }
    } finally {
      await browser.context.setOffline(false);
      await page.close();
    }
  });
});
