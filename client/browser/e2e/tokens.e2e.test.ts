// The server ending a connection on purpose, as the browser client sees it:
// its token expired (the client renews it and carries on), or the user opened
// one connection too many (the oldest is evicted and stays down). The stack
// here has HS256 authentication and a per-user cap of 1 in eviction mode.
import type { Page } from "playwright-core";
import type { ViteDevServer } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AirwaveClient } from "../src/index.js";
import {
  eventually,
  gatewayConnections,
  harnessState,
  launchBrowser,
  liveIds,
  openHarness,
  publisher,
  signToken,
  startHarnessServer,
  startStack,
  type Browser,
  type Received,
  type Stack,
} from "./support.js";

const SECRET = "e2e-tokens-secret";
/** The server's leeway on `exp`: a connection's token expires this long after its `exp`. */
const LEEWAY_SECONDS = 30;

let stack: Stack;
let harness: { server: ViteDevServer; url: string };
let browser: Browser;
let outside: AirwaveClient;

const nowSeconds = () => Math.floor(Date.now() / 1000);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

beforeAll(async () => {
  [stack, harness, browser] = await Promise.all([
    startStack(0, {
      AIRWAVE_STACK_SECRET: SECRET,
      AIRWAVE_STACK_MAX_CONNECTIONS_PER_USER: "1",
      AIRWAVE_STACK_USER_CAP_MODE: "evict_oldest",
    }),
    startHarnessServer(),
    launchBrowser(),
  ]);
  // A user of its own, so the cap of 1 never touches the pages' users.
  outside = await publisher(stack.url, () =>
    signToken(SECRET, { sub: "e2e-publisher", exp: nowSeconds() + 3600, publish: ["*"] }),
  );
});

afterAll(async () => {
  outside?.close();
  await browser?.close();
  await harness?.server.close();
  await stack?.stop();
});

/** Connections the gateway holds that were not in `before` (the publisher's, an earlier test's). */
async function newConnections(before: Set<string>): Promise<string[]> {
  const { ids } = await gatewayConnections(stack);
  return liveIds(
    stack,
    ids.filter((id) => !before.has(id)),
  );
}

async function knownConnections(): Promise<Set<string>> {
  return new Set((await gatewayConnections(stack)).ids);
}

/** Starts the page's client on `channel` and waits until it is open and subscribed. */
async function startOn(page: Page, channel: string): Promise<void> {
  await page.evaluate((settings) => window.airwaveHarness.start(settings), { url: stack.url, channel });
  await eventually("the page to connect", async () => (await harnessState(page)) === "open");
  await eventually("the page to subscribe", () =>
    page.evaluate((name) => window.airwaveHarness.client?.stats().channels[name]?.subscribed === true, channel),
  );
}

async function received(page: Page): Promise<Received[]> {
  return page.evaluate(() =>
    window.airwaveHarness.received.map((m) => ({
      id: m.id,
      channel: m.channel,
      data: m.data,
      offset: m.position?.offset ?? null,
    })),
  );
}

describe("a token that expires on a live connection", () => {
  it("is renewed: the client reconnects with a fresh token, resubscribes, and misses nothing", async () => {
    const channel = "e2e-expiry";
    // The token endpoint: the first token is already 20 s past its `exp`, so
    // the server's leeway admits it and its connection expires about 10 s
    // later; every later token is good for an hour.
    const issued: number[] = [];
    const page = await openHarness(browser, harness.url, () => {
      const exp = issued.length === 0 ? nowSeconds() - 20 : nowSeconds() + 3600;
      issued.push(exp);
      return signToken(SECRET, { sub: "e2e-renew", exp });
    });
    const before = await knownConnections();
    await startOn(page, channel);
    expect(issued).toHaveLength(1);
    const [first] = await eventually("the page's connection", async () => {
      const ids = await newConnections(before);
      return ids.length === 1 ? ids : undefined;
    });
    const beforeExpiry = await outside.publish(channel, { n: "before expiry" });
    await eventually("the message before expiry", async () => (await received(page)).some((m) => m.id === beforeExpiry));

    // Past the connection's token expiry (`exp` + leeway), with a margin for clock rounding.
    const expiresAtMs = ((issued[0] ?? 0) + LEEWAY_SECONDS + 2) * 1000;
    await sleep(Math.max(0, expiresAtMs - Date.now()));
    // The next message to the channel finds the connection expired: the server
    // tells it so in a closing frame and closes it instead of delivering.
    const atExpiry = await outside.publish(channel, { n: "at expiry" });

    await eventually("the closing frame", () =>
      page.evaluate(() => window.airwaveHarness.closings.some((c) => c.code === "token_expired")),
    );
    const [second] = await eventually("a new connection at the gateway", async () => {
      const ids = await newConnections(before);
      return ids.length === 1 && ids[0] !== first ? ids : undefined;
    });
    expect(second).not.toBe(first);
    expect(await liveIds(stack, [first ?? ""])).toEqual([]);
    // The reconnect asked for a fresh token rather than retrying the expired one.
    expect(issued.length).toBeGreaterThanOrEqual(2);
    await eventually("the page to be open again", async () => (await harnessState(page)) === "open");
    await eventually("the page to resubscribe", () =>
      page.evaluate((name) => window.airwaveHarness.client?.stats().channels[name]?.subscribed === true, channel),
    );
    const states = await page.evaluate(() => window.airwaveHarness.states);
    expect(states).toContain("reconnecting");
    expect(states).not.toContain("evicted");
    expect(states).not.toContain("gave_up");

    const afterReconnect = await outside.publish(channel, { n: "after reconnect" });
    const got = await eventually("the message after the reconnect", async () => {
      const messages = await received(page);
      return messages.some((m) => m.id === afterReconnect) ? messages : undefined;
    });
    // The message that ran into the expired connection was recovered on the
    // resubscribe: every message once, in order.
    expect(got.map((m) => m.id)).toEqual([beforeExpiry, atExpiry, afterReconnect]);
    const recoveries = await page.evaluate(() => window.airwaveHarness.recoveries);
    expect(recoveries).toContainEqual({ channel, recovered: true, reason: "reconnect" });
    // Still one connection for the page, on the fresh token.
    expect(await newConnections(before)).toEqual([second]);
    await page.close();
  });
});

describe("a user over their cap of one connection, in eviction mode", () => {
  it("a second tab evicts the first, which stays down while the second stays open", async () => {
    const channel = "e2e-evict";
    const token = () => signToken(SECRET, { sub: "e2e-evicted", exp: nowSeconds() + 3600 });
    const before = await knownConnections();
    const firstTab = await openHarness(browser, harness.url, token);
    await startOn(firstTab, channel);
    const [first] = await eventually("the first tab's connection", async () => {
      const ids = await newConnections(before);
      return ids.length === 1 ? ids : undefined;
    });

    const secondTab = await openHarness(browser, harness.url, token);
    await startOn(secondTab, channel);
    await eventually("the first tab to be evicted", async () => (await harnessState(firstTab)) === "evicted");
    const closings = await firstTab.evaluate(() => window.airwaveHarness.closings);
    expect(closings.map((c) => c.code)).toEqual(["evicted"]);
    const [second] = await eventually("only the second tab's connection", async () => {
      const ids = await newConnections(before);
      return ids.length === 1 && ids[0] !== first ? ids : undefined;
    });

    // The evicted tab does not come back (it would evict the second in turn):
    // over a few seconds the user keeps exactly the second tab's connection.
    for (let i = 0; i < 16; i++) {
      await sleep(250);
      expect(await newConnections(before)).toEqual([second]);
      expect(await harnessState(firstTab)).toBe("evicted");
      expect(await harnessState(secondTab)).toBe("open");
    }
    expect(await firstTab.evaluate(() => window.airwaveHarness.client?.stats().socketsOpened)).toBe(1);
    expect(await secondTab.evaluate(() => window.airwaveHarness.closings)).toEqual([]);

    // The second tab is the one served; the evicted one receives nothing.
    const id = await outside.publish(channel, { to: "the open tab" });
    await eventually("the message on the second tab", async () => (await received(secondTab)).some((m) => m.id === id));
    await sleep(500);
    expect((await received(firstTab)).map((m) => m.id)).not.toContain(id);
    // Requests on the evicted client fail instead of waiting for a reconnect.
    const publishError = await firstTab.evaluate((name) =>
      window.airwaveHarness.client?.publish(name, { from: "the evicted tab" }).then(
        () => "published",
        (error: unknown) => (error as { code?: string }).code ?? String(error),
      ),
      channel,
    );
    expect(publishError).toBe("not_connected");
    await firstTab.close();
    await secondTab.close();
  });
});
