import type { Lifecycle } from "./types.js";

/** The page's own signals; null outside a browser (no window or document). */
export function defaultLifecycle(): Lifecycle | null {
  const win = (globalThis as { window?: Window }).window;
  const doc = (globalThis as { document?: Document }).document;
  if (!win || !doc) return null;
  return {
    isOnline: () => (typeof navigator === "undefined" ? true : navigator.onLine !== false),
    isHidden: () => doc.visibilityState === "hidden",
    listen(handlers) {
      win.addEventListener("online", handlers.online);
      win.addEventListener("offline", handlers.offline);
      doc.addEventListener("visibilitychange", handlers.visibility);
      return () => {
        win.removeEventListener("online", handlers.online);
        win.removeEventListener("offline", handlers.offline);
        doc.removeEventListener("visibilitychange", handlers.visibility);
      };
    },
  };
}
