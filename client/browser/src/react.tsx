// React bindings. The core (./index) knows nothing of React; this file only
// owns one AirwaveClient per provider and exposes it through context.
import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";
import { AirwaveClient } from "./client.js";
import type { AirwaveOptions, ChannelMessage, ConnectionState } from "./types.js";

const AirwaveContext = createContext<AirwaveClient | null>(null);

export interface AirwaveProviderProps extends AirwaveOptions {
  children?: ReactNode;
  /** A client made elsewhere; the provider then neither connects nor closes it. */
  client?: AirwaveClient;
}

/**
 * Makes one client for its subtree and keeps it connected while mounted.
 * The client is made during render (its constructor has no side effects) and
 * connected in an effect; an unmount closes it one tick later, so StrictMode's
 * mount / unmount / mount keeps the same socket: exactly one per provider.
 * Changing `url` makes a new client; other options are read when it is made,
 * except `getToken`, whose latest version is always called.
 */
export function AirwaveProvider({ children, client: given, ...options }: AirwaveProviderProps) {
  const latest = useRef(options);
  latest.current = options;
  const made = useRef<{ url: string; client: AirwaveClient } | null>(null);
  if (!given && made.current?.url !== options.url) {
    const getToken = options.getToken ? () => latest.current.getToken?.() : undefined;
    made.current = { url: options.url, client: new AirwaveClient({ ...options, getToken }) };
  }
  const client = given ?? made.current?.client ?? null;
  useEffect(() => {
    if (given || !client) return;
    const pendingClose = closing.get(client);
    if (pendingClose !== undefined) {
      clearTimeout(pendingClose);
      closing.delete(client);
    }
    client.connect().catch(() => {
      // The state (gave_up, closed) tells the UI; the rejection itself has nothing to add.
    });
    return () => {
      closing.set(
        client,
        setTimeout(() => {
          closing.delete(client);
          client.close();
        }, 0),
      );
    };
  }, [client, given]);
  return <AirwaveContext.Provider value={client}>{children}</AirwaveContext.Provider>;
}

/** Clients whose provider unmounted, closing on the next tick unless it mounts again. */
const closing = new WeakMap<AirwaveClient, ReturnType<typeof setTimeout>>();

/** The provider's client (null outside a provider). */
export function useAirwave(): AirwaveClient | null {
  return useContext(AirwaveContext);
}

/** The connection state, re-rendering on each change. */
export function useConnectionState(): ConnectionState {
  const client = useAirwave();
  const [state, setState] = useState<ConnectionState>(client?.state ?? "closed");
  useEffect(() => {
    if (!client) return;
    setState(client.state);
    return client.on("state", (next) => setState(next));
  }, [client]);
  return state;
}

/**
 * Subscribes while mounted. The handler may change on every render: the
 * latest one is called, and the subscription is not redone.
 */
export function useChannel<T = unknown>(
  channel: string | null,
  handler: (data: T, message: ChannelMessage<T>) => void,
): void {
  const client = useAirwave();
  const handlerRef = useRef(handler);
  handlerRef.current = handler;
  useEffect(() => {
    if (!client || channel === null) return;
    return client.subscribe<T>(channel, (data, message) => handlerRef.current(data, message));
  }, [client, channel]);
}
