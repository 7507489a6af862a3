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

// Every misuse of a scope: a KbpackError each (libkbpack's words where libkbpack refuses it).
// `other`: a bundle without attributes.
async function filterMisuse(path, other) {
  const kb = await openFile(path, options);
  const old = await openFile(other, options);
  const q = { question: "water", mode: "lexical", k: 3 };
  const closed = kb.filter(["path:**"]);
  closed.close();
  closed.close(); // twice: harmless
  const foreign = (await openFile(path, options)).filter(["path:**"]);
  const kept = kb.filter(["path:**"]);
  const checks = {
    "unknown key": () => kb.filter(["colour=red"]),
    "bad operator": () => kb.filter(["kind>pdf"]),
    "where with an unknown key": () => kb.search({ ...q, where: ["colour=red"] }),
    "no condition": () => kb.filter([]),
    "a condition that is not a string": () => kb.filter([42]),
    "an empty condition": () => kb.filter([""]),
    "a condition with NUL": () => kb.filter(["kind=p\0df"]),
    "65 conditions": () => kb.filter(Array(65).fill("path:**")),
    "a filter that is not a Filter": () => kb.search({ ...q, filter: { matched: 3 } }),
    "a closed filter": () => kb.search({ ...q, filter: closed }),
    "another bundle's filter": () => kb.search({ ...q, filter: foreign }),
    "filter and where both": () => kb.search({ ...q, filter: kept, where: ["path:**"] }),
    "a bundle without attributes, filter": () => old.filter(["path:**"]),
    "a bundle without attributes, where": () => old.search({ ...q, where: ["path:**"] }),
  };
  const answers = {};
  for (const [name, fn] of Object.entries(checks)) answers[name] = await outcome(fn);
  answers["a filter still open before close"] = { ok: kept.closed };
  kb.close();
  answers["the bundle's close closed its filter"] = { ok: kept.closed };
  answers["filter after close"] = await outcome(() => kb.filter(["path:**"]));
  old.close();
  foreign.bundle.close();
  return answers;
}

// Every misuse of the answer strength: a KbpackError each.
async function answerMisuse(path) {
  const kb = await openFile(path, options);
  const dim = kb.dim;
  const checks = {
    "no vector": () => kb.answerStrength({ id: 0 }),
    "vector of dim - 1": () => kb.answerStrength({ vector: new Float32Array(dim - 1), id: 0 }),
    "NaN in the vector": () => kb.answerStrength({ vector: new Float32Array(dim).fill(NaN), id: 0 }),
    "no id": () => kb.answerStrength({ vector: new Float32Array(dim) }),
    "id -1": () => kb.answerStrength({ vector: new Float32Array(dim), id: -1 }),
    "id past the end": () => kb.answerStrength({ vector: new Float32Array(dim), id: kb.count }),
    "id not a number": () => kb.answerStrength({ vector: new Float32Array(dim), id: "0" }),
    "no argument": () => kb.answerStrength(),
  };
  const answers = {};
  for (const [name, fn] of Object.entries(checks)) answers[name] = await outcome(fn);
  kb.close();
  answers["answer strength after close"] = await outcome(() => kb.answerStrength({ vector: new Float32Array(dim), id: 0 }));
  answers["min strength after close"] = await outcome(() => kb.minStrength());
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
  // with r.where: scoped, as search({ where }) (how "where") or through a Filter compiled first (how "filter")
  search: async (r) => {
    const kb = await bundle(r.path);
    const query = { vector: r.vector ?? undefined, question: r.question ?? undefined, k: r.k, mode: r.mode, unit: r.unit };
    if (r.where && r.how === "filter") {
      const filter = kb.filter(r.where);
      try {
        return kb.search({ ...query, filter });
      } finally {
        filter.close();
      }
    }
    return kb.search({ ...query, where: r.where ?? undefined });
  },
  filter: async (r) => {
    const f = (await bundle(r.path)).filter(r.where);
    f.close();
    return { matched: f.matched, closed: f.closed };
  },
  filterMisuse: async (r) => filterMisuse(r.path, r.other),
  chunk: async (r) => (await bundle(r.path)).chunk(r.id),
  probes: async (r) => (await bundle(r.path)).probes(),
  probeCheck: async (r) => (await bundle(r.path)).probeCheck(r.vectors),
  encoder: async (r) => {
    const e = await (await bundle(r.path)).encoder();
    return e && { graphBytes: e.graph.length, tokenizerJson: e.tokenizerJson.length, settings: e.settings };
  },
  misuse: async (r) => misuse(r.path),
  // the answer strength of chunk r.id for r.vector, and the bundle's threshold
  answer: async (r) => {
    const kb = await bundle(r.path);
    return { ...kb.answerStrength({ vector: r.vector, id: r.id }), minStrength: kb.minStrength() };
  },
  answerMisuse: async (r) => answerMisuse(r.path),
};

const answers = [];
for (const r of requests) {
  const op = OPS[r.op];
  answers.push(op ? await outcome(() => op(r)) : { crash: `unknown op ${r.op}` });
}
for (const kb of handles.values()) kb.close();
// BigInt (an integer field beyond 2^53) as a decimal string: JSON has no BigInt
process.stdout.write(JSON.stringify(answers, (_, v) => (typeof v === "bigint" ? v.toString() : v)));
