// The HTTP fallback in a real Chromium against the local stack: with every
// WebSocket the page opens cut by the test (Playwright routes them), the
// client falls back to the HTTP API, receives every message in order with its
// position, and publishes; once WebSockets work again it switches back, and
// across both switches each message arrives once, with no gap.
import type { Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { AirwaveClient } from "../src/index.js";
import {
  eventually,
  launchBrowser,
  openDashboard,
  pageState,
  publisher,
  receivedOnPage,
  startDemoServer,
  startStack,
  type Browser,
  type Stack,
} from "./support.js";
import type { ViteDevServer } from "vite";

let stack: Stack;
let demo: { server: ViteDevServer; url: string };
let browser: Browser;
let outside: AirwaveClient;

beforeAll(async () => {
  [stack, demo, browser] = await Promise.all([startStack(), startDemoServer(), launchBrowser()]);
  outside = await publisher(stack.url);
});

afterAll(async () => {
  outside?.close();
  await browser?.close();
  await demo?.server.close();
  await stack?.stop();
});

async function transportOf(page: Page): Promise<string> {
  return page.evaluate(() => window.airwaveDemo.client?.stats().transport ?? "none");
}

async function offsets(page: Page, channel: string): Promise<(number | null)[]> {
  return (await receivedOnPage(page, channel)).map((message) => message.offset);
}

describe("where WebSockets are blocked", () => {
  it("falls back to HTTP, receives and publishes in order, and switches back without a gap or a duplicate", async () => {
    const channel = "e2e-fallback";
    const page = await browser.context.newPage();
    page.on("pageerror", (error) => console.error(`page error: ${error.message}`));
    let blocked = true;
    let cut = 0;
    // While blocked, every WebSocket of the page is answered by the test and
    // closed at once: the page never reaches the gateway over a socket.
    await page.routeWebSocket(
      () => blocked,
      (socket) => {
        cut += 1;
        socket.close({ code: 1011, reason: "blocked by the test" });
      },
    );
    const settings = { channel, http: stack.http, base: "200", cap: "500", fallback: "2", probe: "1500", pollMin: "200", pollMax: "400" };
    const query = new URLSearchParams({ url: stack.url, ...settings });
    await page.goto(`${demo.url}?${query}`);
    await eventually("the page on the HTTP transport", async () => (await transportOf(page)) === "http" && (await pageState(page)) === "open");
    expect(cut).toBeGreaterThanOrEqual(2);
    await eventually("the subscription over HTTP", () =>
      page.evaluate((name) => window.airwaveDemo.client?.stats().channels[name]?.subscribed === true, channel),
    );

    const published: string[] = [];
    for (let n = 1; n <= 5; n++) published.push(await outside.publish(channel, { n }));
    // The page publishes over HTTP too, and gets its own message back.
    published.push(
      await page.evaluate((name) => window.airwaveDemo.client?.publish(name, { from: "page" }) ?? "", channel),
    );
    await eventually("every message over HTTP", async () => (await receivedOnPage(page, channel)).length >= published.length);
    expect((await receivedOnPage(page, channel)).map((message) => message.id)).toEqual(published);
    expect(await offsets(page, channel)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await transportOf(page)).toBe("http");

    // Unblocked: a probe gets its pong and the page goes back to a WebSocket,
    // while messages keep coming.
    blocked = false;
    for (let n = 7; n <= 12; n++) {
      published.push(await outside.publish(channel, { n }));
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
    await eventually("the page back on a WebSocket", async () => (await transportOf(page)) === "websocket" && (await pageState(page)) === "open");
    for (let n = 13; n <= 15; n++) published.push(await outside.publish(channel, { n }));
    await eventually("every message", async () => (await receivedOnPage(page, channel)).length >= published.length);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const received = await receivedOnPage(page, channel);
    expect(received.map((message) => message.id)).toEqual(published);
    expect(received.map((message) => message.offset)).toEqual(published.map((_, index) => index + 1));
    await page.close();
  });
});
