/* fuzz_kbpack: a coverage-guided fuzz target for libkbpack (libFuzzer: `make -C runtimes/c fuzz`).
 *
 * One input is one whole bundle, used as it is and then with its checksums recomputed (as an
 * attacker who edits a bundle recomputes them; tests/forge.py's resign, and the encoder graph's
 * SHA-256 in the manifest as tests/fuzz_seeds.py's with_graph does). It is opened from memory (kbp_open_memory: an exact-size heap
 * copy, so AddressSanitizer sees any read past its end) twice:
 *   handle A is used the way an app uses a bundle it did not verify (info, chunks, every search
 *   mode, pages, probes, the encoder), then verified;
 *   handle B is verified first, then used the same way.
 * Besides memory errors, undefined behaviour, leaks and timeouts, which the sanitizers and libFuzzer
 * report, the target aborts (a finding) when the library breaks one of its own promises:
 *   - an error message that is empty, has a newline, or does not start with its part;
 *   - a search returning more than k hits, an id out of range, a repeated id, or hits out of order;
 *   - a bundle kbp_verify calls intact whose chunks, searches, probes or encoder then fail as
 *     invalid (FORMAT.md §5: verify means any conforming use of the bundle works);
 *   - the two handles disagreeing on verify's verdict, or on the part it names (a check made
 *     lazily must reach the verdict kbp_verify reaches).
 *
 * Built with -DKBP_FUZZ_MAIN (the `asan` target, any C compiler) it is a plain program instead:
 * `fuzz_kbpack FILE...` runs each file through the same target and prints "ok N"; that is how the
 * seed corpus and every past finding are replayed under gcc's sanitizers without libFuzzer. */
#define _POSIX_C_SOURCE 200809L /* strnlen */

#include "kbpack.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_QUESTION_BYTES 4096 /* of the first chunk's text, used as a question */
#define MAX_PROBES_READ 64
#define K_SMALL 3

static void finding(const char *what, const char *detail) {
  fprintf(stderr, "fuzz_kbpack: broken promise: %s: %s\n", what, detail ? detail : "");
  abort();
}

/* Every failure carries one line that starts with its part (kbpack.h, "Errors"). */
static kbp_status checked(kbp_bundle *kb, kbp_status st, const char *what) {
  if (st == KBP_OK) return st;
  const kbp_error *e = kbp_last_error(kb);
  if (!e || e->status != st) finding(what, "status differs from kbp_last_error");
  size_t n = strnlen(e->message, KBP_MESSAGE_MAX);
  if (n == 0 || n == KBP_MESSAGE_MAX) finding(what, "message empty or not terminated");
  if (strchr(e->message, '\n') || strchr(e->message, '\r')) finding(what, e->message);
  size_t p = strnlen(e->part, KBP_PART_MAX);
  if (p == KBP_PART_MAX) finding(what, "part not terminated");
  if (p && (strncmp(e->message, e->part, p) != 0 || strncmp(e->message + p, ": ", 2) != 0)) finding(what, e->message);
  return st;
}

static void check_hits(const kbp_bundle *kb, const kbp_hit *hits, size_t n, size_t k, const char *what) {
  if (n > k) finding(what, "more hits than asked for");
  for (size_t i = 0; i < n; i++) {
    if (hits[i].id >= kbp_count(kb)) finding(what, "hit id out of range");
    for (size_t j = 0; j < i; j++)
      if (hits[j].id == hits[i].id) finding(what, "an id returned twice");
    /* best first, lower id first on equal scores; a NaN never reaches the caller */
    if (hits[i].score != hits[i].score) finding(what, "a NaN score");
    if (i && (hits[i - 1].score < hits[i].score || (hits[i - 1].score == hits[i].score && hits[i - 1].id > hits[i].id)))
      finding(what, "hits out of order");
  }
}

/* Fails only when the bundle was verified intact and the call calls it invalid. */
static void use_ok(int verified, kbp_bundle *kb, kbp_status st, const char *what) {
  checked(kb, st, what);
  if (verified && st == KBP_ERR_INVALID) finding(what, kbp_last_error(kb)->message);
}

static void use(kbp_bundle *kb, int verified) {
  unsigned major, minor, candidates, multiplier;
  size_t len;
  kbp_format_version(kb, &major, &minor);
  (void)kbp_binary(kb, &candidates, &multiplier);
  (void)kbp_dtype(kb);
  (void)kbp_block_size(kb);
  kbp_manifest_json(kb, &len);
  if (strlen(kbp_embedder_name(kb)) > len) finding("name", "longer than the manifest it comes from");
  for (size_t i = 0; i < kbp_section_count(kb); i++) {
    kbp_section s;
    if (kbp_section_at(kb, i, &s) != KBP_OK || strlen(s.name) == 0 || strlen(s.name) > 32) finding("section", "");
  }
  uint64_t count = kbp_count(kb);
  size_t dim = kbp_dim(kb);

  /* chunks: the first, the last, one in the middle; the first's text becomes a question */
  char question[MAX_QUESTION_BYTES + 1] = "how often is the pump oiled 2018";
  kbp_chunk c;
  uint64_t ids[3] = {0, count / 2, count ? count - 1 : 0};
  for (int i = 0; i < 3 && count; i++) {
    kbp_status st = checked(kb, kbp_chunk_get(kb, ids[i], &c), "chunk");
    use_ok(verified, kb, st, "chunk after verify");
    if (st == KBP_OK) {
      if (!c.text.s || c.text.s[c.text.len] != 0) finding("chunk", "text not terminated");
      if (i == 0 && c.text.len) {
        size_t n = c.text.len < MAX_QUESTION_BYTES ? c.text.len : MAX_QUESTION_BYTES;
        memcpy(question, c.text.s, n);
        question[n] = 0; /* a NUL inside cuts it, as a C caller would */
      }
    }
  }
  if (checked(kb, kbp_chunk_get(kb, count, &c), "chunk out of range") != KBP_ERR_ARGUMENT) finding("chunk", "id == count");

  /* a query vector: only when its dim floats are bounded by the input (with rows they are) */
  float *q = NULL;
  if (dim && dim <= (size_t)1 << 20 && (q = malloc(dim * sizeof *q)))
    for (size_t j = 0; j < dim; j++) q[j] = (float)((int)((j * 2654435761u) % 2001u) - 1000) / 1000.0f;
  kbp_mode used;
  kbp_unit unit;
  size_t depth, chunks_per_page;
  double share;
  use_ok(verified, kb, checked(kb, kbp_resolve_mode(kb, KBP_MODE_DEFAULT, &used), "mode"), "mode after verify");
  use_ok(verified, kb, checked(kb, kbp_default_unit(kb, &unit), "unit"), "unit after verify");
  use_ok(verified, kb, checked(kb, kbp_page_settings(kb, &depth, &share, &chunks_per_page), "pages"), "pages after verify");

  static const kbp_mode modes[4] = {KBP_MODE_DEFAULT, KBP_MODE_DENSE, KBP_MODE_LEXICAL, KBP_MODE_HYBRID};
  size_t ks[2] = {K_SMALL, count < 64 ? (size_t)count + 1 : 64};
  kbp_hit hits[65];
  kbp_page_hit pages[K_SMALL];
  for (int m = 0; m < 4; m++) {
    if (!q && modes[m] != KBP_MODE_LEXICAL) continue;
    for (int i = 0; i < 2; i++) {
      size_t n = 0;
      kbp_status st = checked(kb, kbp_search(kb, q, question, ks[i], modes[m], hits, &n), "search");
      use_ok(verified, kb, st, "search after verify");
      if (st == KBP_OK) check_hits(kb, hits, n, ks[i], "search");
      if (st == KBP_OK && q && n > 0) { /* the answer strength of the first hit (FORMAT.md §2.11) */
        double strength, threshold;
        int confident = 2;
        st = checked(kb, kbp_answer_strength(kb, q, hits[0].id, &strength, &confident), "answer");
        use_ok(verified, kb, st, "answer strength after verify");
        int has_threshold = kbp_min_strength(kb, &threshold) == KBP_OK;
        if (st == KBP_OK && (confident < -1 || confident > 1 || (confident == -1) == has_threshold))
          finding("answer", "confident disagrees with the bundle's threshold");
        if (st == KBP_OK && confident == 1 && !(strength >= threshold)) finding("answer", "confident under the threshold");
      }
    }
    size_t n = 0;
    kbp_status st = checked(kb, kbp_search_pages(kb, q, question, K_SMALL, modes[m], pages, &n), "pages");
    use_ok(verified, kb, st, "search_pages after verify");
    if (st == KBP_OK && n > K_SMALL) finding("pages", "more pages than asked for");
    for (size_t i = 0; st == KBP_OK && i < n; i++)
      if (pages[i].n_chunks < 1 || pages[i].n_chunks > KBP_MAX_PAGE_CHUNKS || pages[i].chunk_ids[0] >= count)
        finding("pages", "a page without its chunks");
  }

  /* filters (1.7): a condition of each form, from a key the bundle declares where it has one; every
   * search inside them keeps only kept chunks */
  size_t n_keys = 0;
  const char *key_name = "kind", *key_type = "string";
  if (kbp_attribute_count(kb, &n_keys) == KBP_OK && n_keys) kbp_attribute_key(kb, n_keys - 1, &key_name, &key_type);
  char conds[4][128];
  snprintf(conds[0], sizeof conds[0], "%s=%s", key_name, strcmp(key_type, "date") == 0 ? "2020-01-01" : "1");
  snprintf(conds[1], sizeof conds[1], "%s%s", key_name,
           strcmp(key_type, "integer") == 0 ? ">=0" : strcmp(key_type, "date") == 0 ? "<2024-12-31" : "=a,b");
  snprintf(conds[2], sizeof conds[2], "path:**/*%s*", question[0] ? "e" : "");
  size_t ql = strlen(question) < sizeof conds[3] - 1 ? strlen(question) : sizeof conds[3] - 1; /* the input as a condition */
  memcpy(conds[3], question, ql);
  conds[3][ql] = '\0';
  const char *where[4] = {conds[0], conds[1], conds[2], conds[3]};
  for (size_t nw = 1; nw <= 4; nw++) {
    kbp_filter *f = NULL;
    if (checked(kb, kbp_filter_compile(kb, where + 4 - nw, nw, &f), "filter") != KBP_OK) continue;
    for (int m = 0; m < 4; m++) {
      if (!q && modes[m] != KBP_MODE_LEXICAL) continue;
      size_t n = 0;
      if (checked(kb, kbp_search_filtered(kb, q, question, ks[1], modes[m], f, hits, &n), "filtered") == KBP_OK) {
        check_hits(kb, hits, n, ks[1], "filtered");
        for (size_t i = 0; i < n; i++)
          if (!kbp_filter_keeps(f, hits[i].id)) finding("filtered", "a hit the filter leaves out");
        if ((modes[m] == KBP_MODE_DENSE) && n != (ks[1] < kbp_filter_matched(f) ? ks[1] : kbp_filter_matched(f)))
          finding("filtered", "dense search returned fewer than min(k, matched)");
      }
      n = 0;
      checked(kb, kbp_search_pages_filtered(kb, q, question, K_SMALL, modes[m], f, pages, &n), "filtered pages");
    }
    kbp_filter_free(f);
  }

  size_t n_probes = 0;
  kbp_status st = checked(kb, kbp_probe_count(kb, &n_probes), "probes");
  use_ok(verified, kb, st, "probes after verify");
  for (size_t i = 0; st == KBP_OK && i < n_probes && i < MAX_PROBES_READ; i++) {
    kbp_probe p;
    kbp_status pst = checked(kb, kbp_probe_get(kb, i, &p), "probe");
    use_ok(verified, kb, pst, "probe after verify");
    if (pst == KBP_OK && (!p.input.s || p.input.s[p.input.len] != 0 || !p.kind.s)) finding("probe", "strings");
  }
  /* the probe vectors exist in the file (n x dim x 4 bytes), so so may an engine's */
  if (st == KBP_OK && q && n_probes && dim <= ((size_t)1 << 24) / n_probes) {
    float *v = malloc(n_probes * dim * sizeof *v);
    for (size_t i = 0; v && i < n_probes; i++) memcpy(v + i * dim, q, dim * sizeof *q);
    kbp_probe_result r;
    if (v) use_ok(verified, kb, checked(kb, kbp_probe_check(kb, v, n_probes, NULL, &r), "probe check"), "probe check after verify");
    free(v);
  }
  kbp_encoder enc;
  st = checked(kb, kbp_encoder_get(kb, &enc), "encoder");
  use_ok(verified, kb, st, "encoder after verify");
  if (st == KBP_OK && (!enc.graph || !enc.tokenizer_json || enc.tokenizer_json[0] != '{')) finding("encoder", "");
  free(q);
}

/* ---- re-signing: checksums recomputed, as tests/forge.py's resign does (an attacker who edits a
 * bundle recomputes them). Without it nearly every mutation would stop at the first SHA-256. A
 * one-shot SHA-256 (FIPS 180-4) of its own: the library's is internal. */
static uint32_t ror32(uint32_t x, int n) { return x >> n | x << (32 - n); }

static void sha256(const uint8_t *p, size_t n, uint8_t out[32]) {
  static const uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
      0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
      0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
      0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
      0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
      0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
      0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
      0xc67178f2};
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  size_t blocks = (n + 9 + 63) / 64;
  for (size_t blk = 0; blk < blocks; blk++) {
    uint8_t chunk[64];
    for (size_t i = 0; i < 64; i++) { /* the message, 0x80, zeros, the bit length: built a block at a time */
      size_t at = blk * 64 + i;
      chunk[i] = at < n ? p[at] : at == n ? 0x80 : 0;
    }
    if (blk == blocks - 1)
      for (int i = 0; i < 8; i++) chunk[56 + i] = (uint8_t)((uint64_t)n * 8 >> (56 - 8 * i));
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
      w[i] = (uint32_t)chunk[4 * i] << 24 | (uint32_t)chunk[4 * i + 1] << 16 | (uint32_t)chunk[4 * i + 2] << 8 | chunk[4 * i + 3];
    for (int i = 16; i < 64; i++)
      w[i] = w[i - 16] + (ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ w[i - 15] >> 3) + w[i - 7] +
             (ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ w[i - 2] >> 10);
    memcpy(v, h, sizeof v);
    for (int i = 0; i < 64; i++) {
      uint32_t t1 = v[7] + (ror32(v[4], 6) ^ ror32(v[4], 11) ^ ror32(v[4], 25)) + ((v[4] & v[5]) ^ (~v[4] & v[6])) + k[i] + w[i];
      uint32_t t2 = (ror32(v[0], 2) ^ ror32(v[0], 13) ^ ror32(v[0], 22)) + ((v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]));
      memmove(v + 1, v, 7 * sizeof *v);
      v[4] += t1;
      v[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) h[i] += v[i];
  }
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(h[i] >> (24 - 8 * j));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* The table entry whose name is `name`, or NULL. */
static uint8_t *entry_named(uint8_t *data, size_t size, uint64_t table, uint64_t count, const char *name) {
  for (uint64_t i = 0; i < count; i++) {
    uint8_t *e = data + table + 128 * i;
    size_t n = strlen(name);
    if (memcmp(e, name, n) == 0 && e[n] == 0) {
      uint64_t offset = get_le(e + 48, 8), length = get_le(e + 56, 8);
      return offset <= size && length <= size - offset ? e : NULL;
    }
  }
  return NULL;
}

/* The encoder graph's SHA-256 written into the manifest where its text has room (every
 * "graph_sha256": "<64 characters>"), as an attacker who edits the graph does (tests/fuzz_seeds.py's
 * with_graph), so that mutations of the graph reach libkbpack's walk of it (onnx_check.c). */
static void resign_graph(uint8_t *data, size_t size, uint64_t table, uint64_t count) {
  static const char key[] = "\"graph_sha256\"";
  uint8_t *g = entry_named(data, size, table, count, "encoder_graph"), *m = entry_named(data, size, table, count, "manifest");
  if (!g || !m) return;
  uint8_t digest[32];
  char hex[65];
  sha256(data + get_le(g + 48, 8), (size_t)get_le(g + 56, 8), digest);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  uint8_t *p = data + get_le(m + 48, 8), *end = p + get_le(m + 56, 8);
  while ((size_t)(end - p) > sizeof key) {
    if (memcmp(p, key, sizeof key - 1) != 0) { p++; continue; }
    p += sizeof key - 1;
    while (p < end && (*p == ' ' || *p == ':')) p++;
    if (p < end && *p == '"' && end - p > 64) memcpy(p + 1, hex, 64);
  }
}

/* data with the header's file length, the table's place (when the table would then end the file on
 * a 64-byte boundary) and every checksum the bytes allow recomputed; 0 when nothing could be. */
static int resign(uint8_t *data, size_t size) {
  if (size < 128 || memcmp(data, "KBPACK", 6) != 0) return 0;
  uint64_t count = get_le(data + 12, 4);
  if (count > 1024) return 0;
  put_le(data + 24, size, 8);
  uint64_t table = get_le(data + 16, 8);
  if ((table > size || size - table != count * 128) && size >= 128 + count * 128 && (size - count * 128) % 64 == 0)
    put_le(data + 16, table = size - count * 128, 8);
  if (table <= size && size - table == count * 128) {
    resign_graph(data, size, table, count);
    for (uint64_t i = 0; i < count; i++) {
      uint8_t *e = data + table + 128 * i;
      uint64_t offset = get_le(e + 48, 8), length = get_le(e + 56, 8);
      if (offset <= size && length <= size - offset) sha256(data + offset, (size_t)length, e + 64);
    }
    sha256(data + table, (size_t)(count * 128), data + 32);
  }
  sha256(data + 128, size - 128, data + 64);
  sha256(data, 96, data + 96);
  return 1;
}

/* One input's bytes through both handles (see the top of this file). */
static void run(const uint8_t *data, size_t size) {
  kbp_bundle *a, *b;
  kbp_error err;
  kbp_status sa = kbp_open_memory(data, size, &a, &err);
  if (sa != KBP_OK) {
    if (a || err.status != sa || !err.message[0]) finding("open", "failed without a message or left a handle");
    return;
  }
  use(a, 0);
  kbp_status va = checked(a, kbp_verify(a), "verify after use");
  char part_a[KBP_PART_MAX];
  memcpy(part_a, kbp_last_error(a)->part, sizeof part_a);

  if (kbp_open_memory(data, size, &b, &err) != KBP_OK) finding("open", "a second open of the same bytes failed");
  kbp_status vb = checked(b, kbp_verify(b), "verify");
  if (va != vb) finding("verify", "the verdict depends on what was used before");
  /* verify checks in a fixed order, whatever a handle did before: it names the same part */
  if (vb == KBP_ERR_INVALID && strcmp(part_a, kbp_last_error(b)->part) != 0)
    finding("verify", "the part named depends on what was used before");
  use(b, vb == KBP_OK);
  kbp_close(a);
  kbp_close(b);
}

/* The bytes as they are (damage: checksums that fail), then re-signed (forgery: checksums that
 * hold), so that mutations reach the checks behind the SHA-256s. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run(data, size);
  uint8_t *copy = size ? malloc(size) : NULL;
  if (!copy) return 0;
  memcpy(copy, data, size);
  if (resign(copy, size) && memcmp(copy, data, size) != 0) run(copy, size);
  free(copy);
  return 0;
}

#ifdef KBP_FUZZ_MAIN
/* `fuzz_kbpack FILE...`: each file through the target once (a crash or abort is the finding). */
int main(int argc, char **argv) {
  int done = 0;
  for (int i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    if (!f) {
      fprintf(stderr, "fuzz_kbpack: %s: cannot open\n", argv[i]);
      return 2;
    }
    size_t cap = 1 << 16, n = 0, got;
    uint8_t *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
      n += got;
      if (n == cap) {
        uint8_t *grown = realloc(buf, cap *= 2);
        if (!grown) { free(buf); buf = NULL; }
        buf = grown;
      }
    }
    fclose(f);
    if (!buf) {
      fprintf(stderr, "fuzz_kbpack: %s: out of memory\n", argv[i]);
      return 2;
    }
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    done++;
  }
  printf("ok %d\n", done);
  return 0;
}
#endif
