import { StrictMode, useCallback, useEffect, useState, type FormEvent } from "react";
import { createRoot } from "react-dom/client";
import type { AirwaveClient, AirwaveOptions, ChannelMessage, RecoveryEvent, Stats } from "@airwave/client";
import { AirwaveProvider, useAirwave, useChannel, useConnectionState } from "@airwave/client/react";

// Settings come from the query string, so the page (and the browser tests)
// can point it anywhere: ?url=ws://…&channel=…&base=…&cap=…&attempts=…
// (`ping`: keepAliveAfterMs, the quiet time before a keep-alive ping).
const query = new URLSearchParams(location.search);
const url = query.get("url") ?? "ws://127.0.0.1:3001/local";
const channel = query.get("channel") ?? "prices";
const chartChannel = query.get("chart") ?? "prices";
const numberParam = (name: string): number | undefined => {
  const value = query.get(name);
  return value === null || value === "" || Number.isNaN(Number(value)) ? undefined : Number(value);
};
const options: AirwaveOptions = {
  url,
  backoff: {
    ...(numberParam("base") !== undefined ? { baseMs: numberParam("base") } : {}),
    ...(numberParam("cap") !== undefined ? { capMs: numberParam("cap") } : {}),
    ...(numberParam("attempts") !== undefined ? { maxAttempts: numberParam("attempts") } : {}),
  },
  ...(numberParam("breaker") !== undefined ? { breakerThreshold: numberParam("breaker") } : {}),
  ...(numberParam("ping") !== undefined ? { keepAliveAfterMs: numberParam("ping") } : {}),
  ...(query.has("debug") ? { debug: (message: string) => console.debug(`[airwave] ${message}`) } : {}),
  // The HTTP fallback: ?http=<HTTP API URL> (the local gateway's by default),
  // and ?transport=http to force it.
  httpUrl: query.get("http") ?? url.replace(/^ws/, "http").replace(/\/[^/]*$/, ""),
  ...(query.get("transport") === "http" || query.get("transport") === "websocket"
    ? { transport: query.get("transport") as "http" | "websocket" }
    : {}),
  ...(numberParam("fallback") !== undefined ? { fallbackAfterFailures: numberParam("fallback") } : {}),
  ...(numberParam("probe") !== undefined ? { probeIntervalMs: numberParam("probe") } : {}),
  ...(numberParam("pollMin") !== undefined ? { pollMinMs: numberParam("pollMin") } : {}),
  ...(numberParam("pollMax") !== undefined ? { pollMaxMs: numberParam("pollMax") } : {}),
};
const token = query.get("token");
if (token) options.getToken = () => token;

/** What the browser tests read: every delivered message, in order, and the client. */
interface DemoHandle {
  client: AirwaveClient | null;
  received: ChannelMessage[];
  recoveries: RecoveryEvent[];
  states: string[];
  setMounted(mounted: boolean): void;
  rerender(): void;
}
declare global {
  interface Window {
    airwaveDemo: DemoHandle;
  }
}
window.airwaveDemo = {
  client: null,
  received: [],
  recoveries: [],
  states: [],
  setMounted: () => {},
  rerender: () => {},
};

function ConnectionBadge() {
  const state = useConnectionState();
  useEffect(() => {
    window.airwaveDemo.states.push(state);
  }, [state]);
  return (
    <span className={`state state-${state}`} data-testid="state">
      {state}
    </span>
  );
}

function Messages() {
  const [messages, setMessages] = useState<ChannelMessage[]>([]);
  // A new arrow function every render: the hook must not resubscribe for it.
  useChannel(channel, (_data, message) => {
    window.airwaveDemo.received.push(message);
    setMessages((previous) => [message, ...previous].slice(0, 50));
  });
  return (
    <section>
      <h2>
        Messages on <code>{channel}</code>
      </h2>
      {messages.length === 0 ? <p className="muted">Waiting for messages…</p> : null}
      <ul className="messages" data-testid="messages">
        {messages.map((message) => (
          <li key={message.id} data-id={message.id}>
            <span className="offset">#{message.position?.offset ?? "–"}</span>
            {JSON.stringify(message.data)}
          </li>
        ))}
      </ul>
    </section>
  );
}

interface Point {
  at: number;
  price: number;
}

function priceOf(data: unknown): number | null {
  if (typeof data === "number") return data;
  if (typeof data === "object" && data !== null && "price" in data) {
    const price = (data as { price: unknown }).price;
    if (typeof price === "number") return price;
  }
  return null;
}

function PriceChart() {
  const [points, setPoints] = useState<Point[]>([]);
  useChannel(chartChannel, (data) => {
    const price = priceOf(data);
    if (price !== null) setPoints((previous) => [...previous, { at: Date.now(), price }].slice(-120));
  });
  const width = 1200;
  const height = 240;
  const pad = 32;
  const prices = points.map((p) => p.price);
  const low = Math.min(...prices);
  const high = Math.max(...prices);
  const span = high - low || 1;
  const x = (i: number) => pad + (i * (width - 2 * pad)) / Math.max(1, points.length - 1);
  const y = (price: number) => height - pad - ((price - low) * (height - 2 * pad)) / span;
  const path = points.map((p, i) => `${i === 0 ? "M" : "L"}${x(i).toFixed(1)},${y(p.price).toFixed(1)}`).join(" ");
  const last = points.at(-1);
  return (
    <section className="chart wide">
      <h2>
        Live chart of <code>{chartChannel}</code>
      </h2>
      <div className="price" data-testid="price">
        {last ? last.price.toFixed(2) : "–"}
        <span className="muted"> {points.length} points</span>
      </div>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label="price chart">
        <rect x={pad} y={pad / 2} width={width - 2 * pad} height={height - 1.5 * pad} fill="#f7f9fc" />
        {points.length > 0 ? (
          <>
            <text x={4} y={y(high) + 4} fontSize="13" fill="#718096">
              {high.toFixed(1)}
            </text>
            <text x={4} y={y(low) + 4} fontSize="13" fill="#718096">
              {low.toFixed(1)}
            </text>
          </>
        ) : (
          <text x={width / 2} y={height / 2} textAnchor="middle" fontSize="14" fill="#a0aec0">
            waiting for {chartChannel} messages with {"{"}"price": n{"}"}
          </text>
        )}
        <path d={path} fill="none" stroke="#2b6cb0" strokeWidth="2" vectorEffect="non-scaling-stroke" />
        {last ? <circle cx={x(points.length - 1)} cy={y(last.price)} r="4" fill="#2b6cb0" /> : null}
      </svg>
    </section>
  );
}

function ServerStats() {
  const client = useAirwave();
  const state = useConnectionState();
  const [stats, setStats] = useState<Stats | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refresh = useCallback(() => {
    client?.serverStats().then(
      (reply) => {
        setStats(reply);
        setError(null);
      },
      (failure: unknown) => setError(String(failure)),
    );
  }, [client]);
  useEffect(() => {
    if (state !== "open") return;
    refresh();
    const timer = setInterval(refresh, 10_000);
    return () => clearInterval(timer);
  }, [state, refresh]);
  const local = client?.stats();
  return (
    <section>
      <h2>Stats</h2>
      {error ? <p className="error">{error}</p> : null}
      <table className="stats" data-testid="stats">
        <tbody>
          {stats
            ? Object.entries(stats).map(([name, value]) => (
                <tr key={name}>
                  <td>{name}</td>
                  <td>{value === null ? "none" : String(value)}</td>
                </tr>
              ))
            : null}
          {local ? (
            <>
              <tr>
                <td>client: reconnects</td>
                <td>{local.reconnects}</td>
              </tr>
              <tr>
                <td>client: duplicates dropped</td>
                <td>{local.duplicatesDropped}</td>
              </tr>
            </>
          ) : null}
        </tbody>
      </table>
      <button className="secondary" type="button" onClick={refresh} style={{ marginTop: 8 }}>
        Refresh
      </button>
    </section>
  );
}

function PublishForm() {
  const client = useAirwave();
  const [target, setTarget] = useState(channel);
  const [data, setData] = useState('{"price": 100}');
  const [result, setResult] = useState<string | null>(null);
  const submit = (event: FormEvent) => {
    event.preventDefault();
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      setResult("data is not JSON");
      return;
    }
    client?.publish(target === "" ? null : target, parsed).then(
      (id) => setResult(`published ${id}`),
      (error: unknown) => setResult(String(error)),
    );
  };
  return (
    <section>
      <h2>Publish</h2>
      <form onSubmit={submit}>
        <input aria-label="channel" value={target} onChange={(e) => setTarget(e.target.value)} placeholder="channel (empty: everyone)" />
        <textarea aria-label="data" value={data} onChange={(e) => setData(e.target.value)} rows={2} />
        <button type="submit">Publish</button>
      </form>
      {result ? <p className="muted" data-testid="publish-result">{result}</p> : null}
    </section>
  );
}

function Recoveries() {
  const client = useAirwave();
  const [events, setEvents] = useState<RecoveryEvent[]>([]);
  useEffect(() => {
    if (!client) return;
    window.airwaveDemo.client = client;
    return client.on("recovery", (event) => {
      window.airwaveDemo.recoveries.push(event);
      setEvents((previous) => [event, ...previous].slice(0, 10));
    });
  }, [client]);
  return (
    <section>
      <h2>Recovery</h2>
      {events.length === 0 ? <p className="muted">No reconnect yet.</p> : null}
      <ul className="messages">
        {events.map((event, i) => (
          <li key={i}>
            {event.channel}: {event.recovered ? "recovered" : "not recoverable"} ({event.reason})
          </li>
        ))}
      </ul>
    </section>
  );
}

function Dashboard() {
  return (
    <>
      <header>
        <h1>Airwave</h1>
        <ConnectionBadge />
        <code>{url}</code>
      </header>
      <main>
        <PriceChart />
        <Messages />
        <ServerStats />
        <PublishForm />
        <Recoveries />
      </main>
    </>
  );
}

function Root() {
  const [mounted, setMounted] = useState(true);
  const [, setTick] = useState(0);
  window.airwaveDemo.setMounted = setMounted;
  window.airwaveDemo.rerender = () => setTick((n) => n + 1);
  if (!mounted) return <p>Unmounted.</p>;
  // A new options object each render: the provider must keep its one client.
  return (
    <AirwaveProvider {...options}>
      <Dashboard />
    </AirwaveProvider>
  );
}

const container = document.getElementById("root");
if (container) {
  createRoot(container).render(
    query.get("strict") === "0" ? (
      <Root />
    ) : (
      <StrictMode>
        <Root />
      </StrictMode>
    ),
  );
}
