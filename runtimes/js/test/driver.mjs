// The test driver tests/test_runtime_js.py runs: one Node process answers a whole list of requests,
// so a test module costs one start of Node and one compile of kbpack.wasm, not one per question.
//
//   node driver.mjs KBPACK.WASM REQUESTS.json  ->  one JSON array on stdout, an answer per request
//
// Each answer is { ok: VALUE } or { error: { name, status, part, message } } for a KbpackError; any
// other exception is answered { crash: "..." }, which the tests count as a failure of the binding
// (the promise is that bad input only ever raises KbpackError). Bundles are opened once per path.
import { readFileSync } from "node:fs";
import { KbpackError, loadModule, open, openFile } from "../kbpack.mjs";

const [wasmPath, requestsPath] = process.argv.slice(2);
const module = await loadModule(wasmPath);
const options = { wasm: module };
const requests = JSON.parse(readFileSync(requestsPath, "utf8"));
const handles = new Map();

async function bundle(path) {
  if (!handles.has(path)) handles.set(path, await openFile(path, options));
  return handles.get(path);
}

// what a caller gets for one call: its value, or the KbpackError it raised
async function outcome(fn) {
  try {
    return { ok: await fn() };
  } catch (e) {
    if (e instanceof KbpackError) return { error: { name: e.name, status: e.status, part: e.part, message: e.message } };
    return { crash: `${e?.constructor?.name}: ${e?.message}` };
  }
}

// Every misuse the binding must answer with a KbpackError (never a crash of Node or a RuntimeError).
async function misuse(path) {
  const kb = await openFile(path, options);
  const dim = kb.dim;
  const checks = {
    "vector of dim + 1": () => kb.search({ vector: new Float32Array(dim + 1), mode: "dense" }),
    "vector of 0 values": () => kb.search({ vector: [], mode: "dense" }),
    "vector not an array": () => kb.search({ vector: "0.5", mode: "dense" }),
    "no vector for dense": () => kb.search({ mode: "dense" }),
    "NaN in the vector": () => kb.search({ vector: new Float32Array(dim).fill(NaN), mode: "dense" }),
    "negative k": () => kb.search({ vector: new Float32Array(dim), k: -1 }),
    "unknown mode": () => kb.search({ vector: new Float32Array(dim), mode: "fuzzy" }),
    "unknown unit": () => kb.search({ vector: new Float32Array(dim), unit: "book" }),
    "chunk id past the end": () => kb.chunk(kb.count),
    "chunk id not a number": () => kb.chunk("3"),
    "probe vectors of the wrong size": () => kb.probeCheck(new Float32Array(dim - 1)),
    "0-byte bundle": () => open(new Uint8Array(0), options),
    "bytes that are not a bundle": () => open(new TextEncoder().encode("not a bundle at all ".repeat(20)), options),
    "open() of a string": () => open("kb.kbpack", options),
    "openFile of a missing file": () => openFile(`${path}.missing`, options),
    "openFile of a directory": () => openFile(".", options),
  };
  const answers = {};
  for (const [name, fn] of Object.entries(checks)) answers[name] = await outcome(fn);
  kb.close();
  kb.close(); // twice: harmless
  const afterClose = {
    "search after close": () => kb.search({ vector: new Float32Array(dim), mode: "dense" }),
    "chunk after close": () => kb.chunk(0),
    "verify after close": () => kb.verify(),
    "info after close": () => kb.info(),
    "probes after close": () => kb.probes(),
  };
  for (const [name, fn] of Object.entries(afterClose)) answers[name] = await outcome(fn);
  answers["closed flag"] = { ok: kb.closed };
  return answers;
}

const OPS = {
  // open + verify: what `kbpack verify` answers
  verdict: async (r) => {
    const kb = await open(readFileSync(r.path), options);
    try {
      return kb.verify();
    } finally {
      kb.close();
    }
  },
  info: async (r) => (await bundle(r.path)).info(),
  search: async (r) => (await bundle(r.path)).search({
    vector: r.vector ?? undefined, question: r.question ?? undefined, k: r.k, mode: r.mode, unit: r.unit }),
  chunk: async (r) => (await bundle(r.path)).chunk(r.id),
  probes: async (r) => (await bundle(r.path)).probes(),
  probeCheck: async (r) => (await bundle(r.path)).probeCheck(r.vectors),
  encoder: async (r) => {
    const e = await (await bundle(r.path)).encoder();
    return e && { graphBytes: e.graph.length, tokenizerJson: e.tokenizerJson.length, settings: e.settings };
  },
  misuse: async (r) => misuse(r.path),
};

const answers = [];
for (const r of requests) {
  const op = OPS[r.op];
  answers.push(op ? await outcome(() => op(r)) : { crash: `unknown op ${r.op}` });
}
for (const kb of handles.values()) kb.close();
// BigInt (an integer field beyond 2^53) as a decimal string: JSON has no BigInt
process.stdout.write(JSON.stringify(answers, (_, v) => (typeof v === "bigint" ? v.toString() : v)));
