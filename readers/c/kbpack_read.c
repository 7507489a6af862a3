/* kbpack_read: a minimal .kbpack reader in portable C99, written from schemas/FORMAT.md alone.
 *
 *   kbpack_read FILE
 *     checks the header (magic, version, header and table SHA-256, lengths), the table entries,
 *     the manifest and the vectors section's SHA-256, then prints dim, count and the first
 *     vector's first values:
 *       dim=384 count=42 dtype=f32le
 *       first=0.01234567 -0.07654321 ...
 *
 *   kbpack_read FILE --lexical "question" [-k N]
 *     also checks the five lex_* sections (SHA-256, lengths, offsets, vocabulary order, every
 *     posting list), tokenises the question with kbc-lex-1 and prints the top N (default 10)
 *     chunks by BM25 (FORMAT.md §2.4), best first, lower id first on ties, one `ID SCORE` line
 *     each with SCORE as %.17g. A bundle without a lexical index: exit 2.
 *
 * Build: cc -O2 -std=c99 -Wall -Werror -o kbpack_read kbpack_read.c -lm
 * Exit: 0 ok, 3 invalid bundle, 2 usage / IO / no lexical index. Errors are one line on stderr,
 * "kbpack_read: <part>: <what>".
 *
 * Nothing is allocated from a size read from the file before that size has been checked against
 * the file's length. The manifest is read with a small validating JSON parser (depth-limited,
 * bounds-checked, no allocation). BM25 is computed in double precision in exactly the order of
 * operations FORMAT.md gives; do not build it with -ffast-math or with floating-point
 * contraction (FMA) enabled (-std=c99 turns GCC's off; the pragma below turns clang's off),
 * or the scores stop being bit-identical to other runtimes'.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; } sha256;
static const uint32_t K[64] = {
  0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
  0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
  0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
  0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
  0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
  0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
  0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
  0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha_block(sha256 *s, const uint8_t *p) {
  uint32_t w[64], a, b, c, d, e, f, g, h;
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4*i] << 24 | (uint32_t)p[4*i+1] << 16 | (uint32_t)p[4*i+2] << 8 | p[4*i+3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i-15], 7) ^ ROR(w[i-15], 18) ^ (w[i-15] >> 3);
    uint32_t s1 = ROR(w[i-2], 17) ^ ROR(w[i-2], 19) ^ (w[i-2] >> 10);
    w[i] = w[i-16] + s0 + w[i-7] + s1;
  }
  a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3]; e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}
static void sha_init(sha256 *s) {
  static const uint32_t iv[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
  memcpy(s->h, iv, sizeof iv); s->len = 0; s->n = 0;
}
static void sha_update(sha256 *s, const uint8_t *p, size_t n) {
  s->len += n;
  while (n) {
    size_t take = 64 - s->n < n ? 64 - s->n : n;
    memcpy(s->buf + s->n, p, take); s->n += take; p += take; n -= take;
    if (s->n == 64) { sha_block(s, s->buf); s->n = 0; }
  }
}
static void sha_final(sha256 *s, uint8_t out[32]) {
  uint64_t bits = s->len * 8; uint8_t pad = 0x80, zero = 0, lenb[8];
  sha_update(s, &pad, 1);
  while (s->n != 56) sha_update(s, &zero, 1);
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha_update(s, lenb, 8);
  for (int i = 0; i < 8; i++) { out[4*i] = s->h[i] >> 24; out[4*i+1] = s->h[i] >> 16; out[4*i+2] = s->h[i] >> 8; out[4*i+3] = s->h[i]; }
}
static void sha(const uint8_t *p, size_t n, uint8_t out[32]) { sha256 s; sha_init(&s); sha_update(&s, p, n); sha_final(&s, out); }

/* ---- little-endian field access (the file is little-endian whatever the host) ---- */
static uint64_t le(const uint8_t *p, int n) { uint64_t v = 0; for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i]; return v; }

static int fail(const char *where, const char *what) { fprintf(stderr, "kbpack_read: %s: %s\n", where, what); return 3; }

/* ---- UTF-8 (strict: no overlongs, no surrogates, nothing above U+10FFFF) ---- */
/* Decodes one code point at s[0..n); returns its byte length, or 0 if the bytes there are not a
 * well-formed UTF-8 sequence (the caller then treats one byte as invalid). */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
  uint8_t c = s[0];
  if (c < 0x80) { *cp = c; return 1; }
  size_t len; uint32_t v; uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    uint8_t b = s[i];
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return 0;
    v = v << 6 | (b & 0x3F);
  }
  *cp = v; return len;
}
static int utf8_valid(const uint8_t *s, size_t n) {
  uint32_t cp;
  for (size_t i = 0; i < n;) { size_t l = utf8_next(s + i, n - i, &cp); if (!l) return 0; i += l; }
  return 1;
}
static size_t utf8_put(uint32_t c, uint8_t *o) {
  if (c < 0x80) { o[0] = (uint8_t)c; return 1; }
  if (c < 0x800) { o[0] = (uint8_t)(0xC0 | c >> 6); o[1] = (uint8_t)(0x80 | (c & 0x3F)); return 2; }
  if (c < 0x10000) { o[0] = (uint8_t)(0xE0 | c >> 12); o[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F)); o[2] = (uint8_t)(0x80 | (c & 0x3F)); return 3; }
  o[0] = (uint8_t)(0xF0 | c >> 18); o[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F)); o[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F)); o[3] = (uint8_t)(0x80 | (c & 0x3F));
  return 4;
}

/* ---- JSON: a validating recursive-descent parser (RFC 8259), then lookups on the valid text ----
 * A value is referred to by a pointer to its first byte inside the manifest. json_check() must
 * have accepted the whole document before any lookup: lookups re-scan the text and rely on it. */
#define JSON_MAX_DEPTH 512  /* Python's json recurses to about 1000 */
typedef struct { const char *p, *end; } jcur;
static void jws(jcur *c) { while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++; }
static int jhex(char h) { return h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1; }
static int jstring(jcur *c) {  /* at '"'; moves past the closing quote */
  if (c->p >= c->end || *c->p != '"') return -1;
  for (c->p++; c->p < c->end; c->p++) {
    unsigned char ch = (unsigned char)*c->p;
    if (ch == '"') { c->p++; return 0; }
    if (ch < 0x20) return -1;
    if (ch == '\\') {
      if (++c->p >= c->end) return -1;
      char e = *c->p;
      if (e == 'u') {
        if (c->end - c->p < 5) return -1;
        for (int i = 1; i <= 4; i++) if (jhex(c->p[i]) < 0) return -1;
        c->p += 4;
      } else if (!strchr("\"\\/bfnrt", e) || e == 0) return -1;
    }
  }
  return -1;
}
static int jdigits(jcur *c) { const char *s = c->p; while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++; return c->p > s ? 0 : -1; }
static int jnumber(jcur *c) {
  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p >= c->end) return -1;
  if (*c->p == '0') c->p++; else if (jdigits(c)) return -1;
  if (c->p < c->end && *c->p == '.') { c->p++; if (jdigits(c)) return -1; }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (jdigits(c)) return -1;
  }
  return 0;
}
static int jvalue(jcur *c, int depth) {  /* validates and skips one value (no surrounding whitespace) */
  if (c->p >= c->end) return -1;
  char ch = *c->p;
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    if (depth >= JSON_MAX_DEPTH) return -1;
    c->p++; jws(c);
    if (c->p < c->end && *c->p == close) { c->p++; return 0; }
    for (;;) {
      if (ch == '{') {
        if (jstring(c)) return -1;
        jws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++; jws(c);
      }
      if (jvalue(c, depth + 1)) return -1;
      jws(c);
      if (c->p >= c->end) return -1;
      if (*c->p == close) { c->p++; return 0; }
      if (*c->p != ',') return -1;
      c->p++; jws(c);
    }
  }
  if (ch == '"') return jstring(c);
  if (ch == '-' || (ch >= '0' && ch <= '9')) return jnumber(c);
  static const char *const lits[3] = {"true", "false", "null"};
  for (int i = 0; i < 3; i++) {
    size_t l = strlen(lits[i]);
    if ((size_t)(c->end - c->p) >= l && memcmp(c->p, lits[i], l) == 0) { c->p += l; return 0; }
  }
  return -1;
}
static int json_check(const char *s, const char *end) {  /* 0 if [s, end) is exactly one JSON value */
  jcur c = {s, end};
  jws(&c);
  if (jvalue(&c, 0)) return -1;
  jws(&c);
  return c.p == c.end ? 0 : -1;
}
/* Decodes the JSON string at p (at its '"') into at most cap bytes of UTF-8 (lone surrogate
 * escapes become their 3-byte form). Returns the length, or -1 if it needs more than cap. */
static long jdecode(const char *p, const char *end, uint8_t *out, size_t cap) {
  size_t n = 0; uint8_t tmp[4];
  for (p++; p < end && *p != '"'; p++) {
    uint32_t cp = (unsigned char)*p; size_t l;
    if (*p == '\\') {
      char e = *++p;
      if (e == 'u') {
        cp = (uint32_t)(jhex(p[1]) << 12 | jhex(p[2]) << 8 | jhex(p[3]) << 4 | jhex(p[4])); p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p > 6 && p[1] == '\\' && p[2] == 'u') {
          uint32_t lo = (uint32_t)(jhex(p[3]) << 12 | jhex(p[4]) << 8 | jhex(p[5]) << 4 | jhex(p[6]));
          if (lo >= 0xDC00 && lo <= 0xDFFF) { cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00); p += 6; }
        }
        l = utf8_put(cp, tmp);
      } else {
        tmp[0] = (uint8_t)(e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e); l = 1;
      }
    } else { tmp[0] = (uint8_t)cp; l = 1; }
    if (n + l > cap) return -1;
    memcpy(out + n, tmp, l); n += l;
  }
  return (long)n;
}
static int jstreq(const char *v, const char *end, const char *lit) {
  uint8_t buf[64]; size_t l = strlen(lit);
  if (!v || *v != '"' || l > sizeof buf) return 0;
  long n = jdecode(v, end, buf, sizeof buf);
  return n == (long)l && memcmp(buf, lit, l) == 0;
}
/* The value of `key` in the object at obj (the last one if the key repeats, as Python's json
 * does), or NULL when obj is not an object or has no such key. */
static const char *jget(const char *obj, const char *end, const char *key) {
  if (!obj || *obj != '{') return NULL;
  const char *found = NULL;
  jcur c = {obj + 1, end};
  jws(&c);
  if (c.p < c.end && *c.p == '}') return NULL;
  for (;;) {
    const char *k = c.p;
    if (jstring(&c)) return NULL;
    jws(&c); c.p++; jws(&c);  /* ':' */
    if (jstreq(k, end, key)) found = c.p;
    if (jvalue(&c, 0)) return NULL;
    jws(&c);
    if (c.p >= c.end || *c.p != ',') return found;
    c.p++; jws(&c);
  }
}
static int jnull(const char *v) { return !v || *v == 'n'; }                 /* absent or null */
static int jisnum(const char *v) { return v && (*v == '-' || (*v >= '0' && *v <= '9')); }
static int jbool(const char *v, int *out) {
  if (!v || (*v != 't' && *v != 'f')) return -1;
  *out = *v == 't'; return 0;
}
/* A JSON integer (no fraction, no exponent: Python reads those as float) >= 0 that fits a u64. */
static int juint(const char *v, const char *end, uint64_t *out) {
  if (!jisnum(v)) return -1;
  jcur c = {v, end};
  if (jnumber(&c)) return -1;
  const char *p = v; int neg = 0;
  if (*p == '-') { neg = 1; p++; }
  uint64_t x = 0;
  for (; p < c.p; p++) {
    if (*p < '0' || *p > '9') return -1;
    unsigned dgt = (unsigned)(*p - '0');
    if (x > (UINT64_MAX - dgt) / 10) return -1;
    x = x * 10 + dgt;
  }
  if (neg && x) return -1;
  *out = x; return 0;
}
/* Any JSON number as the nearest double (strtod rounds correctly, as Python's float() does). */
static int jdouble(const char *v, const char *end, double *out) {
  if (!jisnum(v)) return -1;
  jcur c = {v, end};
  if (jnumber(&c)) return -1;
  size_t n = (size_t)(c.p - v);
  char *tmp = malloc(n + 1);  /* n <= the manifest's length */
  if (!tmp) return -1;
  memcpy(tmp, v, n); tmp[n] = 0;
  char *stop; double d = strtod(tmp, &stop);
  int ok = stop == tmp + n && isfinite(d);
  free(tmp);
  if (!ok) return -1;
  *out = d; return 0;
}

/* ---- the bundle: header, table, sections ---- */
#define MAX_MANIFEST_BYTES ((uint64_t)64 << 20)
typedef struct { uint8_t *d; uint64_t size, toff, nsec; unsigned major, minor; } bundle;
typedef struct { const uint8_t *p; uint64_t len; char enc[17]; } section;

static int fixed_ascii(const uint8_t *raw, size_t size) {  /* printable, NUL-padded, non-empty */
  size_t n = 0;
  while (n < size && raw[n]) { if (raw[n] <= 32 || raw[n] >= 127) return 0; n++; }
  for (size_t i = n; i < size; i++) if (raw[i]) return 0;
  return n > 0;
}
static const uint8_t *entry_of(const bundle *b, const char *name) {
  for (uint64_t i = 0; i < b->nsec; i++) {
    const uint8_t *e = b->d + b->toff + 128 * i;
    if (strncmp((const char *)e, name, 32) == 0) return e;
  }
  return NULL;
}
/* 1 if the section exists (out filled, sha256 checked), 0 if absent, -1 after reporting damage. */
static int get_section(const bundle *b, const char *name, section *out) {
  const uint8_t *e = entry_of(b, name); uint8_t dig[32];
  if (!e) return 0;
  out->p = b->d + le(e + 48, 8); out->len = le(e + 56, 8);
  memcpy(out->enc, e + 32, 16); out->enc[16] = 0;
  sha(out->p, (size_t)out->len, dig);
  if (memcmp(dig, e + 64, 32)) { fail(name, "sha256 mismatch"); return -1; }
  return 1;
}

static int open_bundle(const char *path, bundle *b) {
  FILE *f = fopen(path, "rb");
  if (!f) { perror(path); return 2; }
  long fsize = -1;
  if (fseek(f, 0, SEEK_END) == 0) fsize = ftell(f);
  if (fsize < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); fprintf(stderr, "kbpack_read: %s: cannot read\n", path); return 2; }
  if (fsize < 128) { fclose(f); return fail("header", "file shorter than the 128-byte header"); }
  b->d = malloc((size_t)fsize); b->size = (uint64_t)fsize;
  if (!b->d || fread(b->d, 1, (size_t)fsize, f) != (size_t)fsize) { fclose(f); fprintf(stderr, "kbpack_read: %s: read error\n", path); return 2; }
  fclose(f);
  const uint8_t *d = b->d; uint8_t dig[32];
  if (memcmp(d, "KBPACK\0\0", 8) != 0) return fail("header", "bad magic");
  b->major = (unsigned)le(d + 8, 2); b->minor = (unsigned)le(d + 10, 2);
  if (b->major != 1) { fprintf(stderr, "kbpack_read: header: format %u.%u is not supported (1.x)\n", b->major, b->minor); return 3; }
  sha(d, 96, dig);
  if (memcmp(dig, d + 96, 32)) return fail("header", "header sha256 mismatch");
  uint64_t count = le(d + 12, 4), toff = le(d + 16, 8), flen = le(d + 24, 8);
  if (flen != b->size) return fail("file", "length differs from header (truncated?)");
  if (count > 1024 || toff % 64 || toff < 128 || toff > flen || flen - toff != count * 128) return fail("header", "bad table bounds");
  sha(d + toff, (size_t)(count * 128), dig);
  if (memcmp(dig, d + 32, 32)) return fail("table", "table sha256 mismatch");
  b->toff = toff; b->nsec = count;
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *e = d + toff + 128 * i;
    uint64_t off = le(e + 48, 8), len = le(e + 56, 8);
    if (!fixed_ascii(e, 32) || !fixed_ascii(e + 32, 16)) return fail("table", "malformed section name or encoding");
    for (int j = 96; j < 128; j++) if (e[j]) return fail("table", "non-zero reserved bytes");
    if (off % 64 || off < 128 || off > toff || len > toff - off) return fail("table", "section out of bounds");
    for (uint64_t j = 0; j < i; j++) {
      const uint8_t *o = d + toff + 128 * j;
      uint64_t ooff = le(o + 48, 8), olen = le(o + 56, 8);
      if (memcmp(e, o, 32) == 0) return fail("table", "a section name appears twice");
      if (off < ooff + olen && ooff < off + len) return fail("table", "sections overlap");
    }
  }
  static const char *const required[4] = {"manifest", "vectors", "chunks", "chunk_offsets"};
  for (int i = 0; i < 4; i++) if (!entry_of(b, required[i])) return fail("table", "a required section is missing");
  return 0;
}

typedef struct { const char *js, *end; uint64_t count, dim, block_size; int f16; } manifest;

/* The manifest's checksum, JSON and the counts every reader relies on (FORMAT.md §5 step 5). */
static int read_manifest(const bundle *b, manifest *m, section *vec) {
  section man;
  int r = get_section(b, "manifest", &man);
  if (r < 0) return 3;
  if (strcmp(man.enc, "json")) return fail("manifest", "encoding is not json");
  if (man.len > MAX_MANIFEST_BYTES) return fail("manifest", "larger than 64 MiB");
  m->js = (const char *)man.p; m->end = m->js + man.len;
  if (!utf8_valid(man.p, (size_t)man.len)) return fail("manifest", "not UTF-8");
  if (json_check(m->js, m->end)) return fail("manifest", "invalid JSON");
  jcur c = {m->js, m->end}; jws(&c);
  const char *root = c.p;
  if (*root != '{') return fail("manifest", "not a JSON object");
  const char *fmt = jget(root, m->end, "format"), *vobj = jget(root, m->end, "vectors"), *cobj = jget(root, m->end, "chunks");
  uint64_t fmaj, fmin, ccount;
  if (juint(jget(fmt, m->end, "major"), m->end, &fmaj) || juint(jget(fmt, m->end, "minor"), m->end, &fmin))
    return fail("manifest", "missing or malformed format");
  if (fmaj != b->major || fmin != b->minor) return fail("manifest", "format version disagrees with the header");
  if (!vobj) return fail("manifest", "no vectors object");
  const char *dtype = jget(vobj, m->end, "dtype");
  if (juint(jget(vobj, m->end, "count"), m->end, &m->count) || juint(jget(vobj, m->end, "dim"), m->end, &m->dim) ||
      juint(jget(cobj, m->end, "count"), m->end, &ccount) || juint(jget(cobj, m->end, "block_size"), m->end, &m->block_size))
    return fail("manifest", "missing or malformed vectors or chunks counts");
  if (ccount != m->count) return fail("manifest", "chunk count differs from vector count");
  if (m->dim == 0 || m->block_size == 0) return fail("manifest", "dim and block_size must be > 0");
  if (!jstreq(dtype, m->end, "float32") && !jstreq(dtype, m->end, "float16")) return fail("manifest", "unknown vector dtype");
  m->f16 = jstreq(dtype, m->end, "float16");
  const uint8_t *ve = entry_of(b, "vectors");
  if (strncmp((const char *)ve + 32, m->f16 ? "f16le" : "f32le", 16)) return fail("vectors", "encoding disagrees with the manifest dtype");
  uint64_t vlen = le(ve + 56, 8), item = m->f16 ? 2 : 4;
  if (m->count ? m->dim > vlen / item || vlen % (m->dim * item) || vlen / (m->dim * item) != m->count : vlen != 0)
    return fail("vectors", "length does not match count x dim");
  const uint8_t *oe = entry_of(b, "chunk_offsets");
  uint64_t n_blocks = m->count / m->block_size + (m->count % m->block_size != 0);
  if (strncmp((const char *)oe + 32, "u64le", 16) || le(oe + 56, 8) / 8 != n_blocks + 1 || le(oe + 56, 8) % 8)
    return fail("chunk_offsets", "length does not match the block count");
  if (vec) {
    r = get_section(b, "vectors", vec);
    if (r < 0) return 3;
  }
  return 0;
}

/* ---- default mode: dim, count and the first vector ---- */
static int print_first_vector(const bundle *b) {
  manifest m; section vec;
  int r = read_manifest(b, &m, &vec);
  if (r) return r;
  printf("dim=%llu count=%llu dtype=%s\n", (unsigned long long)m.dim, (unsigned long long)m.count, vec.enc);
  if (m.count > 0) {
    printf("first=");
    for (uint64_t j = 0; j < m.dim && j < 8; j++) {
      float x;
      if (m.f16) {  /* IEEE half -> float */
        uint16_t h = (uint16_t)le(vec.p + 2 * j, 2); uint32_t s = (uint32_t)(h & 0x8000) << 16, ex = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
        if (ex == 0) { if (mant == 0) u = s; else { ex = 127 - 15 + 1; while (!(mant & 0x400)) { mant <<= 1; ex--; } u = s | ex << 23 | (mant & 0x3ff) << 13; } }
        else if (ex == 31) u = s | 0x7f800000 | mant << 13; else u = s | (ex + 127 - 15) << 23 | mant << 13;
        memcpy(&x, &u, 4);
      } else { uint32_t u = (uint32_t)le(vec.p + 4 * j, 4); memcpy(&x, &u, 4); }
      printf(j ? " %.8f" : "%.8f", x);
    }
    printf("\n");
  }
  return 0;
}

/* ---- tokeniser kbc-lex-1 (FORMAT.md §2.4) ---- */
#define MAX_TOKEN_CHARS 64
#define MAX_QUERY_TERMS 1024
#define MAX_TERM_BYTES (4 * MAX_TOKEN_CHARS)
enum { SEP, DIGIT, LETTER, CJK };

static uint32_t fold(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 0x20;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 0x20;
  if (c >= 0x410 && c <= 0x42F) return c + 0x20;
  if (c >= 0x400 && c <= 0x40F) return c + 0x50;
  return c;
}
static int char_class(uint32_t c) {
  static const uint32_t sep[][2] = {{0x80, 0xBF}, {0xD7, 0xD7}, {0xF7, 0xF7}, {0x2000, 0x2BFF}, {0x3000, 0x303F},
      {0xD800, 0xDFFF}, {0xE000, 0xF8FF}, {0xFE30, 0xFE4F}, {0xFF00, 0xFF0F}, {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40},
      {0xFF5B, 0xFF65}, {0xFFF0, 0xFFFF}};
  static const uint32_t cjk[][2] = {{0x3040, 0x30FF}, {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7AF}, {0xF900, 0xFAFF}};
  if (c >= '0' && c <= '9') return DIGIT;
  if (c >= 'a' && c <= 'z') return LETTER;
  if (c < 0x80) return SEP;
  for (size_t i = 0; i < sizeof sep / sizeof sep[0]; i++) if (c >= sep[i][0] && c <= sep[i][1]) return SEP;
  for (size_t i = 0; i < sizeof cjk / sizeof cjk[0]; i++) if (c >= cjk[i][0] && c <= cjk[i][1]) return CJK;
  return LETTER;  /* every other code point from U+00C0 up */
}
static const char *const STOP_WORDS[] = {"a", "about", "above", "after", "again", "against", "all", "am", "an", "and", "any", "are", "as", "at", "be",
  "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could", "did", "do",
  "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has", "have", "having",
  "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "it",
  "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off", "on",
  "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "s", "same", "she", "should",
  "so", "some", "such", "t", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there",
  "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were",
  "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your",
  "yours", "yourself", "yourselves"};
static int is_stop_word(const uint32_t *t, size_t n) {
  for (size_t w = 0; w < sizeof STOP_WORDS / sizeof STOP_WORDS[0]; w++) {
    const char *s = STOP_WORDS[w]; size_t i = 0;
    while (i < n && s[i] && t[i] == (uint32_t)(unsigned char)s[i]) i++;
    if (i == n && !s[i]) return 1;
  }
  return 0;
}
/* "s-stemmer": Lucene's EnglishMinimalStemmer (after Harman 1991); lengths in code points. */
static size_t s_stem(uint32_t *t, size_t n) {
  if (n < 3 || t[n - 1] != 's') return n;
  if (t[n - 2] == 'u' || t[n - 2] == 's') return n;                      /* -us, -ss */
  if (t[n - 2] == 'e') {
    if (n > 3 && t[n - 3] == 'i' && t[n - 4] != 'a' && t[n - 4] != 'e') { t[n - 3] = 'y'; return n - 2; }  /* -ies -> -y */
    if (t[n - 3] == 'i' || t[n - 3] == 'a' || t[n - 3] == 'o' || t[n - 3] == 'e') return n;  /* -ies -aes -oes -ees */
  }
  return n - 1;
}

typedef struct { uint8_t bytes[MAX_TERM_BYTES]; size_t len; } term;

/* The question's distinct terms in order of first occurrence, at most MAX_QUERY_TERMS. Bytes that
 * are not well-formed UTF-8 become U+FFFD, a separator. Returns the count, or -1 (out of memory). */
static long query_terms(const char *q, int stop_words, int stem, term *out) {
  size_t qn = strlen(q), n = 0;
  uint32_t *cp = malloc((qn + 1) * sizeof *cp);
  if (!cp) return -1;
  for (size_t i = 0; i < qn;) {  /* 1. decode, 2. fold */
    uint32_t c; size_t l = utf8_next((const uint8_t *)q + i, qn - i, &c);
    if (!l) { c = 0xFFFD; l = 1; }
    cp[n++] = fold(c); i += l;
  }
  /* 3. thousands commas: all found on the folded text, then deleted */
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    int drop = cp[i] == ',' && i > 0 && cp[i - 1] >= '0' && cp[i - 1] <= '9' && i + 3 < n;
    for (size_t j = 1; drop && j <= 3; j++) drop = cp[i + j] >= '0' && cp[i + j] <= '9';
    if (drop && i + 4 < n && cp[i + 4] >= '0' && cp[i + 4] <= '9') drop = 0;
    if (!drop) cp[w++] = cp[i];  /* only entries before i - 1 are ever overwritten: the tests above see the folded text */
  }
  n = w;
  long nt = 0;
  for (size_t i = 0; i < n && nt < MAX_QUERY_TERMS;) {  /* 4. split */
    int k = char_class(cp[i]);
    if (k == SEP) { i++; continue; }
    size_t s = i++;
    if (k != CJK) while (i < n && char_class(cp[i]) == k) i++;
    size_t len = i - s;
    if (len > MAX_TOKEN_CHARS) continue;                       /* 5. too long */
    uint32_t tok[MAX_TOKEN_CHARS];
    memcpy(tok, cp + s, len * sizeof *tok);
    if (stop_words && is_stop_word(tok, len)) continue;        /* 6. stop words */
    if (stem) len = s_stem(tok, len);                          /* 7. s-stemmer */
    term t; t.len = 0;
    for (size_t j = 0; j < len; j++) t.len += utf8_put(tok[j], t.bytes + t.len);
    int seen = 0;
    for (long j = 0; j < nt && !seen; j++) seen = out[j].len == t.len && memcmp(out[j].bytes, t.bytes, t.len) == 0;
    if (!seen) out[nt++] = t;
  }
  free(cp);
  return nt;
}

/* ---- lexical index ---- */
typedef struct {
  section vocab, voff, post, poff, lens;
  uint64_t n, t;
  double k1, b, avgdl;
  int stop_words, stem;
} lexical;

static const char *const LEX_NAMES[5] = {"lex_vocab", "lex_vocab_offsets", "lex_postings", "lex_postings_offsets", "lex_doc_lengths"};
static const char *const LEX_ENCODINGS[5] = {"utf8", "u32le", "uleb128", "u32le", "u32le"};

/* One unsigned LEB128 value of at most 5 bytes from p[*i..end). */
static int uleb(const uint8_t *p, uint64_t end, uint64_t *i, uint64_t *v) {
  uint64_t x = 0;
  for (int k = 0; k < 5; k++) {
    if (*i >= end) return fail("lex_postings", "truncated varint");
    uint8_t byte = p[(*i)++];
    x |= (uint64_t)(byte & 0x7F) << (7 * k);
    if (!(byte & 0x80)) { *v = x; return 0; }
  }
  return fail("lex_postings", "varint longer than 5 bytes");
}
/* Checks term t's postings (pairs, gaps > 0 after the first, ids < N, tf >= 1); sets *df. */
static int check_postings(const lexical *x, uint64_t t, uint64_t *df) {
  uint64_t a = le(x->poff.p + 4 * t, 4), end = le(x->poff.p + 4 * (t + 1), 4), id = 0, gap, tf, n = 0;
  if (a == end) return fail("lex_postings", "a term has no postings");
  while (a < end) {
    if (uleb(x->post.p, end, &a, &gap) || uleb(x->post.p, end, &a, &tf)) return 3;
    if (n && gap == 0) return fail("lex_postings", "chunk ids not increasing");
    if (gap >= x->n || id >= x->n - gap) return fail("lex_postings", "chunk id out of range");
    if (tf == 0) return fail("lex_postings", "term frequency 0");
    id += gap; n++;
  }
  *df = n;
  return 0;
}
static int check_offsets(const section *s, int width, uint64_t entries, uint64_t end, const char *name) {
  if (s->len / (uint64_t)width != entries || s->len % (uint64_t)width) return fail(name, "length disagrees with the manifest's term count");
  uint64_t prev = 0;
  for (uint64_t i = 0; i < entries; i++) {
    uint64_t v = le(s->p + (uint64_t)width * i, width);
    if ((i == 0 && v != 0) || v < prev) return fail(name, "offsets do not rise from 0");
    prev = v;
  }
  if (prev != end) return fail(name, "offsets do not end at the section length");
  return 0;
}
static int cmp_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c ? c : (an > bn) - (an < bn);
}
static const uint8_t *vocab_term(const lexical *x, uint64_t t, size_t *len) {
  uint64_t a = le(x->voff.p + 4 * t, 4), e = le(x->voff.p + 4 * (t + 1), 4);
  *len = (size_t)(e - a);
  return x->vocab.p + a;
}

/* Returns 0 with *x filled, 2 (after a message) when the bundle has no lexical index, 3 when invalid. */
static int open_lexical(const bundle *b, const manifest *m, lexical *x) {
  const char *end = m->end;
  jcur c = {m->js, end}; jws(&c);
  const char *meta = jget(c.p, end, "lexical");
  int present = 0;
  for (int i = 0; i < 5; i++) present += entry_of(b, LEX_NAMES[i]) != NULL;
  if (jnull(meta) && present == 0) { fprintf(stderr, "kbpack_read: lexical: this bundle has no lexical index\n"); return 2; }
  if (jnull(meta)) return fail("manifest", "lexical index is incomplete: no manifest.lexical");
  for (int i = 0; i < 5; i++) if (!entry_of(b, LEX_NAMES[i])) return fail(LEX_NAMES[i], "lexical index is incomplete: section missing");
  section *secs[5] = {&x->vocab, &x->voff, &x->post, &x->poff, &x->lens};
  for (int i = 0; i < 5; i++) {
    if (strncmp((const char *)entry_of(b, LEX_NAMES[i]) + 32, LEX_ENCODINGS[i], 16)) return fail(LEX_NAMES[i], "unexpected encoding");
    if (get_section(b, LEX_NAMES[i], secs[i]) < 0) return 3;
  }
  if (*meta != '{') return fail("manifest", "lexical: not an object");
  const char *tok = jget(meta, end, "tokenizer");
  if (!tok || *tok != '{' || !jstreq(jget(tok, end, "name"), end, "kbc-lex-1")) return fail("manifest", "lexical: unknown tokenizer (not kbc-lex-1)");
  const char *stem = jget(tok, end, "stem");
  if (jbool(jget(tok, end, "stop_words"), &x->stop_words)) return fail("manifest", "lexical: malformed tokenizer options");
  if (jstreq(stem, end, "snowball-english")) return fail("manifest", "lexical: stemmer snowball-english is not supported by this reader");
  if (!(jnull(stem) || jstreq(stem, end, "s-stemmer"))) return fail("manifest", "lexical: malformed tokenizer options");
  x->stem = !jnull(stem);
  if (jdouble(jget(meta, end, "k1"), end, &x->k1) || jdouble(jget(meta, end, "b"), end, &x->b) ||
      jdouble(jget(meta, end, "avg_doc_length"), end, &x->avgdl) ||
      juint(jget(meta, end, "doc_count"), end, &x->n) || juint(jget(meta, end, "terms"), end, &x->t))
    return fail("manifest", "lexical: missing or malformed field");
  if (!(x->k1 >= 0 && x->k1 <= 100 && x->b >= 0 && x->b <= 1 && x->avgdl >= 0))
    return fail("manifest", "lexical: k1, b or avg_doc_length out of range");
  if (x->n != m->count) return fail("manifest", "lexical: doc_count disagrees with the chunk count");
  /* lengths against T and N (T < section length keeps T + 1 from overflowing) */
  if (x->t >= x->voff.len) return fail("lex_vocab_offsets", "length disagrees with the manifest's term count");
  if (check_offsets(&x->voff, 4, x->t + 1, x->vocab.len, "lex_vocab_offsets")) return 3;
  if (x->t >= x->poff.len) return fail("lex_postings_offsets", "length disagrees with the manifest's term count");
  if (check_offsets(&x->poff, 4, x->t + 1, x->post.len, "lex_postings_offsets")) return 3;
  if (x->lens.len % 4 || x->lens.len / 4 != x->n) return fail("lex_doc_lengths", "length disagrees with doc_count");
  /* the vocabulary is strictly ascending (binary search relies on it), every posting list valid */
  for (uint64_t t = 0; t < x->t; t++) {
    size_t la, lb; uint64_t df;
    const uint8_t *tb = vocab_term(x, t, &lb);
    if (lb == 0) return fail("lex_vocab_offsets", "an empty term");
    if (t) { const uint8_t *ta = vocab_term(x, t - 1, &la); if (cmp_bytes(ta, la, tb, lb) >= 0) return fail("lex_vocab", "terms not in ascending order"); }
    if (check_postings(x, t, &df)) return 3;
  }
  return 0;
}

static int64_t lookup(const lexical *x, const term *q) {  /* binary search on bytes; -1 if absent */
  uint64_t lo = 0, hi = x->t; size_t l;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    const uint8_t *tb = vocab_term(x, mid, &l);
    if (cmp_bytes(tb, l, q->bytes, q->len) < 0) lo = mid + 1; else hi = mid;
  }
  if (lo < x->t) { const uint8_t *tb = vocab_term(x, lo, &l); if (cmp_bytes(tb, l, q->bytes, q->len) == 0) return (int64_t)lo; }
  return -1;
}

typedef struct { double score; uint64_t id; } hit;
static int hit_order(const void *pa, const void *pb) {  /* best first, lower id first on ties */
  const hit *a = pa, *b = pb;
  if (a->score != b->score) return a->score > b->score ? -1 : 1;
  return (a->id > b->id) - (a->id < b->id);
}

static int search_lexical(const bundle *b, const char *question, uint64_t k) {
  manifest m; lexical x;
  int r = read_manifest(b, &m, NULL);
  if (r) return r;
  if ((r = open_lexical(b, &m, &x))) return r;
  term *terms = malloc(MAX_QUERY_TERMS * sizeof *terms);
  double *score = calloc(x.n ? (size_t)x.n : 1, sizeof *score);  /* n = lex_doc_lengths length / 4 */
  if (!terms || !score) { fprintf(stderr, "kbpack_read: out of memory\n"); return 2; }
  long nt = query_terms(question, x.stop_words, x.stem, terms);
  if (nt < 0) { fprintf(stderr, "kbpack_read: out of memory\n"); return 2; }
  const double N = (double)x.n, avgdl = x.avgdl > 0 ? x.avgdl : 1.0, k1p1 = x.k1 + 1.0;
  for (long i = 0; i < nt && x.n; i++) {
    int64_t t = lookup(&x, &terms[i]);
    if (t < 0) continue;
    uint64_t df, a = le(x.poff.p + 4 * (uint64_t)t, 4), end = le(x.poff.p + 4 * ((uint64_t)t + 1), 4), id = 0, gap, tfi;
    if (check_postings(&x, (uint64_t)t, &df)) return 3;
    /* idf = ln(1 + (N - df + 0.5) / (df + 0.5)); every step its own statement, nothing fused */
    double num = (N - (double)df) + 0.5;
    double den = (double)df + 0.5;
    double ratio = num / den;
    double idf = log(1.0 + ratio);
    for (uint64_t j = 0; a < end; j++) {
      uleb(x.post.p, end, &a, &gap); uleb(x.post.p, end, &a, &tfi);
      id = j ? id + gap : gap;
      double tf = (double)tfi;
      double len = (double)le(x.lens.p + 4 * id, 4);
      double lnorm = (x.b * len) / avgdl;
      double norm = x.k1 * ((1.0 - x.b) + lnorm);
      double top = (idf * tf) * k1p1;
      double bottom = tf + norm;
      score[id] += top / bottom;
    }
  }
  size_t nh = 0;
  for (uint64_t i = 0; i < x.n; i++) nh += score[i] > 0;
  hit *hits = malloc((nh ? nh : 1) * sizeof *hits);
  if (!hits) { fprintf(stderr, "kbpack_read: out of memory\n"); return 2; }
  nh = 0;
  for (uint64_t i = 0; i < x.n; i++) if (score[i] > 0) { hits[nh].score = score[i]; hits[nh].id = i; nh++; }
  qsort(hits, nh, sizeof *hits, hit_order);
  for (size_t i = 0; i < nh && i < k; i++) printf("%llu %.17g\n", (unsigned long long)hits[i].id, hits[i].score);
  free(hits); free(score); free(terms);
  return 0;
}

static int usage(void) { fprintf(stderr, "usage: kbpack_read FILE.kbpack [--lexical QUESTION [-k N]]\n"); return 2; }

int main(int argc, char **argv) {
  const char *path = NULL, *question = NULL; uint64_t k = 10; int have_k = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--lexical") == 0 && i + 1 < argc && !question) question = argv[++i];
    else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc && !have_k) {
      const char *s = argv[++i]; char *stop; unsigned long long v;
      if (*s < '0' || *s > '9') return usage();
      v = strtoull(s, &stop, 10);
      if (*stop || v > 1000000000ULL) return usage();
      k = v; have_k = 1;
    } else if (!path && argv[i][0] != '-') path = argv[i];
    else return usage();
  }
  if (!path || (have_k && !question)) return usage();
  bundle b = {0};
  int r = open_bundle(path, &b);
  if (r == 0) r = question ? search_lexical(&b, question, k) : print_first_vector(&b);
  free(b.d);
  return r;
}
