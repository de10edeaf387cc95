import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

const src = (file: string) => fileURLToPath(new URL(`../src/${file}`, import.meta.url));

// The demo imports the package by its name; these aliases point it at the
// sources, so `make dev` needs no build step.
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  resolve: {
    alias: [
      { find: /^@airwave\/client\/react$/, replacement: src("react.tsx") },
      { find: /^@airwave\/client$/, replacement: src("index.ts") },
    ],
  },
  server: { host: "127.0.0.1", port: 5173 },
  clearScreen: false,
});
