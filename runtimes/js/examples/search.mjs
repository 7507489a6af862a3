// Open a bundle, search it, print the best chunk with its source and page.
//   node examples/search.mjs kb.kbpack "How do I rotate the logs?" [q.f32]
// q.f32: the question embedded as the bundle's embedder embeds it (raw little-endian float32, e.g. from
// runtimes/python/kbpack_encoder.py kb.kbpack "question" --out q.f32, or an app's own engine); with it
// the bundle's default mode runs (hybrid when it has a lexical index), without it lexical.
// tests/test_runtime_js.py runs this file.
import { readFileSync } from "node:fs";
import { openFile, KbpackError, Status } from "../kbpack.mjs";

const [bundlePath, question, vectorPath] = process.argv.slice(2);
if (!question) {
  console.error("usage: node search.mjs BUNDLE QUESTION [VECTOR.f32]");
  process.exit(2);
}
try {
  const raw = vectorPath ? readFileSync(vectorPath) : null;
  const vector = raw && Float32Array.from({ length: raw.length >> 2 }, (_, i) => raw.readFloatLE(4 * i));
  const kb = await openFile(bundlePath);
  const { hits } = kb.search({ vector, question, k: 3, mode: vector ? "default" : "lexical", unit: "chunk" });
  if (hits.length === 0) console.log("no match");
  else {
    const best = kb.chunk(hits[0].id);
    const page = best.pageStart === null ? "" : ` p. ${best.pageStart}`;
    console.log(`${hits[0].score.toFixed(4)} ${best.sourcePath}${page}\n${best.text}`);
  }
  kb.close();
} catch (e) { // a damaged bundle, a wrong vector: libkbpack's one line
  console.error(e instanceof KbpackError ? `${bundlePath}: ${e.message}` : e.message);
  process.exit(e instanceof KbpackError && e.status === Status.INVALID ? 3 : 2);
}
