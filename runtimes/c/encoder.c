/* libkbpack, encoder.c: the query encoder (FORMAT.md §2.6; Python: Bundle.encoder). The
 * manifest's `encoder` object names two sections, an ONNX graph and a tokenizer.json.
 * kbp_encoder_get checks the record field by field (manifest.schema.json's types and ranges) and
 * that it repeats the embedder's settings, the graph's SHA-256, and tokenizer.json's bounds
 * (size, nesting and shape, as runtimes/python/kbpack_runtime/guard.py) before it hands out the bytes. The ONNX
 * graph itself is walked by onnx_check.c (kbpi_check_graph), as kbpack_runtime.guard.check_graph walks it.
 * kbp_open screens the graph and tokenizer the same way (kbpi_screen_encoder), as Python's open does. */
#include "kbpack_internal.h"

/* The section a manifest string names, or -1 (*name gets it, cut to fit, for the message). */
static int named_section(const kbp_bundle *kb, const char *v, char name[KBP_PART_MAX]) {
  uint8_t buf[KBP_PART_MAX];
  long n = kbpi_jdecode(v, kb->manifest_end, buf, sizeof buf - 1);
  if (n < 0) { /* longer than any section name: no section has it */
    memcpy(name, "encoder", 8);
    return -1;
  }
  memcpy(name, buf, (size_t)n);
  name[n] = 0;
  return strlen(name) == (size_t)n ? kbpi_section_index(kb, name) : -1; /* a NUL inside names nothing */
}

/* 1 when two JSON values are the same string, the same boolean or the same non-negative integer
 * (the encoder fields that must repeat the embedder record); 0 otherwise, including on error. */
static int same_setting(const char *a, const char *b, const char *end) {
  jkind ka = kbpi_jtype(a), kb_ = kbpi_jtype(b);
  if (ka != kb_) return 0;
  if (ka == J_TRUE || ka == J_FALSE) return 1;
  if (ka == J_NUMBER) {
    uint64_t x, y;
    return kbpi_juint(a, end, &x) == 0 && kbpi_juint(b, end, &y) == 0 && x == y;
  }
  if (ka != J_STRING) return 0;
  size_t ca = kbpi_jdecoded_bound(a, end), cb = kbpi_jdecoded_bound(b, end);
  uint8_t *x = malloc(ca + 1), *y = malloc(cb + 1);
  long nx = x ? kbpi_jdecode(a, end, x, ca) : -1, ny = y ? kbpi_jdecode(b, end, y, cb) : -1;
  int same = nx >= 0 && nx == ny && memcmp(x, y, (size_t)nx) == 0;
  free(x);
  free(y);
  return same;
}

/* The encoder object as manifest.schema.json gives it: every field of its type and range, so that
 * an engine reading a verified bundle's encoder record finds what the spec promises. */
static kbp_status check_encoder_record(kbp_bundle *kb, const char *meta) {
  static const char *const strings[] = {"output", "query_prompt", "pooling", "truncation", "batching"};
  static const int required[] = {1, 1, 0, 0, 0};
  const char *end = kb->manifest_end, *v, *item;
  uint64_t u;
  if (!kbpi_jstreq(kbpi_jget(meta, end, "format"), end, "onnx")) return kbpi_invalid(kb, "manifest", "encoder.format must be \"onnx\"");
  v = kbpi_jget(meta, end, "precision");
  if (!kbpi_jstreq(v, end, "float32") && !kbpi_jstreq(v, end, "int8"))
    return kbpi_invalid(kb, "manifest", "encoder.precision must be \"float32\" or \"int8\"");
  jcur it;
  if (!kbpi_jopen(kbpi_jget(meta, end, "inputs"), end, '[', &it)) return kbpi_invalid(kb, "manifest", "encoder.inputs must be a list of strings");
  while (kbpi_jarray_next(&it, &item))
    if (kbpi_jtype(item) != J_STRING) return kbpi_invalid(kb, "manifest", "encoder.inputs must be a list of strings");
  for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
    v = kbpi_jget(meta, end, strings[i]);
    if ((v || required[i]) && kbpi_jtype(v) != J_STRING) return kbpi_invalid(kb, "manifest", "encoder.%s must be a string", strings[i]);
  }
  v = kbpi_jget(meta, end, "query_prompt");
  if (kbpi_jstring_chars(v, end) > MAX_PROMPT_CHARS)
    return kbpi_invalid(kb, "manifest", "encoder.query_prompt must be a string of at most %u characters", MAX_PROMPT_CHARS);
  v = kbpi_jget(meta, end, "do_lower_case");
  if (kbpi_jtype(v) != J_TRUE && kbpi_jtype(v) != J_FALSE) return kbpi_invalid(kb, "manifest", "encoder.do_lower_case must be true or false");
  v = kbpi_jget(meta, end, "normalized");
  if (v && kbpi_jtype(v) != J_TRUE && kbpi_jtype(v) != J_FALSE) return kbpi_invalid(kb, "manifest", "encoder.normalized must be true or false");
  if (kbpi_juint(kbpi_jget(meta, end, "max_seq_length"), end, &u) || u < 1)
    return kbpi_invalid(kb, "manifest", "encoder.max_seq_length must be an integer >= 1");
  v = kbpi_jget(meta, end, "opset");
  if (v && kbpi_juint(v, end, &u)) return kbpi_invalid(kb, "manifest", "encoder.opset must be an integer >= 0");
  return KBP_OK;
}

/* kbpack_runtime/guard.py's bounds on tokenizer.json (FORMAT.md §5.1): its size, its nesting and its shape */
#define MAX_TOKENIZER_BYTES ((uint64_t)32 << 20)
#define MAX_TOKENIZER_DEPTH 32

static kbp_status check_tokenizer(kbp_bundle *kb, const char *part, const char *text, uint64_t n) {
  const char *root, *v, *item;
  if (n > MAX_TOKENIZER_BYTES)
    return kbpi_invalid(kb, part, "%llu bytes exceeds the %llu-byte tokenizer limit", (unsigned long long)n,
                   (unsigned long long)MAX_TOKENIZER_BYTES);
  long depth = 0, deepest = 0;
  for (uint64_t i = 0; i < n; i++) { /* brackets outside strings, before parsing */
    char c = text[i];
    if (c == '"') {
      for (i++; i < n && text[i] != '"'; i++)
        if (text[i] == '\\') i++;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
    } else if (c == ']' || c == '}') {
      depth--;
    }
  }
  if (deepest > MAX_TOKENIZER_DEPTH)
    return kbpi_invalid(kb, part, "JSON nested %ld deep, more than the tokenizer limit of %d", deepest, MAX_TOKENIZER_DEPTH);
  if (kbpi_json_check(text, n, &root)) return kbpi_invalid(kb, part, "invalid JSON (or not UTF-8)");
  const char *end = text + n;
  if (kbpi_jtype(root) != J_OBJECT) return kbpi_invalid(kb, part, "not a tokenizer.json object");
  const char *model = kbpi_jget(root, end, "model"), *type = kbpi_jget(model, end, "type");
  if (kbpi_jtype(model) != J_OBJECT || (type && kbpi_jtype(type) != J_STRING))
    return kbpi_invalid(kb, part, "not a tokenizer.json (its model is not an object)");
  static const char *const parts[] = {"normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    v = kbpi_jget(root, end, parts[i]);
    if (v && kbpi_jtype(v) != J_NULL && kbpi_jtype(v) != J_OBJECT)
      return kbpi_invalid(kb, part, "not a tokenizer.json (%s is neither null nor an object)", parts[i]);
  }
  v = kbpi_jget(root, end, "added_tokens");
  jcur it;
  if (v && !kbpi_jopen(v, end, '[', &it)) return kbpi_invalid(kb, part, "not a tokenizer.json (added_tokens is not a list of token objects)");
  while (v && kbpi_jarray_next(&it, &item))
    if (kbpi_jtype(item) != J_OBJECT || kbpi_jtype(kbpi_jget(item, end, "content")) != J_STRING)
      return kbpi_invalid(kb, part, "not a tokenizer.json (added_tokens is not a list of token objects)");
  return KBP_OK;
}

kbp_status kbp_encoder_get(kbp_bundle *kb, kbp_encoder *out) {
  static const char *const keys[2] = {"graph", "tokenizer"}, *const encodings[2] = {"onnx", "json"};
  const char *end = kb->manifest_end, *meta = kbpi_jget(kb->manifest_root, end, "encoder");
  int idx[2];
  char names[2][KBP_PART_MAX];
  const uint8_t *graph = NULL, *tokenizer = NULL;
  kbp_status st;
  kbpi_clear_error(&kb->err);
  if (kbpi_jtype(meta) == J_NONE || kbpi_jtype(meta) == J_NULL) return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no query encoder");
  if (kbpi_jtype(meta) != J_OBJECT || kbpi_jtype(kbpi_jget(meta, end, "graph")) != J_STRING || kbpi_jtype(kbpi_jget(meta, end, "tokenizer")) != J_STRING)
    return kbpi_invalid(kb, "manifest", "encoder: expected an object naming its graph and tokenizer sections");
  if ((st = check_encoder_record(kb, meta)) != KBP_OK) return st;
  for (int i = 0; i < 2; i++) {
    idx[i] = named_section(kb, kbpi_jget(meta, end, keys[i]), names[i]);
    if (idx[i] < 0) return kbpi_invalid(kb, names[i], "encoder %s section is missing", keys[i]);
    if (strcmp(kb->sections[idx[i]].encoding, encodings[i]) != 0)
      return kbpi_invalid(kb, names[i], "encoding '%s', expected '%s'", kb->sections[idx[i]].encoding, encodings[i]);
  }
  if ((st = kbpi_section_bytes(kb, idx[0], &graph)) != KBP_OK) return st;
  uint8_t digest[32];
  char hex[65];
  kbpi_sha256(graph, kb->sections[idx[0]].length, digest);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  if (!kbpi_jstreq(kbpi_jget(meta, end, "graph_sha256"), end, hex))
    return kbpi_invalid(kb, names[0], "differs from the manifest's encoder.graph_sha256");
  /* the encoder must be the one that made the vectors, run the way the embedder record says */
  const char *embedder = kbpi_jget(kb->manifest_root, end, "embedder");
  if (!same_setting(kbpi_jget(meta, end, "graph_sha256"), kbpi_jget(kbpi_jget(embedder, end, "runtime"), end, "graph_sha256"), end))
    return kbpi_invalid(kb, "manifest", "encoder.graph_sha256 disagrees with embedder.runtime.graph_sha256");
  static const char *const shared[4] = {"query_prompt", "max_seq_length", "do_lower_case", "precision"};
  for (int i = 0; i < 4; i++)
    if (!same_setting(kbpi_jget(meta, end, shared[i]), kbpi_jget(embedder, end, shared[i]), end))
      return kbpi_invalid(kb, "manifest", "encoder.%s disagrees with embedder.%s", shared[i], shared[i]);
  /* the graph is code a bundle's author wrote (FORMAT.md §5.1): walked as kbpack_runtime.guard.check_graph walks it */
  if ((st = kbpi_check_graph(kb, names[0], graph, kb->sections[idx[0]].length)) != KBP_OK) return st;
  const section *t = &kb->sections[idx[1]];
  if (t->length > MAX_TOKENIZER_BYTES)
    return kbpi_invalid(kb, names[1], "%llu bytes exceeds the %llu-byte tokenizer limit", (unsigned long long)t->length,
                   (unsigned long long)MAX_TOKENIZER_BYTES);
  if ((st = kbpi_section_bytes(kb, idx[1], &tokenizer)) != KBP_OK) return st;
  if ((st = check_tokenizer(kb, names[1], (const char *)tokenizer, t->length)) != KBP_OK) return st;
  if (out) {
    jcur c = {meta, end, 0};
    kbpi_jscan_value(&c, 0);
    *out = (kbp_encoder){graph, (size_t)kb->sections[idx[0]].length, (const char *)tokenizer, (size_t)t->length,
                         meta, (size_t)(c.p - meta)};
  }
  return KBP_OK;
}

/* At open (Python: Bundle._screen_encoder, FORMAT.md 5.1 "when any bundle is opened"): the graph is
 * walked and tokenizer.json bounded as kbp_encoder_get does, without hashing the graph first (the walk
 * reads headers and skips weights), so that no call answers from a bundle whose encoder would be
 * refused, a lexical search included. A record that names no sections is kbp_encoder_get's and
 * kbp_verify's to refuse, not opening's, as in Python. On a refusal kbp_encoder_get runs, so the
 * error is the first problem in its (and verify's) order: encoding, checksum, record, then the walk. */
KBP_INTERNAL kbp_status kbpi_screen_encoder(kbp_bundle *kb) {
  const char *end = kb->manifest_end, *meta = kbpi_jget(kb->manifest_root, end, "encoder");
  char names[2][KBP_PART_MAX];
  if (kbpi_jtype(meta) != J_OBJECT) return KBP_OK;
  const char *graph_name = kbpi_jget(meta, end, "graph"), *tokenizer_name = kbpi_jget(meta, end, "tokenizer");
  if (kbpi_jtype(graph_name) != J_STRING || kbpi_jtype(tokenizer_name) != J_STRING) return KBP_OK;
  int g = named_section(kb, graph_name, names[0]), t = named_section(kb, tokenizer_name, names[1]);
  if (g < 0 || t < 0) return KBP_OK;
  /* the table's checks (offset + length within the file) hold: raw bytes, unhashed, as Python's view */
  const section *gs = &kb->sections[g], *ts = &kb->sections[t];
  kbp_status st = kbpi_check_graph(kb, names[0], kb->data + gs->offset, gs->length);
  if (st == KBP_OK) st = check_tokenizer(kb, names[1], (const char *)kb->data + ts->offset, ts->length);
  if (st == KBP_OK) return KBP_OK;
  if (st != KBP_ERR_INVALID) return st; /* out of memory: nothing was refused */
  st = kbp_encoder_get(kb, NULL); /* refuses the same bytes, or something before them */
  return st != KBP_OK ? st : kbpi_invalid(kb, names[0], "encoder refused");
}
