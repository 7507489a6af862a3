// kbpack.mjs: read kbc bundles (.kbpack) from JavaScript: libkbpack (runtimes/c) compiled to
// WebAssembly (kbpack.wasm, built by runtimes/js/Makefile), wrapped with the operations of kbpack.h.
//
//   import { openFile, open } from "./kbpack.mjs";
//   const kb = await openFile("kb.kbpack");           // Node; in a browser: await open(await (await fetch(url)).arrayBuffer())
//   const { hits } = kb.search({ vector: queryEmbedding, question: "How do I rotate the logs?", k: 5 });
//   for (const h of hits) console.log(h.score, kb.chunk(h.id).sourcePath);
//   kb.search({ question: "torque", mode: "lexical", where: ["product=x200", "year>=2022"] });  // scoped (FORMAT.md 2.10)
//   const { strength, confident } = kb.answerStrength({ vector: queryEmbedding, id: hits[0].id });  // false: no confident answer
//   kb.close();
//
// Every failure is a KbpackError carrying libkbpack's one-line message, its status (a number, as
// kbp_status) and the damaged part; nothing else is thrown for a bad bundle or a bad argument.
//
// Each open bundle gets its own instance of the module (its own linear memory): closing a bundle
// lets the garbage collector take all of its memory back (a WebAssembly memory never shrinks), and
// a fault in one handle cannot corrupt another. Opening copies the bundle into that memory twice for
// a moment (the staging copy is freed once kbp_open_memory has taken its own): a bundle needs about
// its size in memory while open, twice its size while opening, and must be under 2 GiB.

const STATUS_NAMES = ["ok", "io", "invalid", "argument", "not_present", "memory"];
export const Status = Object.freeze({ OK: 0, IO: 1, INVALID: 2, ARGUMENT: 3, NOT_PRESENT: 4, MEMORY: 5 });
const MODES = { default: 0, dense: 1, lexical: 2, hybrid: 3 };
const MODE_NAMES = ["default", "dense", "lexical", "hybrid"];
const UNITS = { default: 0, chunk: 1, page: 2 };
const FIELD_NAMES = ["source", "seq", "pageStart", "pageEnd", "charStart", "charEnd", "tokens"];
// kbp_open_memory's copy, the staging copy and the scratch must fit a 4 GiB memory
const MAX_BUNDLE_BYTES = 2 ** 31 - 1;
const MAX_CONDITIONS = 64; // kbp_filter_compile's limit

export class KbpackError extends Error {
  constructor(message, status, part = "") {
    super(message);
    this.name = "KbpackError";
    this.status = status; // a kbp_status number (Status.INVALID, ...)
    this.statusName = STATUS_NAMES[status] ?? "unknown";
    this.part = part; // "header", "chunks", ... ; "" when it is not the bundle's fault
  }
}

const argumentError = (message) => new KbpackError(message, Status.ARGUMENT);

// The order in which kbpack_wasm.c's layout table lists sizes and offsets.
const LAYOUT_FIELDS = [
  "error", "error.status", "error.part", "error.message",
  "hit", "hit.id", "hit.score",
  "string", "string.s", "string.len",
  "chunk", "chunk.id", "chunk.text", "chunk.context", "chunk.source_path", "chunk.source", "chunk.seq",
  "chunk.page_start", "chunk.page_end", "chunk.char_start", "chunk.char_end", "chunk.tokens", "chunk.label_start",
  "chunk.label_end", "chunk.record", "chunk.fields",
  "page", "page.score", "page.source", "page.record", "page.page", "page.n_chunks", "page.chunk_ids",
  "page.chunk_scores",
  "probe", "probe.kind", "probe.input",
  "probe_result", "probe_result.count", "probe_result.threshold", "probe_result.min_cosine",
  "probe_result.mean_cosine", "probe_result.worst", "probe_result.passed",
  "section", "section.name", "section.encoding", "section.offset", "section.length", "section.sha256",
  "section.known",
  "encoder", "encoder.graph", "encoder.graph_len", "encoder.tokenizer", "encoder.tokenizer_len",
  "encoder.settings", "encoder.settings_len",
  "sizeof_pointer", "sizeof_size_t", "format_major", "format_minor", "max_page_chunks", "entries",
];

const isNode = typeof process !== "undefined" && process.versions != null && process.versions.node != null;
let defaultModule = null; // Promise<WebAssembly.Module> for the kbpack.wasm beside this file

async function wasmBytesBesideThisFile() {
  const places = [new URL("./kbpack.wasm", import.meta.url), new URL("./build/kbpack.wasm", import.meta.url)];
  if (isNode) {
    const { readFile } = await import("node:fs/promises");
    for (const url of places) {
      try {
        return await readFile(url);
      } catch (e) {
        if (e.code !== "ENOENT") throw e;
      }
    }
    throw new KbpackError("kbpack.wasm not found beside kbpack.mjs (run `make -C runtimes/js`)", Status.IO);
  }
  const response = await fetch(places[0]);
  if (!response.ok) throw new KbpackError(`kbpack.wasm: ${response.status} ${response.statusText}`, Status.IO);
  return response.arrayBuffer();
}

// The compiled module: `wasm` may be a WebAssembly.Module, the .wasm's bytes, a URL or (Node) a path;
// by default kbpack.wasm beside this file (or in build/ under it). Compiled once and reused.
export async function loadModule(wasm) {
  if (wasm instanceof WebAssembly.Module) return wasm;
  if (wasm === undefined) return (defaultModule ??= wasmBytesBesideThisFile().then((b) => WebAssembly.compile(b)));
  if (typeof wasm === "string" || wasm instanceof URL) {
    if (isNode && (typeof wasm === "string" || wasm.protocol === "file:")) {
      const { readFile } = await import("node:fs/promises");
      return WebAssembly.compile(await readFile(wasm));
    }
    return WebAssembly.compile(await (await fetch(wasm)).arrayBuffer());
  }
  return WebAssembly.compile(wasm);
}

// The module's only imports are three WASI calls its C library links for stdio (fd_write, fd_seek,
// fd_close), which libkbpack never makes; each answers "bad file descriptor" so nothing reaches the
// host. Built from the module's import list, so a rebuilt module that imports one more still loads.
function wasiStubs(module) {
  const EBADF = 8, ENOSYS = 52;
  const stubs = {};
  for (const imp of WebAssembly.Module.imports(module)) {
    if (imp.module !== "wasi_snapshot_preview1" || imp.kind !== "function") continue;
    stubs[imp.name] = imp.name === "proc_exit"
      ? (code) => { throw new WebAssembly.RuntimeError(`libkbpack exited (${code})`); }
      : imp.name.startsWith("fd_") ? () => EBADF : () => ENOSYS;
  }
  return { wasi_snapshot_preview1: stubs };
}

async function instantiate(options) {
  const module = await loadModule(options?.wasm);
  const instance = await WebAssembly.instantiate(module, wasiStubs(module));
  const ex = instance.exports;
  ex._initialize?.();
  const table = new Uint32Array(ex.memory.buffer, ex.kbpjs_layout(), LAYOUT_FIELDS.length).slice();
  if (table[LAYOUT_FIELDS.length - 1] !== LAYOUT_FIELDS.length || table[LAYOUT_FIELDS.indexOf("sizeof_pointer")] !== 4)
    throw new KbpackError("kbpack.wasm does not match kbpack.mjs (rebuild both from one checkout)", Status.ARGUMENT);
  const layout = Object.fromEntries(LAYOUT_FIELDS.map((name, i) => [name, table[i]]));
  return { ex, layout };
}

const utf8Encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8");

// Open a bundle held in memory: an ArrayBuffer, a typed array or a DataView (a Node Buffer too). The
// bytes are copied; the caller's buffer may change or go as soon as the promise resolves.
export async function open(bytes, options) {
  let view;
  if (bytes instanceof ArrayBuffer) view = new Uint8Array(bytes);
  else if (ArrayBuffer.isView(bytes)) view = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  else throw argumentError("open() takes the bundle's bytes: an ArrayBuffer or a typed array");
  if (view.byteLength > MAX_BUNDLE_BYTES)
    throw argumentError(`the bundle is ${view.byteLength} bytes; the WebAssembly build opens bundles under 2 GiB`);
  const { ex, layout } = await instantiate(options);
  return new Bundle(ex, layout, view);
}

// Node only: open the bundle at `path` (read whole into memory; see open()).
export async function openFile(path, options) {
  if (!isNode) throw argumentError("openFile() needs Node; in a browser, fetch the bytes and call open()");
  const { open: openHandle } = await import("node:fs/promises");
  let file;
  try {
    file = await openHandle(path, "r");
    const stat = await file.stat();
    if (!stat.isFile()) throw new KbpackError(`${path}: not a regular file`, Status.IO);
    if (stat.size > MAX_BUNDLE_BYTES)
      throw argumentError(`${path}: ${stat.size} bytes; the WebAssembly build opens bundles under 2 GiB`);
    return await open(await file.readFile(), options);
  } catch (e) {
    if (e instanceof KbpackError) throw e;
    throw new KbpackError(`${path}: cannot read: ${e.message}`, Status.IO);
  } finally {
    await file?.close();
  }
}

// A compiled scoped-search filter (libkbpack's kbp_filter), made by Bundle.filter(conditions) and
// passed as search({ filter }): compiled once, reused across questions. It belongs to the bundle
// that compiled it (its pointer means nothing in another bundle's memory) and is freed by close()
// or when that bundle closes.
export class Filter {
  #release; // frees the kbp_filter once; set by Bundle.filter
  #bundle;
  #matched;
  constructor(bundle, matched, release) {
    this.#bundle = bundle;
    this.#matched = matched;
    this.#release = release;
  }
  get bundle() { return this.#bundle; }
  get matched() { return this.#matched; } // how many chunks the filter keeps
  get closed() { return this.#release === null; }
  close() {
    this.#release?.();
    this.#release = null;
  }
}

export class Bundle {
  #ex;
  #layout;
  #kb = 0; // the kbp_bundle pointer; 0 once closed
  #dim = 0;
  #count = 0;
  #filters = new Map(); // Filter -> its kbp_filter pointer; libkbpack needs them freed before kbp_close

  constructor(ex, layout, view) {
    this.#ex = ex;
    this.#layout = layout;
    const L = layout;
    const data = ex.malloc(Math.max(view.byteLength, 1));
    const out = ex.malloc(4);
    const err = ex.malloc(L.error);
    if (!data || !out || !err) throw new KbpackError("out of memory copying the bundle into WebAssembly", Status.MEMORY);
    this.#u8().set(view, data);
    const status = this.#guard(() => ex.kbp_open_memory(data, view.byteLength, out, err));
    ex.free(data); // (after a trap #guard has thrown: the instance is dropped whole)
    if (status !== Status.OK) {
      const e = this.#errorAt(err);
      ex.free(out);
      ex.free(err);
      throw e;
    }
    this.#kb = this.#dv().getUint32(out, true);
    ex.free(out);
    ex.free(err);
    this.#dim = Number(ex.kbp_dim(this.#kb)) >>> 0;
    this.#count = Number(ex.kbp_count(this.#kb));
  }

  // ---- memory helpers: views are made afresh each time, since a memory.grow detaches old ones
  #u8() { return new Uint8Array(this.#ex.memory.buffer); }
  #dv() { return new DataView(this.#ex.memory.buffer); }
  #cstring(ptr) {
    if (!ptr) return "";
    const u8 = this.#u8();
    let end = ptr;
    while (u8[end] !== 0) end++;
    return decoder.decode(u8.subarray(ptr, end));
  }
  // a kbp_string at `at`: its text, or null when absent (s == NULL)
  #kstring(at) {
    const dv = this.#dv();
    const s = dv.getUint32(at + this.#layout["string.s"], true);
    if (!s) return null;
    const len = dv.getUint32(at + this.#layout["string.len"], true);
    return decoder.decode(this.#u8().subarray(s, s + len));
  }
  #int64(at) {
    const v = this.#dv().getBigInt64(at, true);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  #errorAt(ptr) {
    const L = this.#layout;
    const status = this.#dv().getInt32(ptr + L["error.status"], true);
    return new KbpackError(this.#cstring(ptr + L["error.message"]), status, this.#cstring(ptr + L["error.part"]));
  }
  #lastError() { return this.#errorAt(this.#ex.kbp_last_error(this.#kb)); }
  #check(status) {
    if (status !== Status.OK) throw this.#lastError();
  }

  // A trap (a bug in libkbpack or memory exhausted beyond what malloc reports) leaves the instance's
  // state unknown: the handle is dropped and the caller gets a KbpackError, never a RuntimeError.
  #guard(fn) {
    try {
      return fn();
    } catch (e) {
      if (!(e instanceof WebAssembly.RuntimeError || e instanceof RangeError)) throw e;
      this.#kb = 0;
      this.#ex = null;
      throw new KbpackError(`libkbpack stopped (${e.message}); this bundle is closed`, Status.MEMORY);
    }
  }
  #live() {
    if (!this.#kb) throw argumentError("this bundle is closed");
    return this.#ex;
  }
  // malloc'd scratch for one call, freed whatever happens
  #withScratch(sizes, fn) {
    const ex = this.#live();
    const ptrs = sizes.map((n) => ex.malloc(Math.max(n, 1)));
    try {
      if (ptrs.some((p) => !p)) throw new KbpackError("out of memory", Status.MEMORY);
      return this.#guard(() => fn(...ptrs));
    } finally {
      if (this.#ex) for (const p of ptrs) if (p) this.#ex.free(p);
    }
  }

  get closed() { return !this.#kb; }

  close() {
    for (const f of [...this.#filters.keys()]) f.close();
    if (this.#kb) this.#ex.kbp_close(this.#kb);
    this.#kb = 0;
    this.#ex = null; // the instance and its memory go with the last reference
  }

  // Every check `kbc inspect --verify` makes (kbp_verify); throws a KbpackError naming the first damaged part.
  verify() {
    const ex = this.#live();
    this.#check(this.#guard(() => ex.kbp_verify(this.#kb)));
    return true;
  }

  get count() { this.#live(); return this.#count; }
  get dim() { this.#live(); return this.#dim; }

  // What the bundle holds: kbpack.h's accessors in one object.
  info() {
    const ex = this.#live();
    const L = this.#layout;
    return this.#withScratch([8, 8, L.section], (a, b, sec) => {
      const dv = () => this.#dv();
      ex.kbp_format_version(this.#kb, a, b);
      const formatVersion = [dv().getUint32(a, true), dv().getUint32(b, true)];
      const binary = ex.kbp_binary(this.#kb, a, b) ? { candidates: dv().getUint32(a, true), multiplier: dv().getUint32(b, true) } : null;
      const manifestPtr = ex.kbp_manifest_json(this.#kb, a);
      const manifestJson = decoder.decode(this.#u8().subarray(manifestPtr, manifestPtr + dv().getUint32(a, true)));
      const sections = [];
      const n = ex.kbp_section_count(this.#kb);
      for (let i = 0; i < n; i++) {
        this.#check(ex.kbp_section_at(this.#kb, i, sec));
        const shaPtr = dv().getUint32(sec + L["section.sha256"], true);
        sections.push({
          name: this.#cstring(dv().getUint32(sec + L["section.name"], true)),
          encoding: this.#cstring(dv().getUint32(sec + L["section.encoding"], true)),
          offset: Number(dv().getBigUint64(sec + L["section.offset"], true)),
          length: Number(dv().getBigUint64(sec + L["section.length"], true)),
          sha256: Array.from(this.#u8().subarray(shaPtr, shaPtr + 32), (x) => x.toString(16).padStart(2, "0")).join(""),
          known: dv().getInt32(sec + L["section.known"], true) === 1,
        });
      }
      return {
        formatVersion,
        count: this.#count,
        dim: this.#dim,
        dtype: this.#cstring(ex.kbp_dtype(this.#kb)),
        blockSize: Number(ex.kbp_block_size(this.#kb)),
        binary,
        embedder: this.#cstring(ex.kbp_embedder_name(this.#kb)),
        hasLexical: ex.kbp_has_lexical(this.#kb) === 1,
        manifestJson,
        sections,
      };
    });
  }

  // The mode a search asking for `mode` uses ("default" resolves to the manifest's retrieval.default_mode).
  resolveMode(mode = "default") {
    const requested = MODES[mode];
    if (requested === undefined) throw argumentError(`unknown mode ${JSON.stringify(mode)}: default, dense, lexical or hybrid`);
    return this.#withScratch([4], (out) => {
      this.#check(this.#ex.kbp_resolve_mode(this.#kb, requested, out));
      return MODE_NAMES[this.#dv().getInt32(out, true)];
    });
  }

  // The manifest's retrieval.unit: "chunk" or "page".
  defaultUnit() {
    return this.#withScratch([4], (out) => {
      this.#check(this.#ex.kbp_default_unit(this.#kb, out));
      return this.#dv().getInt32(out, true) === UNITS.page ? "page" : "chunk";
    });
  }

  // retrieval.page_depth, page_share and page_chunks.
  pageSettings() {
    return this.#withScratch([4, 8, 4], (depth, share, chunks) => {
      this.#check(this.#ex.kbp_page_settings(this.#kb, depth, share, chunks));
      const dv = this.#dv();
      return { pageDepth: dv.getUint32(depth, true), pageShare: dv.getFloat64(share, true), pageChunks: dv.getUint32(chunks, true) };
    });
  }

  // The query vector as dim float32s (a Float32Array or an array of numbers), or null when absent.
  #vectorBytes(vector, rows = 1, what = "the query vector") {
    if (vector === undefined || vector === null) return null;
    if (!(vector instanceof Float32Array || Array.isArray(vector) || ArrayBuffer.isView(vector)))
      throw argumentError(`${what} must be a Float32Array or an array of numbers`);
    if (vector.length !== rows * this.#dim)
      throw argumentError(`${what} has ${vector.length} values; this bundle needs ${rows * this.#dim} (${rows} x dim ${this.#dim})`);
    const f32 = vector instanceof Float32Array ? vector : Float32Array.from(vector, Number);
    return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  }

  // Compile conditions, all of which a chunk must meet, as `kbc query --where` takes them: "path:GLOB",
  // "key=value" (a list of values: any of them), "key>=value" (>, <, >=, <= on integers and dates).
  // A condition the bundle cannot apply (an unknown key, a bad operator), or a bundle without
  // attributes, is a KbpackError (status ARGUMENT) with libkbpack's one line naming it.
  filter(conditions) {
    const ptr = this.#compile(conditions);
    const matched = Number(this.#ex.kbp_filter_matched(ptr));
    const f = new Filter(this, matched, () => {
      this.#filters.delete(f);
      if (this.#ex) this.#ex.kbp_filter_free(ptr); // after a trap the whole instance is gone already
    });
    this.#filters.set(f, ptr);
    return f;
  }

  // kbp_filter_compile of a condition or a list of them: the new kbp_filter pointer, to free.
  #compile(conditions) {
    this.#live();
    const list = typeof conditions === "string" ? [conditions] : conditions;
    if (!Array.isArray(list) || list.length === 0 || list.length > MAX_CONDITIONS)
      throw argumentError(`filter: give 1 to ${MAX_CONDITIONS} conditions (strings such as "product=x200")`);
    const encoded = list.map((c, i) => {
      if (typeof c !== "string" || c === "" || c.includes("\0"))
        throw argumentError(`filter: condition ${i} is not a non-empty string without NUL`);
      return utf8Encoder.encode(c);
    });
    const offsets = [];
    let size = 0;
    for (const e of encoded) {
      offsets.push(size);
      size += e.byteLength + 1;
    }
    return this.#withScratch([size, 4 * encoded.length, 4], (strings, pointers, out) => {
      const u8 = this.#u8();
      const dv = this.#dv();
      encoded.forEach((e, i) => {
        u8.set(e, strings + offsets[i]);
        u8[strings + offsets[i] + e.byteLength] = 0;
        dv.setUint32(pointers + 4 * i, strings + offsets[i], true);
      });
      this.#check(this.#ex.kbp_filter_compile(this.#kb, pointers, encoded.length, out));
      return this.#dv().getUint32(out, true);
    });
  }

  // The kbp_filter a search runs in: the given Filter's, or one compiled from `where` for this search
  // alone (temporary: true, freed after it); null for the whole bundle.
  #scope(filter, where) {
    if (filter !== undefined && filter !== null) {
      if (where !== undefined && where !== null) throw argumentError("search: give a filter or where conditions, not both");
      if (!(filter instanceof Filter)) throw argumentError("search: filter must be a Filter made by Bundle.filter()");
      if (filter.bundle !== this) throw argumentError("search: the filter was compiled on another bundle");
      if (filter.closed) throw argumentError("search: the filter is closed");
      return { ptr: this.#filters.get(filter), matched: filter.matched, temporary: false };
    }
    if (where === undefined || where === null) return null;
    const ptr = this.#compile(where);
    return { ptr, matched: Number(this.#ex.kbp_filter_matched(ptr)), temporary: true };
  }

  // search({ vector, question, k = 10, mode = "default", unit = "default" }): kbp_search or
  // kbp_search_pages. vector: the question embedded as the bundle's embedder says (dense, hybrid);
  // question: its text (lexical, hybrid). Returns { mode, unit, hits }: for the chunk unit hits are
  // { id, score } best first; for the page unit { score, source, record, page, chunks: [{ id, score }] }.
  // Scoped (kbp_search_filtered, kbp_search_pages_filtered): `where`, conditions as filter() takes
  // them, compiled for this search alone, or `filter`, one compiled by filter(). `matched` is how many
  // chunks the search ran over: the scope's, or the whole bundle's count.
  search({ vector, question, k = 10, mode = "default", unit = "default", where, filter } = {}) {
    this.#live();
    if (!Number.isInteger(k) || k < 0) throw argumentError(`k must be a whole number >= 0, not ${k}`);
    if (UNITS[unit] === undefined) throw argumentError(`unknown unit ${JSON.stringify(unit)}: default, chunk or page`);
    if (question !== undefined && question !== null && typeof question !== "string") throw argumentError("the question must be a string");
    const used = this.resolveMode(mode);
    const resolvedUnit = unit === "default" ? this.defaultUnit() : unit;
    const vec = this.#vectorBytes(vector);
    const text = question == null ? null : utf8Encoder.encode(question);
    const L = this.#layout;
    const pageUnit = resolvedUnit === "page";
    const cap = pageUnit ? Math.min(k, this.pageSettings().pageDepth) : Math.min(k, this.#count);
    const sizes = [vec ? vec.byteLength : 0, text ? text.byteLength + 1 : 0, cap * (pageUnit ? L.page : L.hit), 4];
    const scope = this.#scope(filter, where);
    try {
      return this.#searchIn(scope, sizes, vec, text, pageUnit, used, resolvedUnit, cap);
    } finally {
      if (scope?.temporary && this.#ex) this.#ex.kbp_filter_free(scope.ptr);
    }
  }

  #searchIn(scope, sizes, vec, text, pageUnit, used, resolvedUnit, cap) {
    const L = this.#layout;
    return this.#withScratch(sizes, (q, qs, out, n) => {
      const u8 = this.#u8();
      if (vec) u8.set(vec, q);
      if (text) {
        u8.set(text, qs);
        u8[qs + text.byteLength] = 0;
      }
      const fn = pageUnit ? this.#ex.kbp_search_pages_filtered : this.#ex.kbp_search_filtered;
      this.#check(fn(this.#kb, vec ? q : 0, text ? qs : 0, cap, MODES[used], scope ? scope.ptr : 0, out, n));
      const dv = this.#dv();
      const found = dv.getUint32(n, true);
      const hits = [];
      for (let i = 0; i < found; i++) {
        if (!pageUnit) {
          const at = out + i * L.hit;
          hits.push({ id: Number(dv.getBigUint64(at + L["hit.id"], true)), score: dv.getFloat64(at + L["hit.score"], true) });
          continue;
        }
        const at = out + i * L.page;
        const chunks = [];
        const nChunks = dv.getUint32(at + L["page.n_chunks"], true);
        for (let j = 0; j < nChunks; j++)
          chunks.push({ id: Number(dv.getBigUint64(at + L["page.chunk_ids"] + 8 * j, true)),
                        score: dv.getFloat64(at + L["page.chunk_scores"] + 8 * j, true) });
        hits.push({ score: dv.getFloat64(at + L["page.score"], true), source: this.#int64(at + L["page.source"]),
                    record: this.#kstring(at + L["page.record"]), page: this.#int64(at + L["page.page"]), chunks });
      }
      return { mode: used, unit: resolvedUnit, matched: scope ? scope.matched : this.#count, hits };
    });
  }

  // answerStrength({ vector, id }): how strongly the bundle answers a question (kbp_answer_strength,
  // FORMAT.md 2.11). strength: the inner product of the question's `vector` with chunk `id`'s stored
  // vector, `id` being the first hit of a dense or hybrid search (for pages, hits[0].chunks[0].id): the
  // cosine, one meaning across questions, where a hybrid score is about 1 for the best of nothing.
  // confident: false under the bundle's threshold (manifest retrieval.min_strength), "no confident
  // answer" (the hits are still the best there are); true at or above it; null when the bundle records
  // none. Lexical search embeds no question and so has no strength.
  answerStrength({ vector, id } = {}) {
    this.#live();
    if (!Number.isInteger(id) || id < 0) throw argumentError(`answerStrength: a chunk id is a whole number >= 0, not ${id}`);
    const vec = this.#vectorBytes(vector);
    if (!vec) throw argumentError("answerStrength: needs the question's vector");
    return this.#withScratch([vec.byteLength, 8, 4], (q, strength, confident) => {
      this.#u8().set(vec, q);
      this.#check(this.#ex.kbp_answer_strength(this.#kb, q, BigInt(id), strength, confident));
      const dv = this.#dv();
      const verdict = dv.getInt32(confident, true); // 1, 0, or -1: no threshold
      return { strength: dv.getFloat64(strength, true), confident: verdict < 0 ? null : verdict === 1 };
    });
  }

  // The bundle's answer-strength threshold (manifest retrieval.min_strength), null when it records none.
  minStrength() {
    this.#live();
    return this.#withScratch([8], (t) => {
      const status = this.#ex.kbp_min_strength(this.#kb, t);
      if (status === Status.NOT_PRESENT) return null;
      this.#check(status);
      return this.#dv().getFloat64(t, true);
    });
  }

  // Chunk `id` with its provenance (kbp_chunk_get). Integer fields the record lacks are null.
  chunk(id) {
    this.#live();
    if (!Number.isInteger(id) || id < 0) throw argumentError(`a chunk id is a whole number >= 0, not ${id}`);
    const L = this.#layout;
    return this.#withScratch([L.chunk], (c) => {
      this.#check(this.#ex.kbp_chunk_get(this.#kb, BigInt(id), c));
      const fields = this.#dv().getUint32(c + L["chunk.fields"], true);
      const ints = ["source", "seq", "page_start", "page_end", "char_start", "char_end", "tokens"];
      const chunk = {
        id,
        text: this.#kstring(c + L["chunk.text"]),
        context: this.#kstring(c + L["chunk.context"]),
        sourcePath: this.#kstring(c + L["chunk.source_path"]),
        labelStart: this.#kstring(c + L["chunk.label_start"]),
        labelEnd: this.#kstring(c + L["chunk.label_end"]),
        record: this.#kstring(c + L["chunk.record"]),
      };
      ints.forEach((name, bit) => {
        chunk[FIELD_NAMES[bit]] = fields & (1 << bit) ? this.#int64(c + L[`chunk.${name}`]) : null;
      });
      return chunk;
    });
  }

  // The embedder probes: [{ kind, input }], input being exactly what an engine must embed. [] without probes.
  probes() {
    const L = this.#layout;
    return this.#withScratch([4, L.probe], (n, p) => {
      const status = this.#ex.kbp_probe_count(this.#kb, n);
      if (status === Status.NOT_PRESENT) return [];
      this.#check(status);
      const out = [];
      for (let i = 0, count = this.#dv().getUint32(n, true); i < count; i++) {
        this.#check(this.#ex.kbp_probe_get(this.#kb, i, p));
        out.push({ kind: this.#kstring(p + L["probe.kind"]), input: this.#kstring(p + L["probe.input"]) });
      }
      return out;
    });
  }

  // An engine's probe vectors (one per probe, in order: a Float32Array of n x dim, or an array of
  // n vectors) against the bundle's (kbp_probe_check). A failed check is a result with passed: false.
  probeCheck(vectors) {
    this.#live();
    const rows = Array.isArray(vectors) && vectors.length && typeof vectors[0] !== "number" ? vectors.length : null;
    let flat = vectors;
    if (rows !== null) {
      flat = new Float32Array(rows * this.#dim);
      vectors.forEach((v, i) => {
        if (!v || v.length !== this.#dim) throw argumentError(`probe vector ${i} has ${v?.length} values; this bundle needs ${this.#dim}`);
        flat.set(v, i * this.#dim);
      });
    }
    const n = flat?.length !== undefined && this.#dim ? Math.floor(flat.length / this.#dim) : 0;
    const bytes = this.#vectorBytes(flat, n, "the probe vectors");
    const L = this.#layout;
    return this.#withScratch([bytes ? bytes.byteLength : 0, 8 * n, L.probe_result], (v, cos, r) => {
      if (bytes) this.#u8().set(bytes, v);
      this.#check(this.#ex.kbp_probe_check(this.#kb, bytes ? v : 0, n, cos, r));
      const dv = this.#dv();
      return {
        count: dv.getUint32(r + L["probe_result.count"], true),
        threshold: dv.getFloat64(r + L["probe_result.threshold"], true),
        minCosine: dv.getFloat64(r + L["probe_result.min_cosine"], true),
        meanCosine: dv.getFloat64(r + L["probe_result.mean_cosine"], true),
        worst: dv.getUint32(r + L["probe_result.worst"], true),
        passed: dv.getInt32(r + L["probe_result.passed"], true) === 1,
        cosines: Array.from({ length: n }, (_, i) => dv.getFloat64(cos + 8 * i, true)),
      };
    });
  }

  // The stored query encoder (format 1.3), checked as kbc checks it: { graph (a Uint8Array copy of
  // the ONNX bytes, for onnxruntime-web), tokenizerJson, settings (the manifest's encoder object) },
  // or null when the bundle has none.
  encoder() {
    const L = this.#layout;
    return this.#withScratch([L.encoder], (e) => {
      const status = this.#ex.kbp_encoder_get(this.#kb, e);
      if (status === Status.NOT_PRESENT) return null;
      this.#check(status);
      const dv = this.#dv();
      const field = (name) => [dv.getUint32(e + L[`encoder.${name}`], true), dv.getUint32(e + L[`encoder.${name}_len`], true)];
      const [g, gl] = field("graph"), [t, tl] = field("tokenizer"), [s, sl] = field("settings");
      const u8 = this.#u8();
      return { graph: u8.slice(g, g + gl), tokenizerJson: decoder.decode(u8.subarray(t, t + tl)),
               settings: JSON.parse(decoder.decode(u8.subarray(s, s + sl))) };
    });
  }
}
