// ESLint (flat config) for zmqwamp-client: `npm run lint`.  Formatting is Prettier's job
// (`npm run format:check`), types are tsc's (`npm run typecheck`); this catches the rest.
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["dist/", "node_modules/", "test-artifacts/"] },
  js.configs.recommended,
  {
    languageOptions: { ecmaVersion: 2022, sourceType: "module" },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-empty": ["error", { allowEmptyCatch: true }],
      "no-unused-vars": ["error", { argsIgnorePattern: "^_", caughtErrors: "none" }],
      eqeqeq: ["error", "smart"],
      "no-var": "error",
      "prefer-const": "error",
      "no-console": "error",
    },
  },
  // The library runs in browsers and Node alike: only what both have.
  {
    files: ["src/**/*.js"],
    languageOptions: { globals: { ...globals["shared-node-browser"], Blob: "readonly", WebSocket: "readonly" } },
  },
  // The browser-bundle shims are CommonJS.
  {
    files: ["shims/**/*.cjs"],
    languageOptions: { sourceType: "commonjs", globals: { ...globals.node } },
  },
  // Build script and tests run in Node (the browser test also has code evaluated in the page).
  {
    files: ["build.mjs", "eslint.config.mjs", "test/**/*.mjs"],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
    rules: { "no-console": "off" },
  },
];
