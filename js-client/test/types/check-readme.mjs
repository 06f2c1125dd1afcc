// Type-checks every ```js example in README.md against the published zmqwamp.d.ts (tsc --strict).
// Part of `npm run typecheck`; also run by test/build.test.mjs.  Each example becomes its own ES
// module in a temporary directory, with `import * as zmq from "zmqwamp-client"` unless it imports
// zmq itself, and `url` declared; "zmqwamp-client" resolves to ../../zmqwamp.d.ts.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");

/** The ```js blocks of a Markdown text, with the line each starts on. */
export function jsExamples(markdown) {
  const blocks = [];
  const re = /^```js\n([\s\S]*?)^```$/gm;
  let m;
  while ((m = re.exec(markdown))) {
    blocks.push({ line: markdown.slice(0, m.index).split("\n").length + 1, code: m[1] });
  }
  return blocks;
}

const HEADER = `// Generated from README.md by test/types/check-readme.mjs.
declare function require(id: "zmqwamp-client"): typeof import("zmqwamp-client");
declare const url: string;
export {};
`;

/** Compile the README's examples; returns {count, output}; throws with tsc's output on errors. */
export function checkReadme(readme = join(root, "README.md")) {
  const examples = jsExamples(readFileSync(readme, "utf8"));
  if (examples.length === 0) throw new Error(`no \`\`\`js examples in ${readme}`);
  const dir = mkdtempSync(join(tmpdir(), "zmqwamp-readme-"));
  try {
    const files = examples.map(({ line, code }) => {
      const importsZmq = /\bzmq\b\s*=\s*require\(|import \* as zmq from/.test(code);
      const name = `readme-line-${line}.mts`;
      writeFileSync(join(dir, name), HEADER + (importsZmq ? "" : 'import * as zmq from "zmqwamp-client";\n') + code);
      return name;
    });
    // `ws` ships no types; the examples only hand its class to a context.
    writeFileSync(
      join(dir, "ws.d.ts"),
      'declare module "ws" { export const WebSocket: import("zmqwamp-client").WebSocketClass; }\n',
    );
    writeFileSync(
      join(dir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          target: "es2022",
          module: "nodenext",
          moduleResolution: "nodenext",
          lib: ["es2022", "dom"],
          types: [],
          paths: { "zmqwamp-client": [join(root, "zmqwamp.d.ts")] },
        },
        files: [...files, "ws.d.ts"],
      }),
    );
    const tsc = join(root, "node_modules/typescript/bin/tsc");
    try {
      const output = execFileSync(process.execPath, [tsc, "-p", join(dir, "tsconfig.json")], {
        encoding: "utf8",
        timeout: 120000,
      });
      return { count: examples.length, output };
    } catch (e) {
      throw new Error(`README.md examples do not type-check against zmqwamp.d.ts:\n${e.stdout}${e.stderr}`, {
        cause: e,
      });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { count } = checkReadme();
  console.log(`README.md: ${count} js examples type-check against zmqwamp.d.ts`);
}
