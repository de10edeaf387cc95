// The page behind `openHarness`: no UI, one AirwaveClient made from the
// settings a test passes to `start`, its token from the test process
// (`window.airwaveToken`, which Playwright exposes), and everything the client
// reported kept for the test to read.
import { AirwaveClient } from "../src/index.js";
import type { ChannelMessage, ClosingEvent, ConnectionState, RecoveryEvent } from "../src/index.js";

export interface HarnessSettings {
  url: string;
  channel: string;
}

export interface HarnessHandle {
  client: AirwaveClient | null;
  states: ConnectionState[];
  closings: ClosingEvent[];
  recoveries: RecoveryEvent[];
  /** Every message delivered on the channel, in delivery order. */
  received: ChannelMessage[];
  start(settings: HarnessSettings): void;
}

declare global {
  interface Window {
    airwaveHarness: HarnessHandle;
    /** A freshly signed token, from the test (see `openHarness`). */
    airwaveToken(): Promise<string>;
  }
}

const handle: HarnessHandle = {
  client: null,
  states: [],
  closings: [],
  recoveries: [],
  received: [],
  start({ url, channel }) {
    const client = new AirwaveClient({ url, getToken: () => window.airwaveToken() });
    handle.client = client;
    client.on("state", (state) => handle.states.push(state));
    client.on("closing", (event) => handle.closings.push(event));
    client.on("recovery", (event) => handle.recoveries.push(event));
    client.subscribe(channel, (_data, message) => handle.received.push(message));
    // The test watches the state; a failed first attempt is retried by the client itself.
    client.connect().catch(() => {});
  },
};
window.airwaveHarness = handle;
