// Builds local-first.wasm with componentize-js (the engine behind `jco componentize`).
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: join(here, "local-first.js"),
  witPath: join(here, "../../../plugins/wit"),
  worldName: "plugin",
  // A plugin needs none of these; the host links a deny-all WASI anyway.
  disableFeatures: ["http", "fetch-event", "stdio", "random", "clocks"],
});
await writeFile(join(here, "local-first.wasm"), component);
console.log(`wrote local-first.wasm (${component.length} bytes)`);
