/* libkbpack: the .kbpack reader in C99 (API and contracts: kbpack.h; format: schemas/FORMAT.md).
 *
 * Every rule here mirrors kbc's Python reader (kbc/bundle.py, kbc/lexical.py, kbc/retrieval.py,
 * kbc/probe.py), so that a bundle one refuses the other refuses too, and a search ranks the same
 * chunks. Where the Python code's behaviour is subtle (Python's `==` between JSON numbers and
 * booleans, duplicate keys, the order of floating-point operations) the comment says so.
 *
 * Nothing is allocated from a size read from the file before that size has been checked against
 * the file or a fixed limit. Parts, in order:
 *   1. limits, errors            7. vectors (float, int8, binary codes), dense search
 *   2. SHA-256                   8. lexical index, tokeniser kbc-lex-1, BM25
 *   3. UTF-8                     9. retrieval settings and hybrid fusion
 *   4. JSON                     10. probes
 *   5. open: header, table,     11. the query encoder
 *      manifest                 12. verify
 *   6. chunks: zstd frames and the msgpack subset
 */
#define _POSIX_C_SOURCE 200809L

#include "kbpack.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

/* BM25 must round exactly as FORMAT.md §2.4 orders it: no fused multiply-add. GCC in ISO C mode
 * (-std=c99) never contracts; clang needs telling. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* ============================================================== 1. limits, errors */

#define HEADER_SIZE 128u
#define ENTRY_SIZE 128u
#define ALIGN 64u
#define MAX_SECTIONS 1024u
#define MAX_MANIFEST_BYTES ((uint64_t)64 << 20)
#define MAX_JSON_SECTION_BYTES ((uint64_t)64 << 20)
#define MAX_BLOCK_BYTES ((uint64_t)64 << 20) /* decompressed size of one chunk block */
#define MAX_PROMPT_CHARS 4096u               /* embedder.query_prompt / document_prompt */
#define MAX_KEYS_PER_CHUNK 64u
#define MIN_CHUNK_MAP_BYTES 7u               /* {"text": ""}: fixmap + fixstr "text" + fixstr */
#define MAX_QUESTION_CHARS 1000000u
#define MAX_QUERY_TERMS 1024u
#define MAX_TOKEN_CHARS 64u
#define MAX_TERM_BYTES (4u * MAX_TOKEN_CHARS)
#define MAX_RETRIEVAL_DEPTH 10000u
#define MAX_RRF_K 10000u
#define MAX_PAGE_DEPTH 10000u /* retrieval.page_depth (FORMAT.md §2.8) */
#define DEFAULT_PROBE_THRESHOLD 0.99
/* Python's json recurses about 990 levels before RecursionError; stay a little below. */
#define JSON_MAX_DEPTH 900
/* CPython (3.11+) refuses to convert integer literals of more digits (int_max_str_digits). */
#define JSON_MAX_INT_DIGITS 4300

typedef enum { UNCHECKED, CHECKED, DAMAGED } check_state;
typedef enum { LOAD_UNKNOWN, LOAD_READY, LOAD_ABSENT } load_state;

static void set_error(kbp_error *err, kbp_status status, const char *part, const char *fmt, va_list ap) {
  if (!err) return;
  err->status = status;
  snprintf(err->part, sizeof err->part, "%s", part ? part : "");
  size_t at = 0;
  if (part && *part) at = (size_t)snprintf(err->message, sizeof err->message, "%s: ", part);
  if (at < sizeof err->message) vsnprintf(err->message + at, sizeof err->message - at, fmt, ap);
  for (char *c = err->message; *c; c++)
    if (*c == '\n' || *c == '\r') *c = ' '; /* one line, whatever a message quotes */
}

static kbp_status report(kbp_error *err, kbp_status status, const char *part, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(err, status, part, fmt, ap);
  va_end(ap);
  return status;
}

static void clear_error(kbp_error *err) {
  err->status = KBP_OK;
  err->part[0] = 0;
  err->message[0] = 0;
}

const char *kbp_status_name(kbp_status status) {
  switch (status) {
  case KBP_OK: return "ok";
  case KBP_ERR_IO: return "cannot read file";
  case KBP_ERR_INVALID: return "invalid bundle";
  case KBP_ERR_ARGUMENT: return "invalid argument";
  case KBP_ERR_NOT_PRESENT: return "not in this bundle";
  case KBP_ERR_MEMORY: return "out of memory";
  }
  return "unknown status";
}

/* Little-endian fields, whatever the host. */
static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static int host_is_little_endian(void) {
  const uint16_t one = 1;
  uint8_t first;
  memcpy(&first, &one, 1);
  return first == 1;
}

/* ============================================================== 2. SHA-256 (FIPS 180-4) */

typedef struct {
  uint32_t h[8];
  uint64_t len;
  uint8_t buf[64];
  size_t n;
} sha256_ctx;

static const uint32_t SHA_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + SHA_K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
}

static void sha256_init(sha256_ctx *s) {
  static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  memcpy(s->h, iv, sizeof iv);
  s->len = 0;
  s->n = 0;
}

static void sha256_update(sha256_ctx *s, const uint8_t *p, size_t n) {
  s->len += n;
  if (s->n) { /* finish a partial block first */
    size_t take = 64 - s->n < n ? 64 - s->n : n;
    memcpy(s->buf + s->n, p, take);
    s->n += take; p += take; n -= take;
    if (s->n < 64) return;
    sha256_block(s->h, s->buf);
    s->n = 0;
  }
  for (; n >= 64; p += 64, n -= 64) sha256_block(s->h, p); /* whole blocks straight from the map */
  memcpy(s->buf, p, n);
  s->n = n;
}

static void sha256_final(sha256_ctx *s, uint8_t out[32]) {
  uint64_t bits = s->len * 8;
  uint8_t pad[72] = {0x80};
  size_t padlen = (s->n < 56 ? 56 : 120) - s->n;
  for (int i = 0; i < 8; i++) pad[padlen + i] = (uint8_t)(bits >> (56 - 8 * i));
  sha256_update(s, pad, padlen + 8);
  for (int i = 0; i < 8; i++) {
    out[4 * i] = (uint8_t)(s->h[i] >> 24); out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
    out[4 * i + 2] = (uint8_t)(s->h[i] >> 8); out[4 * i + 3] = (uint8_t)s->h[i];
  }
}

static void sha256(const uint8_t *p, uint64_t n, uint8_t out[32]) {
  sha256_ctx s;
  sha256_init(&s);
  sha256_update(&s, p, (size_t)n);
  sha256_final(&s, out);
}

/* ============================================================== 3. UTF-8 */

/* One code point at s[0..n): its byte length, or 0 if the bytes there are not well-formed UTF-8
 * (no overlongs, no surrogates, nothing above U+10FFFF: what Python's strict decoder accepts). */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
  uint8_t c = s[0];
  if (c < 0x80) { *cp = c; return 1; }
  size_t len;
  uint32_t v;
  uint8_t lo = 0x80, hi = 0xBF;
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
  *cp = v;
  return len;
}

static int utf8_valid(const uint8_t *s, size_t n) {
  uint32_t cp;
  for (size_t i = 0; i < n;) {
    size_t l = utf8_next(s + i, n - i, &cp);
    if (!l) return 0;
    i += l;
  }
  return 1;
}

/* Encodes c (surrogates too: JSON's lone "\ud800" escapes become their 3-byte form). */
static size_t utf8_put(uint32_t c, uint8_t *o) {
  if (c < 0x80) { o[0] = (uint8_t)c; return 1; }
  if (c < 0x800) { o[0] = (uint8_t)(0xC0 | c >> 6); o[1] = (uint8_t)(0x80 | (c & 0x3F)); return 2; }
  if (c < 0x10000) {
    o[0] = (uint8_t)(0xE0 | c >> 12); o[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F)); o[2] = (uint8_t)(0x80 | (c & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | c >> 18); o[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
  o[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F)); o[3] = (uint8_t)(0x80 | (c & 0x3F));
  return 4;
}

/* ============================================================== 4. JSON
 * A validating recursive-descent parser that accepts exactly what Python's json.loads accepts
 * (RFC 8259 plus NaN, Infinity and -Infinity; duplicate keys: the last wins), then lookups on the
 * checked text. A value is a pointer to its first byte; `end` is the end of the document. Lookups
 * rely on json_check having accepted the whole document first, and allocate nothing. */

typedef struct {
  const char *p, *end;
} jcur;

static void jws(jcur *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int jhex(char h) {
  return h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
}

static int jlit(jcur *c, const char *lit) {
  size_t l = strlen(lit);
  if ((size_t)(c->end - c->p) < l || memcmp(c->p, lit, l) != 0) return -1;
  c->p += l;
  return 0;
}

static int jscan_string(jcur *c) { /* at '"'; moves past the closing quote */
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
        for (int i = 1; i <= 4; i++)
          if (jhex(c->p[i]) < 0) return -1;
        c->p += 4;
      } else if (e == 0 || !strchr("\"\\/bfnrt", e)) {
        return -1;
      }
    }
  }
  return -1;
}

static int jdigits(jcur *c, long *count) {
  const char *s = c->p;
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
  if (count) *count = (long)(c->p - s);
  return c->p > s ? 0 : -1;
}

static int jscan_number(jcur *c) {
  if (jlit(c, "NaN") == 0 || jlit(c, "Infinity") == 0 || jlit(c, "-Infinity") == 0) return 0;
  if (c->p < c->end && *c->p == '-') c->p++;
  if (c->p >= c->end) return -1;
  long digits = 1;
  if (*c->p == '0') c->p++;
  else if (jdigits(c, &digits)) return -1;
  int is_int = 1;
  if (c->p < c->end && *c->p == '.') {
    c->p++; is_int = 0;
    if (jdigits(c, NULL)) return -1;
  }
  if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
    c->p++; is_int = 0;
    if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
    if (jdigits(c, NULL)) return -1;
  }
  return is_int && digits > JSON_MAX_INT_DIGITS ? -1 : 0;
}

static int jscan_value(jcur *c, int depth) { /* checks and skips one value (no surrounding space) */
  if (c->p >= c->end) return -1;
  char ch = *c->p;
  if (ch == '{' || ch == '[') {
    char close = ch == '{' ? '}' : ']';
    if (depth >= JSON_MAX_DEPTH) return -1;
    c->p++;
    jws(c);
    if (c->p < c->end && *c->p == close) { c->p++; return 0; }
    for (;;) {
      if (ch == '{') {
        if (jscan_string(c)) return -1;
        jws(c);
        if (c->p >= c->end || *c->p != ':') return -1;
        c->p++;
        jws(c);
      }
      if (jscan_value(c, depth + 1)) return -1;
      jws(c);
      if (c->p >= c->end) return -1;
      if (*c->p == close) { c->p++; return 0; }
      if (*c->p != ',') return -1;
      c->p++;
      jws(c);
    }
  }
  if (ch == '"') return jscan_string(c);
  if (ch == '-' || (ch >= '0' && ch <= '9') || ch == 'N' || ch == 'I') return jscan_number(c);
  if (jlit(c, "true") == 0 || jlit(c, "false") == 0 || jlit(c, "null") == 0) return 0;
  return -1;
}

/* 0 and *root = the value if text[0..n) is UTF-8 holding exactly one JSON value. */
static int json_check(const char *text, uint64_t n, const char **root) {
  if (!utf8_valid((const uint8_t *)text, (size_t)n)) return -1;
  jcur c = {text, text + n};
  jws(&c);
  *root = c.p;
  if (jscan_value(&c, 0)) return -1;
  jws(&c);
  return c.p == c.end ? 0 : -1;
}

typedef enum { J_NONE, J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_TRUE, J_FALSE, J_NULL } jkind;

static jkind jtype(const char *v) {
  if (!v) return J_NONE;
  switch (*v) {
  case '{': return J_OBJECT;
  case '[': return J_ARRAY;
  case '"': return J_STRING;
  case 't': return J_TRUE;
  case 'f': return J_FALSE;
  case 'n': return J_NULL;
  default: return J_NUMBER;
  }
}

/* Iterating a container: jcur positioned inside it. */
static int jopen(const char *v, const char *end, char open, jcur *it) {
  if (!v || *v != open) return 0;
  it->p = v + 1;
  it->end = end;
  jws(it);
  return 1;
}

static int jarray_next(jcur *it, const char **value) {
  if (it->p >= it->end || *it->p == ']') return 0;
  if (*it->p == ',') { it->p++; jws(it); }
  *value = it->p;
  if (jscan_value(it, 0)) return 0;
  jws(it);
  return 1;
}

static int jobject_next(jcur *it, const char **key, const char **value) {
  if (it->p >= it->end || *it->p == '}') return 0;
  if (*it->p == ',') { it->p++; jws(it); }
  *key = it->p;
  if (jscan_string(it)) return 0;
  jws(it);
  it->p++; /* ':' */
  jws(it);
  *value = it->p;
  if (jscan_value(it, 0)) return 0;
  jws(it);
  return 1;
}

/* Decodes the JSON string at v into at most cap bytes; its byte length, or -1 if it needs more. */
static long jdecode(const char *v, const char *end, uint8_t *out, size_t cap) {
  size_t n = 0;
  uint8_t tmp[4];
  for (const char *p = v + 1; p < end && *p != '"'; p++) {
    size_t l;
    if (*p == '\\') {
      char e = *++p;
      if (e == 'u') {
        uint32_t cp = (uint32_t)(jhex(p[1]) << 12 | jhex(p[2]) << 8 | jhex(p[3]) << 4 | jhex(p[4]));
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p > 6 && p[1] == '\\' && p[2] == 'u') {
          int h3 = jhex(p[3]), h4 = jhex(p[4]), h5 = jhex(p[5]), h6 = jhex(p[6]);
          uint32_t lo = (uint32_t)(h3 << 12 | h4 << 8 | h5 << 4 | h6);
          if (h3 >= 0 && h4 >= 0 && h5 >= 0 && h6 >= 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00); /* a pair is one code point, as in Python */
            p += 6;
          }
        }
        l = utf8_put(cp, tmp);
      } else {
        tmp[0] = (uint8_t)(e == 'b' ? '\b' : e == 'f' ? '\f' : e == 'n' ? '\n' : e == 'r' ? '\r' : e == 't' ? '\t' : e);
        l = 1;
      }
    } else {
      tmp[0] = (uint8_t)*p;
      l = 1;
    }
    if (n + l > cap) return -1;
    memcpy(out + n, tmp, l);
    n += l;
  }
  return (long)n;
}

/* Bytes jdecode needs for the string at v (at most its encoded length). */
static size_t jdecoded_bound(const char *v, const char *end) {
  jcur c = {v, end};
  jscan_string(&c);
  return (size_t)(c.p - v);
}

/* The string's length in code points, as Python's len() counts it. */
static uint64_t jstring_chars(const char *v, const char *end) {
  uint64_t n = 0;
  for (const char *p = v + 1; p < end && *p != '"'; p++) {
    if ((*p & 0xC0) == 0x80) continue; /* UTF-8 continuation byte */
    n++;
    if (*p == '\\') {
      p++;
      if (*p == 'u') {
        uint32_t cp = (uint32_t)(jhex(p[1]) << 12 | jhex(p[2]) << 8 | jhex(p[3]) << 4 | jhex(p[4]));
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF && end - p > 6 && p[1] == '\\' && p[2] == 'u') {
          int h[4] = {jhex(p[3]), jhex(p[4]), jhex(p[5]), jhex(p[6])};
          uint32_t lo = (uint32_t)(h[0] << 12 | h[1] << 8 | h[2] << 4 | h[3]);
          if (h[0] >= 0 && h[1] >= 0 && h[2] >= 0 && h[3] >= 0 && lo >= 0xDC00 && lo <= 0xDFFF) p += 6;
        }
      }
    }
  }
  return n;
}

static int jstreq(const char *v, const char *end, const char *lit) {
  uint8_t buf[80];
  size_t l = strlen(lit);
  if (jtype(v) != J_STRING || l >= sizeof buf) return 0;
  long n = jdecode(v, end, buf, sizeof buf);
  return n == (long)l && memcmp(buf, lit, l) == 0;
}

/* The value of `key` in the object at obj (the last if the key repeats, as Python keeps it), or
 * NULL when obj is not an object or lacks the key. */
static const char *jget(const char *obj, const char *end, const char *key) {
  jcur it;
  const char *k, *v, *found = NULL;
  if (!jopen(obj, end, '{', &it)) return NULL;
  while (jobject_next(&it, &k, &v))
    if (jstreq(k, end, key)) found = v;
  return found;
}

static int jis_integer_literal(const char *v, const char *end) {
  if (jtype(v) != J_NUMBER || *v == 'N' || *v == 'I' || (v[0] == '-' && v + 1 < end && v[1] == 'I')) return 0;
  jcur c = {v, end};
  if (jscan_number(&c)) return 0;
  for (const char *p = v; p < c.p; p++)
    if (*p == '.' || *p == 'e' || *p == 'E') return 0;
  return 1;
}

/* A JSON integer (Python int, not bool, not float) >= 0 that fits a u64. */
static int juint(const char *v, const char *end, uint64_t *out) {
  if (!jis_integer_literal(v, end)) return -1;
  const char *p = v;
  int negative = *p == '-';
  if (negative) p++;
  uint64_t x = 0;
  for (; p < end && *p >= '0' && *p <= '9'; p++) {
    unsigned digit = (unsigned)(*p - '0');
    if (x > (UINT64_MAX - digit) / 10) return -1;
    x = x * 10 + digit;
  }
  if (negative && x) return -1;
  *out = x;
  return 0;
}

/* Any JSON number (NaN and the infinities included) as the nearest double; strtod rounds
 * correctly, as Python's float() does. Integers too large for a double become infinite. */
static int jdouble(const char *v, const char *end, double *out) {
  if (jtype(v) != J_NUMBER) return -1;
  jcur c = {v, end};
  if (jscan_number(&c)) return -1;
  size_t n = (size_t)(c.p - v);
  char small[64], *copy = n < sizeof small ? small : malloc(n + 1);
  if (!copy) return -1;
  memcpy(copy, v, n);
  copy[n] = 0;
  char *stop;
  double d = strtod(copy, &stop);
  int ok = stop == copy + n;
  if (copy != small) free(copy);
  if (!ok) return -1;
  *out = d;
  return 0;
}

/* Python's `value == n` for a JSON value and a count: numbers compare by value, and true and
 * false are 1 and 0 (bool is an int in Python); anything else is unequal. */
static int jequals_count(const char *v, const char *end, uint64_t n) {
  uint64_t u;
  double d;
  switch (jtype(v)) {
  case J_TRUE: return n == 1;
  case J_FALSE: return n == 0;
  case J_NUMBER:
    if (jis_integer_literal(v, end)) return juint(v, end, &u) == 0 && u == n;
    return jdouble(v, end, &d) == 0 && d == (double)n && n < ((uint64_t)1 << 53);
  default: return 0;
  }
}

/* A finite JSON number that is not a boolean (Python: int or float, not bool, math.isfinite). */
static int jfinite_number(const char *v, const char *end, double *out) {
  return jtype(v) == J_NUMBER && jdouble(v, end, out) == 0 && isfinite(*out);
}

/* Python's truthiness, for `x or {}`. */
static int jfalsy(const char *v, const char *end) {
  double d;
  switch (jtype(v)) {
  case J_NONE: case J_NULL: case J_FALSE: return 1;
  case J_NUMBER: return jdouble(v, end, &d) == 0 && d == 0;
  case J_STRING: return v[1] == '"';
  case J_OBJECT: case J_ARRAY: {
    jcur it;
    jopen(v, end, *v, &it);
    return it.p < it.end && (*it.p == '}' || *it.p == ']');
  }
  default: return 0;
  }
}

/* ============================================================== 5. open: header, table, manifest */

typedef enum { DTYPE_FLOAT32, DTYPE_FLOAT16, DTYPE_INT8 } vector_dtype;

typedef struct {
  char name[33], encoding[17];
  uint64_t offset, length;
  uint8_t sha256[32];
  check_state state;
} section;

/* Sections this library reads; any other name is skipped (FORMAT.md §4). */
enum { S_MANIFEST, S_VECTORS, S_CHUNKS, S_CHUNK_OFFSETS, S_INDEX, S_PROBES, S_PROBE_VECTORS,
       S_LEX_VOCAB, S_LEX_VOCAB_OFFSETS, S_LEX_POSTINGS, S_LEX_POSTINGS_OFFSETS, S_LEX_DOC_LENGTHS,
       S_ENCODER_GRAPH, S_ENCODER_TOKENIZER, S_VECTOR_SCALES, S_VECTORS_BINARY, N_KNOWN };
static const char *const KNOWN_SECTIONS[N_KNOWN] = {
    "manifest", "vectors", "chunks", "chunk_offsets", "index", "probes", "probe_vectors",
    "lex_vocab", "lex_vocab_offsets", "lex_postings", "lex_postings_offsets", "lex_doc_lengths",
    "encoder_graph", "encoder_tokenizer", /* the encoder's are the names kbc gives; the manifest names them */
    "vector_scales", "vectors_binary"};   /* 1.4: the only names the manifest may give them (FORMAT.md §2.7) */
#define N_LEX 5
static const char *const LEX_ENCODINGS[N_LEX] = {"utf8", "u32le", "uleb128", "u32le", "u32le"};

typedef struct {
  int64_t index;   /* the block held, or -1 */
  uint8_t *raw;    /* its decompressed msgpack */
  size_t raw_len, raw_cap;
  uint32_t *starts; /* where each chunk's map begins in raw */
  size_t n, starts_cap;
} block_cache;

typedef struct {
  const uint8_t *vocab, *vocab_offsets, *postings, *postings_offsets, *doc_lengths;
  uint64_t vocab_len, postings_len, n, terms;
  double k1, b, avg;
  int stop_words;
  int stem; /* 0 none, 1 s-stemmer, 2 snowball-english (not implemented here) */
  double *scores; /* one per chunk, reused by every query */
} lexical_index;

typedef enum { FUSION_TMM, FUSION_MINMAX, FUSION_RRF } fusion_method;

typedef struct {
  kbp_mode default_mode;
  fusion_method fusion;
  double weight; /* share of the lexical list */
  uint64_t depth, rrf_k;
  kbp_unit unit;                  /* 1.5 (FORMAT.md §2.8): KBP_UNIT_CHUNK or KBP_UNIT_PAGE */
  uint64_t page_depth, page_chunks;
  double page_share;
} retrieval_settings;

typedef struct {
  const char *root, *end;  /* the probes section's JSON */
  const char **items;      /* each probe object */
  size_t n;
  const uint8_t *vectors;  /* n x dim f32le */
  double threshold;
} probe_set;

struct kbp_bundle {
  const uint8_t *data;
  uint64_t size;
  int mapped; /* 1: data is an mmap; 0: a malloc'd copy */
  unsigned major, minor;
  uint64_t table_offset;
  uint8_t table_sha[32], body_sha[32];
  section *sections; /* in table order */
  size_t n_sections;
  size_t *file_order; /* section indices by offset */
  int known[N_KNOWN]; /* index into sections, or -1 */

  const char *manifest, *manifest_end, *manifest_root;
  const char *m_embedder, *m_lexical, *m_retrieval, *m_index; /* manifest values, NULL when absent */
  uint64_t count, dim, block_size, n_blocks;
  vector_dtype dtype;
  int binary;                        /* 1.4: vectors_binary codes and a two-stage dense search */
  uint64_t candidates, multiplier;   /* their C and M (FORMAT.md §2.7) */
  size_t code_bytes;                 /* bytes per row of codes: ceil(dim / 8) */
  const char **source_paths; /* each sources[i].path, JSON string values */
  size_t n_sources;
  char *embedder_name;

  int offsets_checked, vectors_checked;
  block_cache block;
  ZSTD_DCtx *dctx;
  char *chunk_strings; /* the strings of the last kbp_chunk_get */
  size_t chunk_strings_cap;
  float *row; /* one row converted to native floats (float16 or big-endian bundles) */
  float *scales;       /* int8: vector_scales as native floats, once checked */
  float *weights;      /* int8: the query times the scales, per search */
  uint8_t *query_bits; /* binary: the query's sign bits, per search */
  uint32_t *distances; /* binary: each row's Hamming distance, per search */
  uint32_t *histogram; /* binary: rows per distance 0 .. 8 x code_bytes */
  uint64_t *candidate_ids;           /* binary: the shortlist, in id order */
  size_t candidate_cap;

  load_state lexical_state, retrieval_state, probes_state;
  lexical_index lex;
  retrieval_settings rs;
  probe_set probes;
  char *probe_strings;
  size_t probe_strings_cap;
  char *page_strings; /* the records of the last kbp_search_pages */
  size_t page_strings_cap;

  kbp_error err;
};

static kbp_status fail(kbp_bundle *kb, kbp_status status, const char *part, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(&kb->err, status, part, fmt, ap);
  va_end(ap);
  return status;
}

static kbp_status invalid(kbp_bundle *kb, const char *part, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(&kb->err, KBP_ERR_INVALID, part, fmt, ap);
  va_end(ap);
  return KBP_ERR_INVALID;
}

static kbp_status out_of_memory(kbp_bundle *kb) { return fail(kb, KBP_ERR_MEMORY, "", "out of memory"); }

/* Grows a buffer to hold at least `need` bytes. */
static int reserve(void **buf, size_t *cap, size_t need) {
  if (*cap >= need) return 0;
  size_t grown = need < 64 ? 64 : need;
  void *p = realloc(*buf, grown);
  if (!p) return -1;
  *buf = p;
  *cap = grown;
  return 0;
}

static int section_index(const kbp_bundle *kb, const char *name) {
  for (size_t i = 0; i < kb->n_sections; i++)
    if (strcmp(kb->sections[i].name, name) == 0) return (int)i;
  return -1;
}

/* A section's bytes, checked against its SHA-256 on first use. */
static kbp_status section_bytes(kbp_bundle *kb, int idx, const uint8_t **out) {
  section *s = &kb->sections[idx];
  if (s->state == UNCHECKED) {
    uint8_t digest[32];
    sha256(kb->data + s->offset, s->length, digest);
    s->state = memcmp(digest, s->sha256, 32) == 0 ? CHECKED : DAMAGED;
  }
  if (s->state == DAMAGED) return invalid(kb, s->name, "sha256 mismatch: section content is damaged");
  *out = kb->data + s->offset;
  return KBP_OK;
}

static kbp_status map_file(kbp_bundle *kb, const char *path) {
  int flags = O_RDONLY | O_NONBLOCK; /* a FIFO named as a bundle must not hang the open */
#ifdef O_CLOEXEC
  flags |= O_CLOEXEC;
#endif
  int fd = open(path, flags);
  if (fd < 0) {
    if (errno == ENOENT) return fail(kb, KBP_ERR_IO, "", "%s: no such file", path);
    if (errno == EISDIR) return fail(kb, KBP_ERR_IO, "", "%s: is a directory, not a bundle", path);
    return fail(kb, KBP_ERR_IO, "", "%s: cannot open: %s", path, strerror(errno));
  }
  struct stat st;
  kbp_status status = KBP_OK;
  if (fstat(fd, &st) != 0) status = fail(kb, KBP_ERR_IO, "", "%s: cannot stat: %s", path, strerror(errno));
  else if (S_ISDIR(st.st_mode)) status = fail(kb, KBP_ERR_IO, "", "%s: is a directory, not a bundle", path);
  else if (!S_ISREG(st.st_mode)) status = fail(kb, KBP_ERR_IO, "", "%s: not a regular file (a FIFO or device), not a bundle", path);
  else if ((uint64_t)st.st_size < HEADER_SIZE)
    status = invalid(kb, "header", "file is %lld bytes, shorter than the %u-byte header (truncated or not a bundle)",
                     (long long)st.st_size, HEADER_SIZE);
  else if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX)
    status = fail(kb, KBP_ERR_IO, "", "%s: too large for this address space", path);
  if (status != KBP_OK) { close(fd); return status; }

  kb->size = (uint64_t)st.st_size;
  void *map = mmap(NULL, (size_t)kb->size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map != MAP_FAILED) {
    kb->data = map;
    kb->mapped = 1;
  } else { /* no mmap here (some file systems): read a copy */
    uint8_t *copy = malloc((size_t)kb->size);
    size_t got = 0;
    while (copy && got < kb->size) {
      ssize_t r = read(fd, copy + got, (size_t)kb->size - got);
      if (r <= 0 && !(r < 0 && errno == EINTR)) break;
      if (r > 0) got += (size_t)r;
    }
    if (!copy) status = out_of_memory(kb);
    else if (got != kb->size) status = fail(kb, KBP_ERR_IO, "", "%s: read error", path);
    if (status != KBP_OK) free(copy);
    else kb->data = copy;
  }
  close(fd);
  return status;
}

static kbp_status read_header(kbp_bundle *kb) {
  const uint8_t *h = kb->data;
  uint8_t digest[32];
  if (memcmp(h, "KBPACK\0\0", 8) != 0) return invalid(kb, "header", "bad magic: not a .kbpack file");
  kb->major = (unsigned)le(h + 8, 2);
  kb->minor = (unsigned)le(h + 10, 2);
  if (kb->major > KBP_FORMAT_MAJOR)
    return invalid(kb, "header", "format version %u.%u is newer than this reader supports (%d.%d); upgrade libkbpack",
                   kb->major, kb->minor, KBP_FORMAT_MAJOR, KBP_FORMAT_MINOR);
  if (kb->major != KBP_FORMAT_MAJOR)
    return invalid(kb, "header", "format version %u.%u is not supported by this reader (%d.%d)", kb->major, kb->minor,
                   KBP_FORMAT_MAJOR, KBP_FORMAT_MINOR);
  sha256(h, 96, digest);
  if (memcmp(digest, h + 96, 32) != 0) return invalid(kb, "header", "header checksum mismatch: the header is damaged");
  uint64_t count = le(h + 12, 4), table_offset = le(h + 16, 8), file_length = le(h + 24, 8);
  if (file_length != kb->size)
    return invalid(kb, "file", "file is %llu bytes but its header says %llu: %s", (unsigned long long)kb->size,
                   (unsigned long long)file_length, kb->size < file_length ? "truncated" : "trailing bytes added");
  if (count > MAX_SECTIONS)
    return invalid(kb, "header", "section count %llu exceeds the limit of %u", (unsigned long long)count, MAX_SECTIONS);
  if (table_offset % ALIGN || table_offset < HEADER_SIZE || table_offset > file_length ||
      file_length - table_offset != count * ENTRY_SIZE)
    return invalid(kb, "header", "table at offset %llu with %llu entries does not end at the end of the file",
                   (unsigned long long)table_offset, (unsigned long long)count);
  kb->n_sections = (size_t)count;
  kb->table_offset = table_offset;
  memcpy(kb->table_sha, h + 32, 32);
  memcpy(kb->body_sha, h + 64, 32);
  return KBP_OK;
}

/* Name and encoding fields: printable ASCII without spaces, NUL-padded, not empty. */
static int fixed_ascii(const uint8_t *raw, size_t size, char *out) {
  size_t n = 0;
  while (n < size && raw[n]) {
    if (raw[n] <= 32 || raw[n] >= 127) return 0;
    n++;
  }
  for (size_t i = n; i < size; i++)
    if (raw[i]) return 0;
  memcpy(out, raw, n);
  out[n] = 0;
  return n > 0;
}

/* Offset order, ties in table order: Python's stable sort, whose neighbours decide overlaps.
 * Insertion sort: stable, no globals, and at most 1024 entries. */
static void order_by_offset(kbp_bundle *kb) {
  for (size_t i = 0; i < kb->n_sections; i++) {
    size_t j = i;
    while (j > 0 && kb->sections[kb->file_order[j - 1]].offset > kb->sections[i].offset) {
      kb->file_order[j] = kb->file_order[j - 1];
      j--;
    }
    kb->file_order[j] = i;
  }
}

static kbp_status read_table(kbp_bundle *kb) {
  const uint8_t *table = kb->data + kb->table_offset;
  uint8_t digest[32];
  sha256(table, kb->n_sections * ENTRY_SIZE, digest);
  if (memcmp(digest, kb->table_sha, 32) != 0) return invalid(kb, "table", "section table checksum mismatch: the table is damaged");
  kb->sections = calloc(kb->n_sections ? kb->n_sections : 1, sizeof *kb->sections);
  kb->file_order = calloc(kb->n_sections ? kb->n_sections : 1, sizeof *kb->file_order);
  if (!kb->sections || !kb->file_order) return out_of_memory(kb);
  for (size_t i = 0; i < kb->n_sections; i++) {
    const uint8_t *e = table + i * ENTRY_SIZE;
    section *s = &kb->sections[i];
    if (!fixed_ascii(e, 32, s->name) || !fixed_ascii(e + 32, 16, s->encoding))
      return invalid(kb, "table", "entry %zu has a malformed name or encoding", i);
    for (int j = 96; j < 128; j++)
      if (e[j]) return invalid(kb, "table", "entry %zu (%s) has non-zero reserved bytes", i, s->name);
    for (size_t j = 0; j < i; j++)
      if (strcmp(kb->sections[j].name, s->name) == 0) return invalid(kb, "table", "section '%s' appears twice", s->name);
    s->offset = le(e + 48, 8);
    s->length = le(e + 56, 8);
    memcpy(s->sha256, e + 64, 32);
    if (s->offset % ALIGN || s->offset < HEADER_SIZE || s->offset > kb->table_offset || s->length > kb->table_offset - s->offset)
      return invalid(kb, s->name, "offset %llu / length %llu lies outside the data area or is misaligned",
                     (unsigned long long)s->offset, (unsigned long long)s->length);
  }
  order_by_offset(kb);
  for (size_t i = 1; i < kb->n_sections; i++) {
    const section *a = &kb->sections[kb->file_order[i - 1]], *b = &kb->sections[kb->file_order[i]];
    if (a->offset + a->length > b->offset) return invalid(kb, b->name, "overlaps section '%s'", a->name);
  }
  for (int k = 0; k < N_KNOWN; k++) kb->known[k] = section_index(kb, KNOWN_SECTIONS[k]);
  for (int k = S_MANIFEST; k <= S_CHUNK_OFFSETS; k++)
    if (kb->known[k] < 0) return invalid(kb, "table", "required section '%s' is missing", KNOWN_SECTIONS[k]);
  return KBP_OK;
}

/* A copy of a JSON string value, NUL-terminated (malloc'd). */
static char *jstrdup(const char *v, const char *end) {
  size_t cap = jdecoded_bound(v, end);
  char *out = malloc(cap + 1);
  if (!out) return NULL;
  long n = jdecode(v, end, (uint8_t *)out, cap);
  out[n < 0 ? 0 : n] = 0;
  return out;
}

static const char *dtype_encoding(vector_dtype t) { return t == DTYPE_INT8 ? "i8" : t == DTYPE_FLOAT16 ? "f16le" : "f32le"; }
static size_t dtype_size(vector_dtype t) { return t == DTYPE_INT8 ? 1 : t == DTYPE_FLOAT16 ? 2 : 4; }

/* length == rows x row_bytes, without overflow (row_bytes > 0). */
static int is_table(uint64_t length, uint64_t rows, uint64_t row_bytes) {
  if (rows == 0) return length == 0;
  return row_bytes <= length / rows && length == rows * row_bytes;
}

#define MAX_BINARY_CANDIDATES 65536u
#define MAX_BINARY_MULTIPLIER 1024u

/* Format 1.4 (FORMAT.md §2.7): int8 vectors need their scales; any dtype may have binary codes.
 * Only names, encodings, lengths and bounds here; the bytes are checked on first use. */
static kbp_status read_vector_extras(kbp_bundle *kb, const char *vec) {
  const char *end = kb->manifest_end;
  if (kb->dtype == DTYPE_INT8) {
    if (!jstreq(jget(vec, end, "scales"), end, KNOWN_SECTIONS[S_VECTOR_SCALES]))
      return invalid(kb, "manifest", "int8 vectors need vectors.scales = \"vector_scales\"");
    if (kb->known[S_VECTOR_SCALES] < 0) return invalid(kb, "vector_scales", "section is missing (int8 vectors need it)");
    const section *s = &kb->sections[kb->known[S_VECTOR_SCALES]];
    if (strcmp(s->encoding, "f32le") != 0 || s->length != kb->dim * 4)
      return invalid(kb, "vector_scales", "expected %llu f32le values, found %llu bytes (%s)", (unsigned long long)kb->dim,
                     (unsigned long long)s->length, s->encoding);
  }
  const char *binary = jget(vec, end, "binary");
  if (!binary || jtype(binary) == J_NULL) return KBP_OK; /* Python: vec.get("binary") is None */
  const char *name = jget(binary, end, "section"), *c = jget(binary, end, "candidates"), *m = jget(binary, end, "multiplier");
  if (jtype(binary) != J_OBJECT || !jstreq(name, end, KNOWN_SECTIONS[S_VECTORS_BINARY]))
    return invalid(kb, "manifest", "vectors.binary must be an object naming section \"vectors_binary\"");
  if (juint(c, end, &kb->candidates) || kb->candidates < 1 || kb->candidates > MAX_BINARY_CANDIDATES ||
      juint(m, end, &kb->multiplier) || kb->multiplier < 1 || kb->multiplier > MAX_BINARY_MULTIPLIER)
    return invalid(kb, "manifest", "vectors.binary: candidates must be an integer within [1, %u], multiplier within [1, %u]",
                   MAX_BINARY_CANDIDATES, MAX_BINARY_MULTIPLIER);
  if (kb->known[S_VECTORS_BINARY] < 0) return invalid(kb, "vectors_binary", "section is missing (the manifest names it)");
  const section *s = &kb->sections[kb->known[S_VECTORS_BINARY]];
  kb->code_bytes = (size_t)(kb->dim / 8 + (kb->dim % 8 != 0));
  if (strcmp(s->encoding, "b1") != 0 || !is_table(s->length, kb->count, kb->code_bytes))
    return invalid(kb, "vectors_binary", "expected %llu x %zu b1 bytes, found %llu bytes (%s)", (unsigned long long)kb->count,
                   kb->code_bytes, (unsigned long long)s->length, s->encoding);
  if (kb->known[S_INDEX] >= 0) /* the codes are the index: two answers to one search would disagree */
    return invalid(kb, "index", "a bundle with binary codes stores no FAISS index (FORMAT.md §2.7)");
  kb->binary = 1;
  return KBP_OK;
}

/* format.major/minor, vectors, chunks: the counts everything else relies on (Python: _read_manifest). */
static kbp_status read_counts(kbp_bundle *kb) {
  const char *end = kb->manifest_end, *root = kb->manifest_root;
  const char *fmt = jget(root, end, "format"), *vec = jget(root, end, "vectors"), *chunks = jget(root, end, "chunks");
  const char *fmt_major = jget(fmt, end, "major"), *fmt_minor = jget(fmt, end, "minor");
  const char *count = jget(vec, end, "count"), *dim = jget(vec, end, "dim"), *dtype = jget(vec, end, "dtype");
  const char *block_size = jget(chunks, end, "block_size"), *chunk_count = jget(chunks, end, "count");
  if (!fmt_major || !fmt_minor || !count || !dim || !dtype || !block_size || !chunk_count)
    return invalid(kb, "manifest", "missing or malformed field: format, vectors or chunks");
  if (!jequals_count(fmt_major, end, kb->major) || !jequals_count(fmt_minor, end, kb->minor))
    return invalid(kb, "manifest", "format disagrees with header %u.%u", kb->major, kb->minor);
  if (juint(count, end, &kb->count) || juint(dim, end, &kb->dim) || juint(block_size, end, &kb->block_size))
    return invalid(kb, "manifest", "counts, dim and block_size must be integers >= 0");
  if (!jequals_count(chunk_count, end, kb->count)) return invalid(kb, "manifest", "chunk count differs from vector count");
  if (kb->dim == 0 || kb->block_size == 0) return invalid(kb, "manifest", "counts must be >= 0, dim and block_size > 0");
  if (jstreq(dtype, end, "float32")) kb->dtype = DTYPE_FLOAT32;
  else if (jstreq(dtype, end, "float16")) kb->dtype = DTYPE_FLOAT16;
  else if (jstreq(dtype, end, "int8")) kb->dtype = DTYPE_INT8;
  else return invalid(kb, "manifest", "unknown vector dtype"); /* never guessed (FORMAT.md §2.7) */
  if (kb->dim > SIZE_MAX / 4) return invalid(kb, "manifest", "dim %llu is too large", (unsigned long long)kb->dim);

  const section *v = &kb->sections[kb->known[S_VECTORS]];
  uint64_t item = dtype_size(kb->dtype);
  if (strcmp(v->encoding, dtype_encoding(kb->dtype)) != 0)
    return invalid(kb, "vectors", "encoding '%s' disagrees with manifest dtype %s", v->encoding, kbp_dtype(kb));
  if (!is_table(v->length, kb->count, kb->dim * item))
    return invalid(kb, "vectors", "length %llu != %llu x %llu x %llu bytes", (unsigned long long)v->length,
                   (unsigned long long)kb->count, (unsigned long long)kb->dim, (unsigned long long)item);
  kbp_status st = read_vector_extras(kb, vec);
  if (st != KBP_OK) return st;
  kb->n_blocks = kb->count / kb->block_size + (kb->count % kb->block_size != 0);
  const section *o = &kb->sections[kb->known[S_CHUNK_OFFSETS]];
  if (strcmp(o->encoding, "u64le") != 0 || o->length % 8 || o->length / 8 != kb->n_blocks + 1)
    return invalid(kb, "chunk_offsets", "expected %llu u64le entries, found %llu bytes (%s)",
                   (unsigned long long)(kb->n_blocks + 1), (unsigned long long)o->length, o->encoding);
  if (strcmp(kb->sections[kb->known[S_CHUNKS]].encoding, "zstd-msgpack") != 0)
    return invalid(kb, "chunks", "unknown encoding '%s'", kb->sections[kb->known[S_CHUNKS]].encoding);
  return KBP_OK;
}

/* The manifest objects kbc reads must have their JSON type when present (Python: _MANIFEST_TYPES). */
static kbp_status check_manifest_types(kbp_bundle *kb) {
  static const char *const objects[] = {"embedder", "chunking", "index", "counts", "lexical", "retrieval", "extraction"};
  static const char *const arrays[] = {"sources", "skipped", "degraded"};
  const char *end = kb->manifest_end, *root = kb->manifest_root;
  for (size_t i = 0; i < sizeof objects / sizeof *objects; i++) {
    const char *v = jget(root, end, objects[i]);
    if (v && jtype(v) != J_OBJECT) return invalid(kb, "manifest", "'%s' is not an object", objects[i]);
  }
  for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
    const char *v = jget(root, end, arrays[i]);
    if (v && jtype(v) != J_ARRAY) return invalid(kb, "manifest", "'%s' is not an array", arrays[i]);
  }
  kb->m_embedder = jget(root, end, "embedder");
  kb->m_lexical = jget(root, end, "lexical");
  kb->m_retrieval = jget(root, end, "retrieval");
  kb->m_index = jget(root, end, "index");
  return KBP_OK;
}

/* Every source must be an object with a path string; their paths are kept for kbp_chunk_get. */
static kbp_status read_sources(kbp_bundle *kb) {
  const char *end = kb->manifest_end, *sources = jget(kb->manifest_root, end, "sources"), *entry;
  jcur it;
  size_t n = 0;
  if (!jopen(sources, end, '[', &it)) return KBP_OK;
  while (jarray_next(&it, &entry)) n++;
  kb->source_paths = calloc(n ? n : 1, sizeof *kb->source_paths);
  if (!kb->source_paths) return out_of_memory(kb);
  jopen(sources, end, '[', &it);
  while (jarray_next(&it, &entry)) {
    const char *path = jget(entry, end, "path");
    if (jtype(path) != J_STRING)
      return invalid(kb, "manifest", "every entry of 'sources' must be an object with a 'path' string");
    kb->source_paths[kb->n_sources++] = path;
  }
  return KBP_OK;
}

static kbp_status read_embedder(kbp_bundle *kb) {
  static const char *const prompts[2] = {"query_prompt", "document_prompt"};
  const char *end = kb->manifest_end, *e = kb->m_embedder;
  for (int i = 0; i < 2; i++) {
    const char *p = jget(e, end, prompts[i]);
    /* every query is tokenised with the prompt: a 30 MB one would abort a tokenizer */
    if (p && (jtype(p) != J_STRING || jstring_chars(p, end) > MAX_PROMPT_CHARS))
      return invalid(kb, "manifest", "embedder.%s must be a string of at most %u characters", prompts[i], MAX_PROMPT_CHARS);
  }
  const char *dim = jget(e, end, "dim");
  if (dim && !jequals_count(dim, end, kb->dim))
    return invalid(kb, "manifest", "embedder.dim disagrees with the %llu-d vectors", (unsigned long long)kb->dim);
  const char *name = jget(e, end, "name");
  kb->embedder_name = jtype(name) == J_STRING ? jstrdup(name, end) : calloc(1, 1);
  return kb->embedder_name ? KBP_OK : out_of_memory(kb);
}

static kbp_status read_manifest(kbp_bundle *kb) {
  int idx = kb->known[S_MANIFEST];
  const section *s = &kb->sections[idx];
  const uint8_t *bytes = NULL;
  kbp_status st;
  if (strcmp(s->encoding, "json") != 0) return invalid(kb, "manifest", "unknown encoding '%s'", s->encoding);
  if (s->length > MAX_MANIFEST_BYTES)
    return invalid(kb, "manifest", "%llu bytes exceeds the %llu-byte limit", (unsigned long long)s->length,
                   (unsigned long long)MAX_MANIFEST_BYTES);
  if ((st = section_bytes(kb, idx, &bytes)) != KBP_OK) return st;
  kb->manifest = (const char *)bytes;
  kb->manifest_end = kb->manifest + s->length;
  if (json_check(kb->manifest, s->length, &kb->manifest_root)) return invalid(kb, "manifest", "invalid JSON (or not UTF-8)");
  if (jtype(kb->manifest_root) != J_OBJECT) return invalid(kb, "manifest", "is not a JSON object");
  if ((st = read_counts(kb)) != KBP_OK) return st;
  if ((st = check_manifest_types(kb)) != KBP_OK) return st;
  if ((st = read_sources(kb)) != KBP_OK) return st;
  return read_embedder(kb);
}

/* kbp_open and kbp_open_memory after the bytes are in kb->data: the checks of FORMAT.md §5 steps 1-5. */
static kbp_status open_checked(kbp_bundle *kb, kbp_status st, kbp_bundle **out, kbp_error *err) {
  if (st == KBP_OK) st = read_header(kb);
  if (st == KBP_OK) st = read_table(kb);
  if (st == KBP_OK) st = read_manifest(kb);
  if (st == KBP_OK && !(kb->dctx = ZSTD_createDCtx())) st = out_of_memory(kb);
  *err = kb->err;
  if (st != KBP_OK) {
    kbp_close(kb);
    return st;
  }
  clear_error(&kb->err);
  clear_error(err);
  *out = kb;
  return KBP_OK;
}

kbp_status kbp_open(const char *path, kbp_bundle **out, kbp_error *err) {
  kbp_error scratch;
  if (!err) err = &scratch;
  if (out) *out = NULL;
  if (!path || !out) return report(err, KBP_ERR_ARGUMENT, "", "kbp_open: path and out must not be NULL");
  kbp_bundle *kb = calloc(1, sizeof *kb);
  if (!kb) return report(err, KBP_ERR_MEMORY, "", "out of memory");
  kb->block.index = -1;
  return open_checked(kb, map_file(kb, path), out, err);
}

kbp_status kbp_open_memory(const void *data, size_t len, kbp_bundle **out, kbp_error *err) {
  kbp_error scratch;
  if (!err) err = &scratch;
  if (out) *out = NULL;
  if ((!data && len) || !out) return report(err, KBP_ERR_ARGUMENT, "", "kbp_open_memory: data and out must not be NULL");
  kbp_bundle *kb = calloc(1, sizeof *kb);
  if (!kb) return report(err, KBP_ERR_MEMORY, "", "out of memory");
  kb->block.index = -1;
  kbp_status st = KBP_OK;
  if (len < HEADER_SIZE) /* the message kbp_open gives a file this short */
    st = invalid(kb, "header", "file is %zu bytes, shorter than the %u-byte header (truncated or not a bundle)", len, HEADER_SIZE);
  else if (!(kb->data = malloc(len))) /* a copy of exactly len bytes: the caller's buffer stays the caller's */
    st = out_of_memory(kb);
  else {
    memcpy((void *)kb->data, data, len);
    kb->size = len;
  }
  return open_checked(kb, st, out, err);
}

void kbp_close(kbp_bundle *kb) {
  if (!kb) return;
  if (kb->data && kb->mapped) munmap((void *)kb->data, (size_t)kb->size);
  else free((void *)kb->data);
  free(kb->sections);
  free(kb->file_order);
  free(kb->source_paths);
  free(kb->embedder_name);
  free(kb->block.raw);
  free(kb->block.starts);
  ZSTD_freeDCtx(kb->dctx);
  free(kb->chunk_strings);
  free(kb->row);
  free(kb->scales);
  free(kb->weights);
  free(kb->query_bits);
  free(kb->distances);
  free(kb->histogram);
  free(kb->candidate_ids);
  free(kb->lex.scores);
  free(kb->probes.items);
  free(kb->probe_strings);
  free(kb->page_strings);
  free(kb);
}

const kbp_error *kbp_last_error(const kbp_bundle *kb) { return kb ? &kb->err : NULL; }

void kbp_format_version(const kbp_bundle *kb, unsigned *major, unsigned *minor) {
  if (major) *major = kb->major;
  if (minor) *minor = kb->minor;
}
uint64_t kbp_count(const kbp_bundle *kb) { return kb->count; }
size_t kbp_dim(const kbp_bundle *kb) { return (size_t)kb->dim; }
const char *kbp_dtype(const kbp_bundle *kb) {
  return kb->dtype == DTYPE_INT8 ? "int8" : kb->dtype == DTYPE_FLOAT16 ? "float16" : "float32";
}

int kbp_binary(const kbp_bundle *kb, unsigned *candidates, unsigned *multiplier) {
  if (candidates) *candidates = kb->binary ? (unsigned)kb->candidates : 0;
  if (multiplier) *multiplier = kb->binary ? (unsigned)kb->multiplier : 0;
  return kb->binary;
}
uint64_t kbp_block_size(const kbp_bundle *kb) { return kb->block_size; }
const char *kbp_embedder_name(const kbp_bundle *kb) { return kb->embedder_name; }

const char *kbp_manifest_json(const kbp_bundle *kb, size_t *len) {
  if (len) *len = (size_t)(kb->manifest_end - kb->manifest);
  return kb->manifest;
}

int kbp_has_lexical(const kbp_bundle *kb) {
  if (kb->m_lexical) return 1;
  for (int k = S_LEX_VOCAB; k <= S_LEX_DOC_LENGTHS; k++)
    if (kb->known[k] >= 0) return 1;
  return 0;
}

size_t kbp_section_count(const kbp_bundle *kb) { return kb->n_sections; }

kbp_status kbp_section_at(const kbp_bundle *kb, size_t i, kbp_section *out) {
  if (!out || i >= kb->n_sections) return KBP_ERR_ARGUMENT;
  size_t idx = kb->file_order[i];
  const section *s = &kb->sections[idx];
  out->name = s->name;
  out->encoding = s->encoding;
  out->offset = s->offset;
  out->length = s->length;
  out->sha256 = s->sha256;
  out->known = 0;
  for (int k = 0; k < N_KNOWN; k++) /* scales and codes only when the manifest makes them part of the vectors */
    if (kb->known[k] == (int)idx)
      out->known = (k != S_VECTOR_SCALES || kb->dtype == DTYPE_INT8) && (k != S_VECTORS_BINARY || kb->binary);
  return KBP_OK;
}

/* ============================================================== 6. chunks
 * Each block is one zstd frame holding a msgpack array of exactly `block_size` maps (the last
 * block: the remainder). The subset kbc writes and reads (Python: _unpack_block, _block): one
 * array, maps of at most 64 entries with str (or bin, ignored) keys and scalar values, strings
 * valid UTF-8, no extension types, nothing after the array. */

static kbp_status check_offsets(kbp_bundle *kb) {
  const uint8_t *o = NULL;
  kbp_status st = section_bytes(kb, kb->known[S_CHUNK_OFFSETS], &o);
  if (st != KBP_OK || kb->offsets_checked) return st;
  uint64_t chunks_len = kb->sections[kb->known[S_CHUNKS]].length, prev = 0;
  int ok = le(o, 8) == 0 && le(o + 8 * kb->n_blocks, 8) == chunks_len;
  for (uint64_t b = 1; ok && b <= kb->n_blocks; b++) {
    uint64_t v = le(o + 8 * b, 8);
    ok = v > prev;
    prev = v;
  }
  if (!ok) return invalid(kb, "chunk_offsets", "block offsets are not strictly increasing from 0 to the chunks length");
  kb->offsets_checked = 1;
  return KBP_OK;
}

typedef enum { MP_NIL, MP_BOOL, MP_INT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT } mp_kind;

typedef struct {
  mp_kind kind;
  int64_t i;           /* MP_INT, saturated to int64 */
  const uint8_t *data; /* MP_STR, MP_BIN, MP_EXT payload */
  uint64_t len;        /* payload bytes, or MP_ARRAY / MP_MAP element count */
} mp_value;

typedef struct {
  const uint8_t *p, *end;
} mp_cursor;

static int mp_take(mp_cursor *c, uint64_t n, const uint8_t **at) {
  if ((uint64_t)(c->end - c->p) < n) return -1;
  *at = c->p;
  c->p += n;
  return 0;
}

static int mp_uint(mp_cursor *c, int bytes, uint64_t *out) { /* big-endian, as msgpack stores it */
  const uint8_t *at;
  if (mp_take(c, (uint64_t)bytes, &at)) return -1;
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v = v << 8 | at[i];
  *out = v;
  return 0;
}

static int mp_payload(mp_cursor *c, mp_value *v, mp_kind kind, uint64_t len) {
  v->kind = kind;
  v->len = len;
  return mp_take(c, len, &v->data);
}

/* One object's header (and, for str/bin/ext, its payload). -1 on truncation or byte 0xc1. */
static int mp_next(mp_cursor *c, mp_value *v) {
  const uint8_t *at;
  uint64_t u;
  if (mp_take(c, 1, &at)) return -1;
  uint8_t t = *at;
  memset(v, 0, sizeof *v);
  if (t <= 0x7f) { v->kind = MP_INT; v->i = t; return 0; }
  if (t >= 0xe0) { v->kind = MP_INT; v->i = (int8_t)t; return 0; }
  if (t >= 0x80 && t <= 0x8f) { v->kind = MP_MAP; v->len = t & 0x0f; return 0; }
  if (t >= 0x90 && t <= 0x9f) { v->kind = MP_ARRAY; v->len = t & 0x0f; return 0; }
  if (t >= 0xa0 && t <= 0xbf) return mp_payload(c, v, MP_STR, t & 0x1f);
  switch (t) {
  case 0xc0: v->kind = MP_NIL; return 0;
  case 0xc2: case 0xc3: v->kind = MP_BOOL; v->i = t == 0xc3; return 0;
  case 0xc4: case 0xc5: case 0xc6:
    return mp_uint(c, 1 << (t - 0xc4), &u) ? -1 : mp_payload(c, v, MP_BIN, u);
  case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32: length, type byte, data */
    return mp_uint(c, 1 << (t - 0xc7), &u) ? -1 : mp_payload(c, v, MP_EXT, u + 1);
  case 0xca: v->kind = MP_FLOAT; return mp_take(c, 4, &at);
  case 0xcb: v->kind = MP_FLOAT; return mp_take(c, 8, &at);
  case 0xcc: case 0xcd: case 0xce: case 0xcf:
    if (mp_uint(c, 1 << (t - 0xcc), &u)) return -1;
    v->kind = MP_INT;
    v->i = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
    v->len = u > (uint64_t)INT64_MAX ? u : 0; /* what saturated, so that page keys (§2.8) still tell them apart */
    return 0;
  case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
    int bytes = 1 << (t - 0xd0);
    if (mp_uint(c, bytes, &u)) return -1;
    v->kind = MP_INT;
    if (bytes < 8 && (u >> (8 * bytes - 1))) u |= ~(uint64_t)0 << (8 * bytes); /* sign-extend */
    memcpy(&v->i, &u, sizeof u);
    return 0;
  }
  case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1..16 */
    return mp_payload(c, v, MP_EXT, ((uint64_t)1 << (t - 0xd4)) + 1);
  case 0xd9: case 0xda: case 0xdb:
    return mp_uint(c, 1 << (t - 0xd9), &u) ? -1 : mp_payload(c, v, MP_STR, u);
  case 0xdc: case 0xdd:
    if (mp_uint(c, 2 << (t - 0xdc), &u)) return -1;
    v->kind = MP_ARRAY; v->len = u;
    return 0;
  case 0xde: case 0xdf:
    if (mp_uint(c, 2 << (t - 0xde), &u)) return -1;
    v->kind = MP_MAP; v->len = u;
    return 0;
  default: return -1; /* 0xc1: never used */
  }
}

/* The chunk fields kbc reads (FORMAT.md §2.1) and their types; others are ignored. */
enum { F_TEXT, F_CONTEXT, F_SOURCE, F_SEQ, F_PAGE_START, F_PAGE_END, F_CHAR_START, F_CHAR_END, F_TOKENS,
       F_LABEL_START, F_LABEL_END, F_RECORD, N_FIELDS };
static const char *const FIELD_NAMES[N_FIELDS] = {"text", "context", "source", "seq", "page_start", "page_end",
                                                  "char_start", "char_end", "tokens", "label_start", "label_end", "record"};
static const mp_kind FIELD_KINDS[N_FIELDS] = {MP_STR, MP_STR, MP_INT, MP_INT, MP_INT, MP_INT,
                                              MP_INT, MP_INT, MP_INT, MP_STR, MP_STR, MP_STR};

static int field_of(const mp_value *key) {
  if (key->kind != MP_STR) return -1; /* bin keys are bytes in Python: never equal to a str key */
  for (int f = 0; f < N_FIELDS; f++)
    if (strlen(FIELD_NAMES[f]) == key->len && memcmp(FIELD_NAMES[f], key->data, key->len) == 0) return f;
  return -1;
}

typedef struct {
  mp_value value[N_FIELDS];
  unsigned present; /* bit f: the map holds field f (its last occurrence is in value[f]) */
} chunk_fields;

/* Reads one chunk map. With `checking`, refuses what Python's reader refuses. */
static const char *read_chunk_map(mp_cursor *c, chunk_fields *out, int checking) {
  mp_value map, key, value;
  memset(out, 0, sizeof *out);
  if (mp_next(c, &map)) return "truncated";
  if (map.kind != MP_MAP) return map.kind == MP_ARRAY ? "a chunk field holds an array" : "an element is not a map";
  if (map.len > MAX_KEYS_PER_CHUNK) return "a chunk map has more than 64 entries";
  for (uint64_t e = 0; e < map.len; e++) {
    if (mp_next(c, &key) || mp_next(c, &value)) return "truncated";
    if (checking) {
      if (key.kind != MP_STR && key.kind != MP_BIN) return "a map key is not a string";
      if (value.kind == MP_ARRAY) return "a chunk field holds an array";
      if (value.kind == MP_MAP) return "more maps than chunks (nested objects)";
      if (value.kind == MP_EXT) return "msgpack extension types are not allowed";
      if ((key.kind == MP_STR && !utf8_valid(key.data, (size_t)key.len)) ||
          (value.kind == MP_STR && !utf8_valid(value.data, (size_t)value.len)))
        return "a string is not UTF-8";
    }
    int f = field_of(&key);
    if (f >= 0) { /* duplicate keys: the last wins, as in a Python dict */
      out->value[f] = value;
      out->present |= 1u << f;
    }
  }
  if (!checking) return NULL;
  if (!(out->present & 1u << F_TEXT) || out->value[F_TEXT].kind != MP_STR) return "a chunk record has no text string";
  for (int f = 0; f < N_FIELDS; f++)
    if (out->present & 1u << f && out->value[f].kind != FIELD_KINDS[f]) return "a chunk field has the wrong type";
  return NULL;
}

/* Checks a decompressed block and records where each of its `expected` maps starts. */
static kbp_status index_block(kbp_bundle *kb, uint64_t b, uint64_t expected) {
  block_cache *bc = &kb->block;
  mp_cursor c = {bc->raw, bc->raw + bc->raw_len};
  mp_value top;
  if (mp_next(&c, &top) || top.kind != MP_ARRAY || top.len != expected)
    return invalid(kb, "chunks", "block %llu does not hold %llu chunk records", (unsigned long long)b, (unsigned long long)expected);
  if (expected > bc->raw_len / MIN_CHUNK_MAP_BYTES) /* each record takes 7 bytes or more: bound the index first */
    return invalid(kb, "chunks", "block %llu is too short for %llu chunk records", (unsigned long long)b, (unsigned long long)expected);
  void *starts = bc->starts;
  if (reserve(&starts, &bc->starts_cap, (size_t)expected * sizeof *bc->starts)) return out_of_memory(kb);
  bc->starts = starts;
  for (uint64_t j = 0; j < expected; j++) {
    chunk_fields fields;
    bc->starts[j] = (uint32_t)(c.p - bc->raw);
    const char *why = read_chunk_map(&c, &fields, 1);
    if (why) return invalid(kb, "chunks", "block %llu cannot be decoded: %s", (unsigned long long)b, why);
  }
  if (c.p != c.end) return invalid(kb, "chunks", "block %llu cannot be decoded: extra data after the records", (unsigned long long)b);
  bc->n = (size_t)expected;
  return KBP_OK;
}

static kbp_status load_block(kbp_bundle *kb, uint64_t b) {
  block_cache *bc = &kb->block;
  if (bc->index == (int64_t)b) return KBP_OK;
  const uint8_t *offsets = NULL, *chunks = NULL;
  kbp_status st;
  if ((st = check_offsets(kb)) != KBP_OK || (st = section_bytes(kb, kb->known[S_CHUNK_OFFSETS], &offsets)) != KBP_OK ||
      (st = section_bytes(kb, kb->known[S_CHUNKS], &chunks)) != KBP_OK)
    return st;
  bc->index = -1;
  uint64_t start = le(offsets + 8 * b, 8), len = le(offsets + 8 * (b + 1), 8) - start;
  const uint8_t *frame = chunks + start;
  uint64_t expected = kb->block_size < kb->count - b * kb->block_size ? kb->block_size : kb->count - b * kb->block_size;
  /* A frame must declare its decompressed size, and that size is bounded before any allocation. */
  unsigned long long size = ZSTD_getFrameContentSize(frame, (size_t)len);
  if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR)
    return invalid(kb, "chunks", "block %llu cannot be decoded: no zstd frame with a declared size", (unsigned long long)b);
  if (size > MAX_BLOCK_BYTES)
    return invalid(kb, "chunks", "block %llu declares %llu decompressed bytes (limit %llu)", (unsigned long long)b, size,
                   (unsigned long long)MAX_BLOCK_BYTES);
  /* Only the first frame counts, as Python's decompressor reads it; bytes after it are ignored. */
  size_t frame_len = ZSTD_findFrameCompressedSize(frame, (size_t)len);
  if (ZSTD_isError(frame_len))
    return invalid(kb, "chunks", "block %llu cannot be decoded: %s", (unsigned long long)b, ZSTD_getErrorName(frame_len));
  void *raw = bc->raw;
  if (reserve(&raw, &bc->raw_cap, (size_t)size + 1)) return out_of_memory(kb);
  bc->raw = raw;
  size_t got = ZSTD_decompressDCtx(kb->dctx, bc->raw, (size_t)size, frame, frame_len);
  if (ZSTD_isError(got) || got != size)
    return invalid(kb, "chunks", "block %llu cannot be decoded: %s", (unsigned long long)b,
                   ZSTD_isError(got) ? ZSTD_getErrorName(got) : "shorter than declared");
  bc->raw_len = got;
  if ((st = index_block(kb, b, expected)) != KBP_OK) return st;
  bc->index = (int64_t)b;
  return KBP_OK;
}

/* Appends a NUL-terminated copy of [p, p + n) to the chunk's string area. */
static kbp_string put_string(char *area, size_t *used, const void *p, size_t n) {
  kbp_string s = {area + *used, n};
  memcpy(area + *used, p, n);
  area[*used + n] = 0;
  *used += n + 1;
  return s;
}

kbp_status kbp_chunk_get(kbp_bundle *kb, uint64_t i, kbp_chunk *out) {
  clear_error(&kb->err);
  if (!out) return fail(kb, KBP_ERR_ARGUMENT, "", "kbp_chunk_get: out must not be NULL");
  if (i >= kb->count)
    return fail(kb, KBP_ERR_ARGUMENT, "", "chunk %llu out of range 0..%lld", (unsigned long long)i, (long long)kb->count - 1);
  kbp_status st = load_block(kb, i / kb->block_size);
  if (st != KBP_OK) return st;
  const block_cache *bc = &kb->block;
  mp_cursor c = {bc->raw + bc->starts[i % kb->block_size], bc->raw + bc->raw_len};
  chunk_fields f;
  read_chunk_map(&c, &f, 0); /* checked when the block was loaded */

  int64_t src = f.present & 1u << F_SOURCE ? f.value[F_SOURCE].i : -1;
  const char *path = src >= 0 && (uint64_t)src < kb->n_sources ? kb->source_paths[src] : NULL;
  size_t need = 16 + (path ? jdecoded_bound(path, kb->manifest_end) : 0);
  static const int strings[] = {F_TEXT, F_CONTEXT, F_LABEL_START, F_LABEL_END, F_RECORD};
  for (size_t s = 0; s < sizeof strings / sizeof *strings; s++)
    if (f.present & 1u << strings[s]) need += (size_t)f.value[strings[s]].len + 1;
  void *area = kb->chunk_strings;
  if (reserve(&area, &kb->chunk_strings_cap, need)) return out_of_memory(kb);
  kb->chunk_strings = area;

  size_t used = 0;
  kbp_string none = {NULL, 0};
  memset(out, 0, sizeof *out);
  out->id = i;
  kbp_string *dest[] = {&out->text, &out->context, &out->label_start, &out->label_end, &out->record};
  for (size_t s = 0; s < sizeof strings / sizeof *strings; s++) {
    const mp_value *v = &f.value[strings[s]];
    *dest[s] = f.present & 1u << strings[s] ? put_string(kb->chunk_strings, &used, v->data, (size_t)v->len) : none;
  }
  if (path) { /* decoded in place */
    long n = jdecode(path, kb->manifest_end, (uint8_t *)kb->chunk_strings + used, need - used - 1);
    out->source_path = (kbp_string){kb->chunk_strings + used, n < 0 ? 0 : (size_t)n};
    kb->chunk_strings[used + out->source_path.len] = 0;
  } else {
    out->source_path = put_string(kb->chunk_strings, &used, "?", 1);
  }
  static const int ints[] = {F_SOURCE, F_SEQ, F_PAGE_START, F_PAGE_END, F_CHAR_START, F_CHAR_END, F_TOKENS};
  static const unsigned bits[] = {KBP_FIELD_SOURCE, KBP_FIELD_SEQ, KBP_FIELD_PAGE_START, KBP_FIELD_PAGE_END,
                                  KBP_FIELD_CHAR_START, KBP_FIELD_CHAR_END, KBP_FIELD_TOKENS};
  int64_t *int_dest[] = {&out->source, &out->seq, &out->page_start, &out->page_end, &out->char_start, &out->char_end, &out->tokens};
  for (size_t k = 0; k < sizeof ints / sizeof *ints; k++)
    if (f.present & 1u << ints[k]) {
      *int_dest[k] = f.value[ints[k]].i;
      out->fields |= bits[k];
    }
  return KBP_OK;
}

/* ============================================================== 7. vectors and dense search */

#define DOT_LANES 16 /* floats per step of the vectorised loops */

/* A finite IEEE half as a float, exactly (as numpy converts it): the magnitude's bits shifted into
 * place read as a float 2^112 too small, and the multiplication rebases the exponent exactly, half
 * subnormals included (unless the caller's FPU flushes denormals to zero). No branch, so a loop of
 * them vectorises; the vectors are checked finite before any search reads them. */
static float finite_half_to_float(uint16_t h) {
  uint32_t magnitude = (uint32_t)(h & 0x7fffu) << 13, bits;
  float f;
  memcpy(&f, &magnitude, 4);
  f *= 0x1p112f;
  memcpy(&bits, &f, 4);
  bits |= (uint32_t)(h & 0x8000u) << 16;
  memcpy(&f, &bits, 4);
  return f;
}

static int value_finite(const uint8_t *p, size_t item) {
  if (item == 2) return (le(p, 2) & 0x7c00u) != 0x7c00u;
  return (le(p, 4) & 0x7f800000u) != 0x7f800000u;
}

/* Row `first_bad` of a rows x dim array of floats (item 2 or 4 bytes) holds NaN or infinity, or -1. */
static int64_t first_non_finite_row(const uint8_t *p, uint64_t rows, uint64_t dim, size_t item) {
  for (uint64_t r = 0; r < rows; r++)
    for (uint64_t j = 0; j < dim; j++)
      if (!value_finite(p + (r * dim + j) * item, item)) return (int64_t)r;
  return -1;
}

/* int8 (format 1.4): vector_scales, checked (SHA-256, every scale >= 0 with 128 x scale finite) and kept as
 * native floats. Python: Bundle.scales. */
static kbp_status load_scales(kbp_bundle *kb) {
  const uint8_t *p = NULL;
  kbp_status st = section_bytes(kb, kb->known[S_VECTOR_SCALES], &p);
  if (st != KBP_OK) return st;
  size_t dim = (size_t)kb->dim; /* the section holds exactly dim x 4 bytes (kbp_open) */
  if (!kb->scales && !(kb->scales = malloc(dim * sizeof *kb->scales))) return out_of_memory(kb);
  for (size_t j = 0; j < dim; j++) {
    uint32_t bits = (uint32_t)le(p + 4 * j, 4);
    float scale;
    memcpy(&scale, &bits, 4);
    /* 128 x scale finite: every value a row stands for (bytes -128..127) is a float32 (FORMAT.md §2.7) */
    if (!isfinite(scale * 128.0f) || !(scale >= 0.0f))
      return invalid(kb, "vector_scales", "scale %zu is %g: scales must be >= 0 with 128 x scale a finite float32",
                     j, (double)scale);
    kb->scales[j] = scale;
  }
  return KBP_OK;
}

/* The vectors, checked the first time they are used: their SHA-256 and every value finite (a NaN
 * would poison every score it meets), or for int8 the scales; and the binary codes' SHA-256 when
 * the bundle has them (dense search reads them first). */
static kbp_status vectors_bytes(kbp_bundle *kb, const uint8_t **out) {
  kbp_status st = section_bytes(kb, kb->known[S_VECTORS], out);
  if (st != KBP_OK || kb->vectors_checked) return st;
  if (kb->dtype == DTYPE_INT8) {
    if ((st = load_scales(kb)) != KBP_OK) return st;
  } else {
    int64_t bad = first_non_finite_row(*out, kb->count, kb->dim, dtype_size(kb->dtype));
    if (bad >= 0) return invalid(kb, "vectors", "row %lld holds NaN or infinity", (long long)bad);
  }
  const uint8_t *codes;
  if (kb->binary && (st = section_bytes(kb, kb->known[S_VECTORS_BINARY], &codes)) != KBP_OK) return st;
  int convert = kb->dtype == DTYPE_FLOAT16 || (kb->dtype == DTYPE_FLOAT32 && !host_is_little_endian());
  /* only with rows: then dim x itemsize bytes are in the file; a count of 0 bounds no dim */
  if (convert && kb->count && !kb->row && !(kb->row = malloc((size_t)kb->dim * sizeof *kb->row))) return out_of_memory(kb);
  kb->vectors_checked = 1;
  return KBP_OK;
}

/* Unused bits of each code's last byte (those past dim) must be 0 (FORMAT.md §2.7). Searching
 * does not need it (they are XOR'd and counted as any bit, as Python's reader counts them), so
 * only kbp_verify checks it, after vectors_bytes. Python: Bundle._check_binary_padding. */
static kbp_status check_code_padding(kbp_bundle *kb) {
  unsigned spare = (unsigned)((8 - kb->dim % 8) % 8);
  if (!kb->binary || !spare) return KBP_OK;
  const uint8_t *codes = kb->data + kb->sections[kb->known[S_VECTORS_BINARY]].offset, mask = (uint8_t)((1u << spare) - 1);
  for (uint64_t r = 0; r < kb->count; r++)
    if (codes[r * kb->code_bytes + kb->code_bytes - 1] & mask)
      return invalid(kb, "vectors_binary", "row %llu sets bits past dimension %llu", (unsigned long long)r,
                     (unsigned long long)kb->dim);
  return KBP_OK;
}

/* Inner product in float32, as the Python reader scores. Sixteen independent partial sums let
 * the compiler keep them in SIMD registers at -O2/-O3 without reordering any one sum (so no
 * -ffast-math is needed), and fix the rounding order on every platform. */
static float dot(const float *a, const float *b, size_t n) {
  float acc[DOT_LANES] = {0};
  size_t i = 0;
  for (; i + DOT_LANES <= n; i += DOT_LANES)
    for (size_t j = 0; j < DOT_LANES; j++) acc[j] += a[i + j] * b[i + j];
  for (size_t j = 0; i < n; i++, j++) acc[j] += a[i] * b[i];
  for (size_t width = DOT_LANES / 2; width; width /= 2) /* pairwise: the same order every time */
    for (size_t j = 0; j < width; j++) acc[j] += acc[j + width];
  return acc[0];
}

/* An int8 row against the query times the scales (FORMAT.md §2.7: Σ q'[d] × v[d]), the same way:
 * each byte converts to float exactly, so only the sums' order differs from dot's. A quarter of
 * float32's bytes: gcc -O2 turns the fixed-length inner loop into sign extensions, conversions and
 * packed multiplies and adds. */
static float dot_i8(const int8_t *restrict v, const float *restrict w, size_t n) {
  float acc[DOT_LANES] = {0};
  size_t i = 0;
  for (; i + DOT_LANES <= n; i += DOT_LANES)
    for (size_t j = 0; j < DOT_LANES; j++) acc[j] += w[i + j] * (float)v[i + j];
  for (size_t j = 0; i < n; i++, j++) acc[j] += w[i] * (float)v[i];
  for (size_t width = DOT_LANES / 2; width; width /= 2)
    for (size_t j = 0; j < width; j++) acc[j] += acc[j + width];
  return acc[0];
}

/* In blocks of 16 (a fixed-length inner loop -O2 vectorises, as in dot) and a tail; restrict: the
 * row buffer never overlaps the map. */
static void halves_to_floats(const uint8_t *restrict p, float *restrict out, size_t n) {
  size_t j = 0;
  uint16_t h[DOT_LANES];
  for (; j + DOT_LANES <= n; j += DOT_LANES) {
    memcpy(h, p + 2 * j, sizeof h);
    for (size_t i = 0; i < DOT_LANES; i++) out[j + i] = finite_half_to_float(h[i]);
  }
  for (; j < n; j++) {
    memcpy(h, p + 2 * j, 2);
    out[j] = finite_half_to_float(h[0]);
  }
}

/* Float row r as native floats: a pointer into the map (float32 on a little-endian host) or kb->row. */
static const float *vector_row(kbp_bundle *kb, const uint8_t *vectors, uint64_t r) {
  size_t dim = (size_t)kb->dim;
  if (!kb->row) return (const float *)(const void *)(vectors + (size_t)r * dim * 4); /* 64-byte aligned section */
  const uint8_t *p = vectors + (size_t)r * dim * dtype_size(kb->dtype);
  float *row = kb->row;
  if (kb->dtype == DTYPE_FLOAT16 && host_is_little_endian()) { /* the common case */
    halves_to_floats(p, row, dim);
  } else if (kb->dtype == DTYPE_FLOAT16) {
    for (size_t j = 0; j < dim; j++) row[j] = finite_half_to_float((uint16_t)le(p + 2 * j, 2));
  } else { /* float32 on a big-endian host */
    for (size_t j = 0; j < dim; j++) {
      uint32_t bits = (uint32_t)le(p + 4 * j, 4);
      memcpy(&row[j], &bits, 4);
    }
  }
  return row;
}

/* A query ready to score rows with: the checked vectors and what each row is multiplied with (the
 * query itself, or for int8 the query times the scales, computed once per search in float32). */
typedef struct {
  const uint8_t *vectors;
  const float *q, *w;
} dense_query;

static kbp_status prepare_query(kbp_bundle *kb, const float *q, dense_query *dq) {
  kbp_status st = vectors_bytes(kb, &dq->vectors);
  if (st != KBP_OK) return st;
  dq->q = dq->w = q;
  if (kb->dtype == DTYPE_INT8) {
    size_t dim = (size_t)kb->dim;
    if (!kb->weights && !(kb->weights = malloc(dim * sizeof *kb->weights))) return out_of_memory(kb);
    for (size_t j = 0; j < dim; j++) kb->weights[j] = q[j] * kb->scales[j];
    dq->w = kb->weights;
  }
  return KBP_OK;
}

/* Row r's inner product with the query, in float32. A forged bundle's huge values can make it
 * NaN: such a score ranks last, as in Python's reader (-inf). */
static float row_score(kbp_bundle *kb, const dense_query *dq, uint64_t r) {
  size_t dim = (size_t)kb->dim;
  float s = kb->dtype == DTYPE_INT8 ? dot_i8((const int8_t *)(const void *)(dq->vectors + (size_t)r * dim), dq->w, dim)
                                    : dot(vector_row(kb, dq->vectors, r), dq->w, dim);
  return isnan(s) ? -INFINITY : s;
}

typedef struct {
  double score;
  uint64_t id;
} scored;

/* Best first, lower id first on equal scores: the order of every ranked list here. */
static int better(scored a, scored b) { return a.score > b.score || (a.score == b.score && a.id < b.id); }

static int by_rank(const void *pa, const void *pb) {
  scored a = *(const scored *)pa, b = *(const scored *)pb;
  return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/* The k best of a stream: a min-heap whose root is the worst kept. */
typedef struct {
  scored *items;
  size_t n, k;
} top_k;

static void heap_down(top_k *t, size_t i) {
  for (;;) {
    size_t worst = i, l = 2 * i + 1, r = l + 1;
    if (l < t->n && better(t->items[worst], t->items[l])) worst = l;
    if (r < t->n && better(t->items[worst], t->items[r])) worst = r;
    if (worst == i) return;
    scored tmp = t->items[i];
    t->items[i] = t->items[worst];
    t->items[worst] = tmp;
    i = worst;
  }
}

static void top_k_offer(top_k *t, double score, uint64_t id) {
  scored s = {score, id};
  if (t->n < t->k) { /* sift up */
    size_t i = t->n++;
    while (i && better(t->items[(i - 1) / 2], s)) {
      t->items[i] = t->items[(i - 1) / 2];
      i = (i - 1) / 2;
    }
    t->items[i] = s;
  } else if (t->k && better(s, t->items[0])) {
    t->items[0] = s;
    heap_down(t, 0);
  }
}

static void top_k_sort(top_k *t) { qsort(t->items, t->n, sizeof *t->items, by_rank); }

static kbp_status check_query_vector(kbp_bundle *kb, const float *q) {
  if (!q) return fail(kb, KBP_ERR_ARGUMENT, "", "this search needs a query vector");
  for (size_t j = 0; j < kb->dim; j++)
    if (!isfinite(q[j])) return fail(kb, KBP_ERR_ARGUMENT, "", "the query vector holds NaN or infinity");
  return KBP_OK;
}

/* ---- binary codes: the first stage of a two-stage search (FORMAT.md §2.7) */

/* Bits set in a 64-bit word. GCC and clang's builtin is one instruction where the target has one
 * (arm64, or x86 built with -mpopcnt); on plain x86-64 it is a library call, slower than this SWAR
 * count, so there an x86 with POPCNT gets its own copy of the loop (distances_popcnt) at run time. */
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define X86_GNUC 1
#endif
#if (defined(__GNUC__) || defined(__clang__)) && (!defined(X86_GNUC) || defined(__POPCNT__))
#define popcount64(x) ((unsigned)__builtin_popcountll(x))
#else
static unsigned popcount_swar(uint64_t x) {
  x -= (x >> 1) & 0x5555555555555555u;
  x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fu;
  return (unsigned)((x * 0x0101010101010101u) >> 56); /* the byte counts summed in the top byte */
}
#define popcount64(x) popcount_swar(x)
#endif

/* Each row's Hamming distance to the query's bits, popcount(code XOR bits), into distances[] and
 * their histogram: 8 bytes at a time as 64-bit words (memcpy: any alignment, and the byte order
 * does not change a count of bits), then the rest byte by byte. */
#define DISTANCES(popcount)                                                   \
  for (size_t r = 0; r < n; r++) {                                            \
    const uint8_t *code = codes + r * bytes;                                  \
    uint32_t d = 0;                                                           \
    size_t i = 0;                                                             \
    for (; i + 8 <= bytes; i += 8) {                                          \
      uint64_t x, y;                                                          \
      memcpy(&x, code + i, 8);                                                \
      memcpy(&y, bits + i, 8);                                                \
      d += popcount(x ^ y);                                                   \
    }                                                                         \
    for (; i < bytes; i++) d += popcount((uint64_t)(code[i] ^ bits[i]));      \
    distances[r] = d;                                                         \
    histogram[d]++;                                                           \
  }

static void distances_portable(const uint8_t *codes, size_t n, size_t bytes, const uint8_t *bits, uint32_t *distances,
                               uint32_t *histogram) {
  DISTANCES(popcount64)
}

#if defined(X86_GNUC) && !defined(__POPCNT__)
__attribute__((target("popcnt"))) static void distances_popcnt(const uint8_t *codes, size_t n, size_t bytes,
                                                                const uint8_t *bits, uint32_t *distances,
                                                                uint32_t *histogram) {
  DISTANCES(__builtin_popcountll)
}
#endif

static void code_distances(const uint8_t *codes, size_t n, size_t bytes, const uint8_t *bits, uint32_t *distances,
                           uint32_t *histogram) {
#if defined(X86_GNUC) && !defined(__POPCNT__)
  if (__builtin_cpu_supports("popcnt")) {
    distances_popcnt(codes, n, bytes, bits, distances, histogram);
    return;
  }
#endif
  distances_portable(codes, n, bytes, bits, distances, histogram);
}

/* The R = min(count, max(M x k, C)) rows whose codes are nearest the query's sign bits, lower id
 * first on equal distances, written in increasing id order to kb->candidate_ids. Exact and O(count):
 * a histogram of the distances (0 .. 8 x code_bytes) gives the largest distance taken and how many
 * rows at that distance, the lowest ids, make up R. Every buffer is count or code_bytes long, both
 * checked against the file by kbp_open. Python: BinaryIndex.shortlist. */
static kbp_status shortlist(kbp_bundle *kb, const float *q, uint64_t k, size_t *n_out) {
  size_t n = (size_t)kb->count, bytes = kb->code_bytes, max_distance = 8 * bytes;
  uint64_t r = k > UINT64_MAX / kb->multiplier ? UINT64_MAX : kb->multiplier * k;
  if (r < kb->candidates) r = kb->candidates;
  if (r > kb->count) r = kb->count;
  if (!kb->query_bits) {
    kb->query_bits = malloc(bytes);
    kb->distances = malloc(n * sizeof *kb->distances);
    kb->histogram = malloc((max_distance + 1) * sizeof *kb->histogram);
    if (!kb->query_bits || !kb->distances || !kb->histogram) {
      free(kb->query_bits); free(kb->distances); free(kb->histogram);
      kb->query_bits = NULL; kb->distances = NULL; kb->histogram = NULL;
      return out_of_memory(kb);
    }
  }
  void *ids = kb->candidate_ids;
  if (reserve(&ids, &kb->candidate_cap, (size_t)r * sizeof *kb->candidate_ids)) return out_of_memory(kb);
  kb->candidate_ids = ids;
  uint8_t *bits = kb->query_bits;
  memset(bits, 0, bytes);
  for (size_t d = 0; d < (size_t)kb->dim; d++)
    if (q[d] > 0.0f) bits[d / 8] |= (uint8_t)(0x80u >> (d % 8)); /* most significant bit first */
  const uint8_t *codes = kb->data + kb->sections[kb->known[S_VECTORS_BINARY]].offset; /* checked by vectors_bytes */
  memset(kb->histogram, 0, (max_distance + 1) * sizeof *kb->histogram);
  code_distances(codes, n, bytes, bits, kb->distances, kb->histogram);
  uint64_t below = 0; /* rows nearer than `cut` */
  size_t cut = 0;
  while (cut < max_distance && below + kb->histogram[cut] < r) below += kb->histogram[cut++];
  uint64_t at_cut = r - below; /* the lowest ids at distance `cut` */
  size_t m = 0;
  for (size_t i = 0; i < n && m < r; i++) {
    uint32_t d = kb->distances[i];
    if (d < cut || (d == cut && at_cut && at_cut--)) kb->candidate_ids[m++] = i;
  }
  *n_out = m;
  return KBP_OK;
}

/* The k best chunks by inner product: every row, or the binary codes' shortlist rescored when the
 * bundle has them. *out is malloc'd (the caller frees it), best first. */
static kbp_status dense_top(kbp_bundle *kb, const dense_query *dq, uint64_t k, scored **out, size_t *n) {
  top_k t = {NULL, 0, (size_t)(k < kb->count ? k : kb->count)};
  size_t n_candidates = 0;
  kbp_status st = kb->binary && t.k ? shortlist(kb, dq->q, t.k, &n_candidates) : KBP_OK;
  if (st != KBP_OK) return st;
  t.items = malloc((t.k ? t.k : 1) * sizeof *t.items);
  if (!t.items) return out_of_memory(kb);
  uint64_t rows = kb->binary ? n_candidates : kb->count;
  for (uint64_t i = 0; t.k && i < rows; i++) {
    uint64_t r = kb->binary ? kb->candidate_ids[i] : i;
    float s = row_score(kb, dq, r);
    /* ids arrive in increasing order, so an equal score never displaces a kept one */
    if (t.n == t.k && !(s > t.items[0].score)) continue;
    top_k_offer(&t, s, r);
  }
  top_k_sort(&t);
  *out = t.items;
  *n = t.n;
  return KBP_OK;
}

/* ============================================================== 8. lexical index and BM25
 * FORMAT.md §2.4; Python: kbc/lexical.py. Opening checks the manifest's `lexical` object and the
 * offsets (LexicalIndex.__init__) and the vocabulary order; each posting list is checked when a
 * question uses it (postings_of), and all of them by kbp_verify (check_all). */

#define lex_offset(section, i) le((section) + 4 * (uint64_t)(i), 4)

static kbp_status check_lex_offsets(kbp_bundle *kb, int which, uint64_t entries, uint64_t end) {
  const section *s = &kb->sections[kb->known[which]];
  const uint8_t *p = kb->data + s->offset; /* its SHA-256 was checked by the caller */
  if (s->length % 4 || s->length / 4 != entries)
    return invalid(kb, s->name, "expected %llu u4 entries, found %llu bytes", (unsigned long long)entries, (unsigned long long)s->length);
  uint64_t prev = 0;
  for (uint64_t i = 0; i < entries; i++) {
    uint64_t v = lex_offset(p, i);
    if ((i == 0 && v != 0) || v < prev) return invalid(kb, s->name, "offsets do not rise from 0 to %llu", (unsigned long long)end);
    prev = v;
  }
  if (prev != end) return invalid(kb, s->name, "offsets do not rise from 0 to %llu", (unsigned long long)end);
  return KBP_OK;
}

static int compare_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c ? c : (an > bn) - (an < bn);
}

static const uint8_t *vocab_term(const lexical_index *x, uint64_t t, size_t *len) {
  uint64_t a = lex_offset(x->vocab_offsets, t), e = lex_offset(x->vocab_offsets, t + 1);
  *len = (size_t)(e - a);
  return x->vocab + a;
}

/* The `lexical` object (Python: TokenizerOptions.from_manifest, LexicalIndex.__init__). */
static kbp_status read_lexical_meta(kbp_bundle *kb, lexical_index *x) {
  const char *end = kb->manifest_end, *meta = kb->m_lexical;
  const char *tok = jget(meta, end, "tokenizer");
  if (jtype(tok) != J_OBJECT || !jstreq(jget(tok, end, "name"), end, "kbc-lex-1"))
    return invalid(kb, "manifest", "lexical: unknown tokenizer (not kbc-lex-1)");
  const char *stem = jget(tok, end, "stem"), *stop = jget(tok, end, "stop_words");
  if (jtype(stop) != J_TRUE && jtype(stop) != J_FALSE) return invalid(kb, "manifest", "lexical: malformed tokenizer options");
  x->stop_words = jtype(stop) == J_TRUE;
  if (!stem || jtype(stem) == J_NULL) x->stem = 0;
  else if (jstreq(stem, end, "s-stemmer")) x->stem = 1;
  else if (jstreq(stem, end, "snowball-english")) x->stem = 2;
  else return invalid(kb, "manifest", "lexical: malformed tokenizer options");
  const char *k1 = jget(meta, end, "k1"), *b = jget(meta, end, "b"), *n = jget(meta, end, "doc_count");
  const char *terms = jget(meta, end, "terms"), *avg = jget(meta, end, "avg_doc_length");
  if (!k1 || !b || !n || !terms || !avg) return invalid(kb, "manifest", "lexical: missing or malformed field");
  if (!jequals_count(jget(meta, end, "version"), end, 1) || !jstreq(jget(meta, end, "scoring"), end, "bm25"))
    return invalid(kb, "manifest", "lexical: version or scoring not supported (1, bm25)");
  if (!jfinite_number(k1, end, &x->k1) || !jfinite_number(b, end, &x->b) || !jfinite_number(avg, end, &x->avg) ||
      !(x->k1 >= 0 && x->k1 <= 100 && x->b >= 0 && x->b <= 1 && x->avg >= 0))
    return invalid(kb, "manifest", "lexical: k1, b or avg_doc_length out of range");
  if (juint(n, end, &x->n) || juint(terms, end, &x->terms) || x->n != kb->count)
    return invalid(kb, "manifest", "lexical: doc_count disagrees with %llu chunks", (unsigned long long)kb->count);
  return KBP_OK;
}

static kbp_status open_lexical(kbp_bundle *kb) {
  lexical_index *x = &kb->lex;
  const uint8_t *bytes[N_LEX] = {NULL};
  kbp_status st;
  int present = 0;
  for (int i = 0; i < N_LEX; i++) present += kb->known[S_LEX_VOCAB + i] >= 0;
  if (!kb->m_lexical && !present) return fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no lexical index");
  for (int i = 0; i < N_LEX; i++)
    if (kb->known[S_LEX_VOCAB + i] < 0)
      return invalid(kb, KNOWN_SECTIONS[S_LEX_VOCAB + i], "lexical index is incomplete: section missing");
  if (!kb->m_lexical) return invalid(kb, "manifest", "lexical index is incomplete: no lexical object");
  for (int i = 0; i < N_LEX; i++) {
    const section *s = &kb->sections[kb->known[S_LEX_VOCAB + i]];
    if (strcmp(s->encoding, LEX_ENCODINGS[i]) != 0)
      return invalid(kb, s->name, "encoding '%s', expected '%s'", s->encoding, LEX_ENCODINGS[i]);
  }
  for (int i = 0; i < N_LEX; i++)
    if ((st = section_bytes(kb, kb->known[S_LEX_VOCAB + i], &bytes[i])) != KBP_OK) return st;
  if ((st = read_lexical_meta(kb, x)) != KBP_OK) return st;
  x->vocab = bytes[0];
  x->vocab_offsets = bytes[1];
  x->postings = bytes[2];
  x->postings_offsets = bytes[3];
  x->doc_lengths = bytes[4];
  x->vocab_len = kb->sections[kb->known[S_LEX_VOCAB]].length;
  x->postings_len = kb->sections[kb->known[S_LEX_POSTINGS]].length;
  /* T < the offsets' length keeps T + 1 from overflowing */
  if (x->terms >= kb->sections[kb->known[S_LEX_VOCAB_OFFSETS]].length)
    return invalid(kb, "lex_vocab_offsets", "expected %llu u4 entries", (unsigned long long)x->terms + 1);
  if ((st = check_lex_offsets(kb, S_LEX_VOCAB_OFFSETS, x->terms + 1, x->vocab_len)) != KBP_OK) return st;
  if (x->terms >= kb->sections[kb->known[S_LEX_POSTINGS_OFFSETS]].length)
    return invalid(kb, "lex_postings_offsets", "expected %llu u4 entries", (unsigned long long)x->terms + 1);
  if ((st = check_lex_offsets(kb, S_LEX_POSTINGS_OFFSETS, x->terms + 1, x->postings_len)) != KBP_OK) return st;
  if (kb->sections[kb->known[S_LEX_DOC_LENGTHS]].length != x->n * 4)
    return invalid(kb, "lex_doc_lengths", "expected %llu u4 entries", (unsigned long long)x->n);
  /* binary search needs the vocabulary strictly ascending; cheap to check once */
  for (uint64_t t = 0; t < x->terms; t++) {
    size_t la = 0, lb;
    const uint8_t *tb = vocab_term(x, t, &lb), *ta = t ? vocab_term(x, t - 1, &la) : NULL;
    if (lb == 0) return invalid(kb, "lex_vocab_offsets", "an empty term");
    if (ta && compare_bytes(ta, la, tb, lb) >= 0)
      return invalid(kb, "lex_vocab", "term %llu is not in ascending byte order", (unsigned long long)t);
  }
  x->scores = calloc(x->n ? (size_t)x->n : 1, sizeof *x->scores);
  return x->scores ? KBP_OK : out_of_memory(kb);
}

static kbp_status lexical_ready(kbp_bundle *kb) {
  if (kb->lexical_state == LOAD_READY) return KBP_OK;
  if (kb->lexical_state == LOAD_ABSENT) return fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no lexical index");
  kbp_status st = open_lexical(kb);
  if (st == KBP_OK) kb->lexical_state = LOAD_READY;
  if (st == KBP_ERR_NOT_PRESENT) kb->lexical_state = LOAD_ABSENT;
  return st;
}

/* One unsigned LEB128 value of at most 5 bytes from p[*i..end). */
static kbp_status read_varint(kbp_bundle *kb, const uint8_t *p, uint64_t end, uint64_t *i, uint64_t *v, uint64_t term) {
  uint64_t x = 0;
  for (int k = 0; k < 5; k++) {
    if (*i >= end) return invalid(kb, "lex_postings", "truncated varint (term %llu)", (unsigned long long)term);
    uint8_t byte = p[(*i)++];
    x |= (uint64_t)(byte & 0x7F) << (7 * k);
    if (!(byte & 0x80)) {
      *v = x;
      return KBP_OK;
    }
  }
  return invalid(kb, "lex_postings", "varint longer than 5 bytes (term %llu)", (unsigned long long)term);
}

/* Term t's postings: `visit` (when not NULL) gets each (id, tf) after its pair is checked;
 * *df gets their count. Refuses what Python's postings_of / check_all refuse. */
typedef void (*posting_visitor)(void *ctx, uint64_t id, uint64_t tf);

static kbp_status walk_postings(kbp_bundle *kb, uint64_t t, uint64_t *df, posting_visitor visit, void *ctx) {
  const lexical_index *x = &kb->lex;
  uint64_t a = lex_offset(x->postings_offsets, t), end = lex_offset(x->postings_offsets, t + 1), id = 0, gap = 0, tf = 0, n = 0;
  kbp_status st;
  if (a == end) return invalid(kb, "lex_postings", "term %llu: a term without postings", (unsigned long long)t);
  while (a < end) {
    if ((st = read_varint(kb, x->postings, end, &a, &gap, t)) != KBP_OK || (st = read_varint(kb, x->postings, end, &a, &tf, t)) != KBP_OK)
      return st;
    if (n && gap == 0) return invalid(kb, "lex_postings", "term %llu: chunk ids not increasing", (unsigned long long)t);
    if (gap >= x->n || id >= x->n - gap) /* the first gap is the id itself (id starts at 0) */
      return invalid(kb, "lex_postings", "term %llu: chunk id out of range", (unsigned long long)t);
    if (tf == 0) return invalid(kb, "lex_postings", "term %llu: term frequency 0", (unsigned long long)t);
    id += gap;
    n++;
    if (visit) visit(ctx, id, tf);
  }
  *df = n;
  return KBP_OK;
}

/* ---- tokeniser kbc-lex-1 (FORMAT.md §2.4, steps 1-7) ---- */

enum { SEP, DIGIT, LETTER, CJK };

static uint32_t fold_case(uint32_t c) {
  if (c >= 'A' && c <= 'Z') return c + 0x20;
  if (c >= 0xC0 && c <= 0xDE && c != 0xD7) return c + 0x20;
  if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2) return c + 0x20;
  if (c >= 0x410 && c <= 0x42F) return c + 0x20;
  if (c >= 0x400 && c <= 0x40F) return c + 0x50;
  return c;
}

static int char_class(uint32_t c) {
  static const uint32_t separators[][2] = {{0x80, 0xBF}, {0xD7, 0xD7}, {0xF7, 0xF7}, {0x2000, 0x2BFF}, {0x3000, 0x303F},
      {0xD800, 0xDFFF}, {0xE000, 0xF8FF}, {0xFE30, 0xFE4F}, {0xFF00, 0xFF0F}, {0xFF1A, 0xFF20}, {0xFF3B, 0xFF40},
      {0xFF5B, 0xFF65}, {0xFFF0, 0xFFFF}};
  static const uint32_t cjk[][2] = {{0x3040, 0x30FF}, {0x3400, 0x4DBF}, {0x4E00, 0x9FFF}, {0xAC00, 0xD7AF}, {0xF900, 0xFAFF}};
  if (c >= '0' && c <= '9') return DIGIT;
  if (c >= 'a' && c <= 'z') return LETTER;
  if (c < 0x80) return SEP;
  for (size_t i = 0; i < sizeof separators / sizeof *separators; i++)
    if (c >= separators[i][0] && c <= separators[i][1]) return SEP;
  for (size_t i = 0; i < sizeof cjk / sizeof *cjk; i++)
    if (c >= cjk[i][0] && c <= cjk[i][1]) return CJK;
  return LETTER; /* every other code point from U+00C0 up */
}

static const char *const STOP_WORDS[] = {"a", "about", "above", "after", "again", "against", "all", "am", "an", "and",
    "any", "are", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had", "has",
    "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into",
    "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not", "now", "of", "off",
    "on", "once", "only", "or", "other", "our", "ours", "ourselves", "out", "over", "own", "s", "same", "she", "should",
    "so", "some", "such", "t", "than", "that", "the", "their", "theirs", "them", "themselves", "then", "there", "these",
    "they", "this", "those", "through", "to", "too", "under", "until", "up", "very", "was", "we", "were", "what", "when",
    "where", "which", "while", "who", "whom", "why", "will", "with", "would", "you", "your", "yours", "yourself",
    "yourselves"};

static int is_stop_word(const uint32_t *t, size_t n) {
  for (size_t w = 0; w < sizeof STOP_WORDS / sizeof *STOP_WORDS; w++) {
    const char *s = STOP_WORDS[w];
    size_t i = 0;
    while (i < n && s[i] && t[i] == (uint32_t)(unsigned char)s[i]) i++;
    if (i == n && !s[i]) return 1;
  }
  return 0;
}

/* "s-stemmer": Lucene's EnglishMinimalStemmer (after Harman 1991); lengths in code points. */
static size_t s_stem(uint32_t *t, size_t n) {
  if (n < 3 || t[n - 1] != 's') return n;
  if (t[n - 2] == 'u' || t[n - 2] == 's') return n; /* -us, -ss */
  if (t[n - 2] == 'e') {
    if (n > 3 && t[n - 3] == 'i' && t[n - 4] != 'a' && t[n - 4] != 'e') { t[n - 3] = 'y'; return n - 2; } /* -ies -> -y */
    if (t[n - 3] == 'i' || t[n - 3] == 'a' || t[n - 3] == 'o' || t[n - 3] == 'e') return n; /* -ies -aes -oes -ees */
  }
  return n - 1;
}

typedef struct {
  uint8_t bytes[MAX_TERM_BYTES];
  size_t len;
} term;

/* Steps 1-3: decode (an invalid byte becomes U+FFFD, a separator), fold case, drop thousands
 * commas; at most MAX_QUESTION_CHARS code points. Returns the count; *out is malloc'd. */
static long question_code_points(const char *q, uint32_t **out) {
  size_t qn = strlen(q), n = 0;
  size_t cap = qn < MAX_QUESTION_CHARS ? qn : MAX_QUESTION_CHARS;
  uint32_t *cp = malloc((cap + 1) * sizeof *cp);
  if (!cp) return -1;
  for (size_t i = 0; i < qn && n < cap;) {
    uint32_t c;
    size_t l = utf8_next((const uint8_t *)q + i, qn - i, &c);
    if (!l) { c = 0xFFFD; l = 1; }
    cp[n++] = fold_case(c);
    i += l;
  }
  /* a comma with a digit before it and exactly three digits after; all found on the folded
   * text before any is deleted (only entries before i - 1 are ever overwritten) */
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    int drop = cp[i] == ',' && i > 0 && cp[i - 1] >= '0' && cp[i - 1] <= '9' && i + 3 < n;
    for (size_t j = 1; drop && j <= 3; j++) drop = cp[i + j] >= '0' && cp[i + j] <= '9';
    if (drop && i + 4 < n && cp[i + 4] >= '0' && cp[i + 4] <= '9') drop = 0;
    if (!drop) cp[w++] = cp[i];
  }
  *out = cp;
  return (long)w;
}

/* The question's distinct terms in order of first occurrence, at most MAX_QUERY_TERMS (steps 4-7). */
static long question_terms(const char *q, int stop_words, int stem, term *out) {
  uint32_t *cp;
  long n = question_code_points(q, &cp);
  if (n < 0) return -1;
  long nt = 0;
  for (long i = 0; i < n && nt < (long)MAX_QUERY_TERMS;) {
    int k = char_class(cp[i]);
    if (k == SEP) { i++; continue; }
    long s = i++;
    if (k != CJK)
      while (i < n && char_class(cp[i]) == k) i++;
    size_t len = (size_t)(i - s);
    if (len > MAX_TOKEN_CHARS) continue;                /* 5. too long */
    uint32_t tok[MAX_TOKEN_CHARS];
    memcpy(tok, cp + s, len * sizeof *tok);
    if (stop_words && is_stop_word(tok, len)) continue; /* 6. stop words */
    if (stem == 1) len = s_stem(tok, len);              /* 7. s-stemmer */
    term t;
    t.len = 0;
    for (size_t j = 0; j < len; j++) t.len += utf8_put(tok[j], t.bytes + t.len);
    int seen = 0;
    for (long j = 0; j < nt && !seen; j++) seen = out[j].len == t.len && memcmp(out[j].bytes, t.bytes, t.len) == 0;
    if (!seen) out[nt++] = t;
  }
  free(cp);
  return nt;
}

static int64_t lookup_term(const lexical_index *x, const term *q) { /* binary search on bytes; -1 if absent */
  uint64_t lo = 0, hi = x->terms;
  size_t l;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    const uint8_t *tb = vocab_term(x, mid, &l);
    if (compare_bytes(tb, l, q->bytes, q->len) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (lo < x->terms) {
    const uint8_t *tb = vocab_term(x, lo, &l);
    if (compare_bytes(tb, l, q->bytes, q->len) == 0) return (int64_t)lo;
  }
  return -1;
}

typedef struct {
  const lexical_index *x;
  double idf, avgdl;
} bm25_term;

/* score[id] += ((idf * tf) * (k1 + 1)) / (tf + k1 * ((1 - b) + (b * len) / avgdl)), each step
 * its own rounding, in exactly the order FORMAT.md gives. */
static void add_bm25(void *ctx, uint64_t id, uint64_t tf_count) {
  const bm25_term *bt = ctx;
  const lexical_index *x = bt->x;
  double tf = (double)tf_count;
  double len = (double)le(x->doc_lengths + 4 * id, 4);
  double lnorm = (x->b * len) / bt->avgdl;
  double norm = x->k1 * ((1.0 - x->b) + lnorm);
  double top = (bt->idf * tf) * (x->k1 + 1.0);
  double bottom = tf + norm;
  x->scores[id] += top / bottom;
}

/* BM25 of every chunk for the question into kb->lex.scores. */
static kbp_status score_lexical(kbp_bundle *kb, const char *question) {
  lexical_index *x = &kb->lex;
  if (x->stem == 2) return invalid(kb, "manifest", "lexical: stemmer snowball-english is not supported by this reader");
  memset(x->scores, 0, (size_t)x->n * sizeof *x->scores);
  if (x->n == 0) return KBP_OK;
  term *terms = malloc(MAX_QUERY_TERMS * sizeof *terms);
  if (!terms) return out_of_memory(kb);
  long nt = question_terms(question, x->stop_words, x->stem, terms);
  if (nt < 0) {
    free(terms);
    return out_of_memory(kb);
  }
  const double N = (double)x->n;
  bm25_term bt = {x, 0, x->avg > 0 ? x->avg : 1.0};
  kbp_status st = KBP_OK;
  for (long i = 0; i < nt && st == KBP_OK; i++) {
    int64_t t = lookup_term(x, &terms[i]);
    uint64_t df;
    if (t < 0) continue;
    if ((st = walk_postings(kb, (uint64_t)t, &df, NULL, NULL)) != KBP_OK) break; /* the whole list is valid first */
    double num = (N - (double)df) + 0.5, den = (double)df + 0.5;
    bt.idf = log(1.0 + num / den);
    st = walk_postings(kb, (uint64_t)t, &df, add_bm25, &bt);
  }
  free(terms);
  return st;
}

/* The k best chunks with a score > 0; *out malloc'd, best first. */
static kbp_status lexical_top(kbp_bundle *kb, uint64_t k, scored **out, size_t *n) {
  const lexical_index *x = &kb->lex;
  top_k t = {NULL, 0, (size_t)(k < x->n ? k : x->n)};
  t.items = malloc((t.k ? t.k : 1) * sizeof *t.items);
  if (!t.items) return out_of_memory(kb);
  for (uint64_t id = 0; id < x->n; id++)
    if (x->scores[id] > 0 && !(t.n == t.k && !(x->scores[id] > t.items[0].score))) top_k_offer(&t, x->scores[id], id);
  top_k_sort(&t);
  *out = t.items;
  *n = t.n;
  return KBP_OK;
}

/* ============================================================== 9. retrieval settings, hybrid
 * FORMAT.md §2.5; Python: kbc/retrieval.py (RetrievalSettings, fuse, Retriever.search). */

static kbp_status read_retrieval(kbp_bundle *kb) {
  retrieval_settings *rs = &kb->rs;
  const char *end = kb->manifest_end, *r = kb->m_retrieval;
  /* without a retrieval object (formats 1.0, 1.1): dense; the other defaults are Python's */
  rs->default_mode = r ? KBP_MODE_HYBRID : KBP_MODE_DENSE;
  rs->fusion = FUSION_TMM;
  rs->weight = 0.4;
  rs->depth = 100;
  rs->rrf_k = 60;
  rs->unit = KBP_UNIT_CHUNK;
  rs->page_depth = 100;
  rs->page_share = 0.0;
  rs->page_chunks = 3;
  if (!r) return KBP_OK;
  const char *mode = jget(r, end, "default_mode"), *fusion = jget(r, end, "fusion"), *weight = jget(r, end, "weight");
  const char *depth = jget(r, end, "depth"), *rrf_k = jget(r, end, "rrf_k");
  if (mode) {
    if (jstreq(mode, end, "dense")) rs->default_mode = KBP_MODE_DENSE;
    else if (jstreq(mode, end, "lexical")) rs->default_mode = KBP_MODE_LEXICAL;
    else if (jstreq(mode, end, "hybrid")) rs->default_mode = KBP_MODE_HYBRID;
    else return invalid(kb, "manifest", "retrieval: unknown mode");
  }
  if (fusion) {
    if (jstreq(fusion, end, "tmm")) rs->fusion = FUSION_TMM;
    else if (jstreq(fusion, end, "minmax")) rs->fusion = FUSION_MINMAX;
    else if (jstreq(fusion, end, "rrf")) rs->fusion = FUSION_RRF;
    else return invalid(kb, "manifest", "retrieval: unknown fusion");
  }
  if (weight && !(jtype(weight) == J_NUMBER && jdouble(weight, end, &rs->weight) == 0 && rs->weight >= 0 && rs->weight <= 1))
    return invalid(kb, "manifest", "retrieval: fusion weight must be within [0, 1]");
  if (depth && (juint(depth, end, &rs->depth) || rs->depth < 1 || rs->depth > MAX_RETRIEVAL_DEPTH))
    return invalid(kb, "manifest", "retrieval: depth must be an integer within [1, %u]", MAX_RETRIEVAL_DEPTH);
  if (rrf_k && (juint(rrf_k, end, &rs->rrf_k) || rs->rrf_k < 1 || rs->rrf_k > MAX_RRF_K))
    return invalid(kb, "manifest", "retrieval: rrf_k must be an integer within [1, %u]", MAX_RRF_K);
  /* 1.5, pages as the unit (FORMAT.md §2.8): the same verdicts as RetrievalSettings.check */
  const char *unit = jget(r, end, "unit"), *page_depth = jget(r, end, "page_depth");
  const char *page_share = jget(r, end, "page_share"), *page_chunks = jget(r, end, "page_chunks");
  if (page_depth && (juint(page_depth, end, &rs->page_depth) || rs->page_depth < 1 || rs->page_depth > MAX_PAGE_DEPTH))
    return invalid(kb, "manifest", "retrieval: page_depth must be an integer within [1, %u]", MAX_PAGE_DEPTH);
  if (page_chunks && (juint(page_chunks, end, &rs->page_chunks) || rs->page_chunks < 1 || rs->page_chunks > KBP_MAX_PAGE_CHUNKS))
    return invalid(kb, "manifest", "retrieval: page_chunks must be an integer within [1, %u]", (unsigned)KBP_MAX_PAGE_CHUNKS);
  if (unit) {
    if (jstreq(unit, end, "chunk")) rs->unit = KBP_UNIT_CHUNK;
    else if (jstreq(unit, end, "page")) rs->unit = KBP_UNIT_PAGE;
    else return invalid(kb, "manifest", "retrieval: unknown unit");
  }
  if (page_share &&
      !(jtype(page_share) == J_NUMBER && jdouble(page_share, end, &rs->page_share) == 0 && rs->page_share >= 0 && rs->page_share <= 1))
    return invalid(kb, "manifest", "retrieval: page_share must be within [0, 1]");
  return KBP_OK;
}

static kbp_status retrieval_ready(kbp_bundle *kb) {
  if (kb->retrieval_state == LOAD_READY) return KBP_OK;
  kbp_status st = read_retrieval(kb);
  if (st == KBP_OK) kb->retrieval_state = LOAD_READY;
  return st;
}

kbp_status kbp_resolve_mode(kbp_bundle *kb, kbp_mode requested, kbp_mode *used) {
  clear_error(&kb->err);
  if (requested < KBP_MODE_DEFAULT || requested > KBP_MODE_HYBRID)
    return fail(kb, KBP_ERR_ARGUMENT, "", "mode must be dense, lexical or hybrid");
  kbp_status st = retrieval_ready(kb);
  if (st != KBP_OK) return st;
  if (requested == KBP_MODE_DENSE) { /* dense reads the vectors only */
    if (used) *used = KBP_MODE_DENSE;
    return KBP_OK;
  }
  st = lexical_ready(kb);
  if (st != KBP_OK && st != KBP_ERR_NOT_PRESENT) return st;
  int has_lexical = st == KBP_OK;
  clear_error(&kb->err);
  kbp_mode mode = requested;
  if (mode == KBP_MODE_DEFAULT) mode = has_lexical ? kb->rs.default_mode : KBP_MODE_DENSE;
  if (mode != KBP_MODE_DENSE && !has_lexical)
    return fail(kb, KBP_ERR_NOT_PRESENT, "", "%s search: this bundle has no lexical index (built before format 1.2, or "
                "with --no-lexical); use dense", mode == KBP_MODE_LEXICAL ? "lexical" : "hybrid");
  if (used) *used = mode;
  return KBP_OK;
}

typedef struct {
  double hi, lo;
  size_t n;
} score_range;

static score_range range_of(const scored *list, size_t n) {
  score_range r = {0.0, 0.0, n};
  for (size_t i = 0; i < n; i++) {
    if (i == 0 || list[i].score > r.hi) r.hi = list[i].score;
    if (i == 0 || list[i].score < r.lo) r.lo = list[i].score;
  }
  return r;
}

/* Python's _normalise for tmm and minmax; `ref` spans the list's own top scores. */
static double normalise(double score, score_range ref, fusion_method method) {
  if (ref.n == 0) return 0.0;
  if (!isfinite(ref.hi)) return 0.0; /* only a forged bundle's overflowing scores get here (Python too) */
  if (method == FUSION_TMM) return ref.hi > 0.0 ? (score > 0.0 ? score : 0.0) / ref.hi : 0.0;
  if (ref.hi > ref.lo) return (score - ref.lo) / (ref.hi - ref.lo);
  return score >= ref.hi ? 1.0 : 0.0; /* one distinct score: the list's members 1, the rest 0 */
}

static int by_id(const void *pa, const void *pb) {
  uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
  return a < b ? -1 : a > b;
}

static size_t position_of(const uint64_t *sorted, size_t n, uint64_t id) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (sorted[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* The sorted union of both lists' ids; returns its length. */
static size_t candidate_union(const scored *d, size_t nd, const scored *l, size_t nl, uint64_t *out) {
  for (size_t i = 0; i < nd; i++) out[i] = d[i].id;
  for (size_t i = 0; i < nl; i++) out[nd + i] = l[i].id;
  qsort(out, nd + nl, sizeof *out, by_id);
  size_t n = 0;
  for (size_t i = 0; i < nd + nl; i++)
    if (n == 0 || out[n - 1] != out[i]) out[n++] = out[i];
  return n;
}

/* Fuses the dense and lexical lists into fused[i] for each candidate (Python: fuse). */
static void fuse(kbp_bundle *kb, const dense_query *dq, const scored *d, size_t nd, const scored *l,
                 size_t nl, const uint64_t *cand, size_t nc, scored *fused) {
  const retrieval_settings *rs = &kb->rs;
  double w = rs->weight;
  for (size_t i = 0; i < nc; i++) {
    fused[i].id = cand[i];
    fused[i].score = 0.0;
  }
  if (rs->fusion == FUSION_RRF) { /* the dense list's terms first, then the lexical list's */
    for (size_t r = 0; r < nd; r++) fused[position_of(cand, nc, d[r].id)].score += (1.0 - w) / (double)(rs->rrf_k + r + 1);
    for (size_t r = 0; r < nl; r++) fused[position_of(cand, nc, l[r].id)].score += w / (double)(rs->rrf_k + r + 1);
    return;
  }
  score_range dense_range = range_of(d, nd), lexical_range = range_of(l, nl);
  for (size_t i = 0; i < nc; i++) {
    double ip = (double)row_score(kb, dq, cand[i]); /* exact, in float32 */
    if (!isfinite(ip)) ip = 0.0; /* a forged bundle's overflowing scores count for nothing, as in Python */
    double dense = normalise(ip, dense_range, rs->fusion);
    double lexical = normalise(kb->lex.scores[cand[i]], lexical_range, rs->fusion);
    double a = (1.0 - w) * dense, b = w * lexical;
    fused[i].score = a + b;
  }
}

static kbp_status hybrid_search(kbp_bundle *kb, const float *q, const char *question, size_t k, kbp_hit *hits, size_t *n_hits) {
  uint64_t depth = k > kb->rs.depth ? k : kb->rs.depth;
  scored *d = NULL, *l = NULL, *fused = NULL;
  uint64_t *cand = NULL;
  size_t nd = 0, nl = 0, nc = 0;
  dense_query dq;
  kbp_status st = prepare_query(kb, q, &dq);
  if (st == KBP_OK) st = dense_top(kb, &dq, depth, &d, &nd); /* two-stage with binary codes, as Python's */
  if (st == KBP_OK) st = score_lexical(kb, question);
  if (st == KBP_OK) st = lexical_top(kb, depth, &l, &nl);
  if (st == KBP_OK && nl == 0) { /* no word of the question in the index: the dense list */
    for (size_t i = 0; i < nd && i < k; i++) hits[i] = (kbp_hit){d[i].id, d[i].score};
    *n_hits = nd < k ? nd : k;
  } else if (st == KBP_OK) {
    cand = malloc((nd + nl) * sizeof *cand);
    fused = malloc((nd + nl) * sizeof *fused);
    if (!cand || !fused) st = out_of_memory(kb);
    else {
      nc = candidate_union(d, nd, l, nl, cand);
      fuse(kb, &dq, d, nd, l, nl, cand, nc, fused);
      qsort(fused, nc, sizeof *fused, by_rank);
      for (size_t i = 0; i < nc && i < k; i++) hits[i] = (kbp_hit){fused[i].id, fused[i].score};
      *n_hits = nc < k ? nc : k;
    }
  }
  free(d);
  free(l);
  free(cand);
  free(fused);
  return st;
}

static kbp_status copy_hits(const scored *s, size_t n, size_t k, kbp_hit *hits, size_t *n_hits) {
  for (size_t i = 0; i < n && i < k; i++) hits[i] = (kbp_hit){s[i].id, s[i].score};
  *n_hits = n < k ? n : k;
  return KBP_OK;
}

kbp_status kbp_search(kbp_bundle *kb, const float *query_vector, const char *question, size_t k, kbp_mode mode,
                      kbp_hit *hits, size_t *n_hits) {
  if (!kb) return KBP_ERR_ARGUMENT;
  clear_error(&kb->err);
  if (!n_hits || (k && !hits)) return fail(kb, KBP_ERR_ARGUMENT, "", "kbp_search: hits and n_hits must not be NULL");
  *n_hits = 0;
  kbp_mode used;
  kbp_status st = kbp_resolve_mode(kb, mode, &used);
  if (st != KBP_OK) return st;
  if (used != KBP_MODE_LEXICAL && (st = check_query_vector(kb, query_vector)) != KBP_OK) return st;
  if (used != KBP_MODE_DENSE && !question) return fail(kb, KBP_ERR_ARGUMENT, "", "this search needs a question");
  if (k == 0) return KBP_OK;
  scored *top = NULL;
  size_t n = 0;
  if (used == KBP_MODE_HYBRID) return hybrid_search(kb, query_vector, question, k, hits, n_hits);
  if (used == KBP_MODE_DENSE) {
    dense_query dq;
    if ((st = prepare_query(kb, query_vector, &dq)) == KBP_OK) st = dense_top(kb, &dq, k, &top, &n);
  } else if ((st = score_lexical(kb, question)) == KBP_OK) {
    st = lexical_top(kb, k, &top, &n);
  }
  if (st == KBP_OK) copy_hits(top, n, k, hits, n_hits);
  free(top);
  return st;
}

/* ---- pages as the unit (FORMAT.md §2.8; Python: kbc/retrieval.py page_key, rank_pages and
 * KnowledgeBase.rank_pages). */

kbp_status kbp_default_unit(kbp_bundle *kb, kbp_unit *unit) {
  if (!kb) return KBP_ERR_ARGUMENT;
  clear_error(&kb->err);
  if (!unit) return fail(kb, KBP_ERR_ARGUMENT, "", "kbp_default_unit: unit must not be NULL");
  kbp_status st = retrieval_ready(kb);
  if (st != KBP_OK) return st;
  *unit = kb->rs.unit;
  return KBP_OK;
}

kbp_status kbp_page_settings(kbp_bundle *kb, size_t *page_depth, double *page_share, size_t *page_chunks) {
  if (!kb) return KBP_ERR_ARGUMENT;
  clear_error(&kb->err);
  kbp_status st = retrieval_ready(kb);
  if (st != KBP_OK) return st;
  if (page_depth) *page_depth = (size_t)kb->rs.page_depth;
  if (page_share) *page_share = kb->rs.page_share;
  if (page_chunks) *page_chunks = (size_t)kb->rs.page_chunks;
  return KBP_OK;
}

/* One ranked chunk with its page: (source, record or none, page_start), as Python's page_key reads
 * them (an absent source or page_start is 0). Integers beyond int64 saturate in mp_value.i; `*_big`
 * keeps what they were, so that two of them still compare as Python's ints do. The record is
 * compared by its length and SHA-256, so a page key takes 96 bytes whatever the record's length. */
typedef struct {
  int64_t source, page;
  uint64_t source_big, page_big;
  int has_record;
  uint64_t record_len;
  uint8_t record_sha[32];
  double score;
  uint64_t id;
} page_member;

typedef struct {
  double score;      /* the page's */
  uint64_t first_id; /* its first member's chunk id: the tie-break */
  size_t start, len; /* its members in the sorted member array */
} page_group;

/* The msgpack map of chunk `id` (its block checked when loaded). */
static kbp_status chunk_fields_of(kbp_bundle *kb, uint64_t id, chunk_fields *f) {
  kbp_status st = load_block(kb, id / kb->block_size);
  if (st != KBP_OK) return st;
  const block_cache *bc = &kb->block;
  mp_cursor c = {bc->raw + bc->starts[id % kb->block_size], bc->raw + bc->raw_len};
  read_chunk_map(&c, f, 0);
  return KBP_OK;
}

static kbp_status read_page_key(kbp_bundle *kb, page_member *m) {
  chunk_fields f;
  kbp_status st = chunk_fields_of(kb, m->id, &f);
  if (st != KBP_OK) return st;
  if (f.present & 1u << F_SOURCE) {
    m->source = f.value[F_SOURCE].i;
    m->source_big = f.value[F_SOURCE].len;
  }
  if (f.present & 1u << F_PAGE_START) {
    m->page = f.value[F_PAGE_START].i;
    m->page_big = f.value[F_PAGE_START].len;
  }
  if (f.present & 1u << F_RECORD) {
    m->has_record = 1;
    m->record_len = f.value[F_RECORD].len;
    sha256(f.value[F_RECORD].data, f.value[F_RECORD].len, m->record_sha);
  }
  return KBP_OK;
}

#define CMP_FIELD(a, b) \
  if ((a) != (b)) return (a) < (b) ? -1 : 1

static int page_key_cmp(const page_member *a, const page_member *b) {
  CMP_FIELD(a->source, b->source);
  CMP_FIELD(a->source_big, b->source_big);
  CMP_FIELD(a->page, b->page);
  CMP_FIELD(a->page_big, b->page_big);
  CMP_FIELD(a->has_record, b->has_record);
  CMP_FIELD(a->record_len, b->record_len);
  return memcmp(a->record_sha, b->record_sha, sizeof a->record_sha);
}

static int member_by_id(const void *pa, const void *pb) {
  const page_member *a = pa, *b = pb;
  return a->id < b->id ? -1 : a->id > b->id;
}

/* Pages together, each page's members best first (higher score, then lower id). */
static int member_by_page_then_rank(const void *pa, const void *pb) {
  const page_member *a = pa, *b = pb;
  int c = page_key_cmp(a, b);
  if (c) return c;
  scored sa = {a->score, a->id}, sb = {b->score, b->id};
  return better(sa, sb) ? -1 : better(sb, sa) ? 1 : 0;
}

static int group_by_rank(const void *pa, const void *pb) {
  const page_group *a = pa, *b = pb;
  scored sa = {a->score, a->first_id}, sb = {b->score, b->first_id};
  return better(sa, sb) ? -1 : better(sb, sa) ? 1 : 0;
}

static int group_by_first_id(const void *pa, const void *pb) {
  const page_group *a = *(const page_group *const *)pa, *b = *(const page_group *const *)pb;
  return a->first_id < b->first_id ? -1 : a->first_id > b->first_id;
}

/* Copies the records of the first n groups into kb->page_strings and fills pages[0..n). */
static kbp_status fill_pages(kbp_bundle *kb, const page_member *members, page_group *groups, size_t n,
                             kbp_page_hit *pages) {
  uint64_t need = 0;
  for (size_t g = 0; g < n; g++) {
    const page_member *m = &members[groups[g].start];
    if (m->has_record) need += m->record_len + 1;
  }
  if (need > (uint64_t)SIZE_MAX) return out_of_memory(kb);
  void *area = kb->page_strings;
  if (need && reserve(&area, &kb->page_strings_cap, (size_t)need)) return out_of_memory(kb);
  kb->page_strings = area;
  const page_group **by_id = malloc((n ? n : 1) * sizeof *by_id); /* the blocks are read in id order */
  if (!by_id) return out_of_memory(kb);
  for (size_t g = 0; g < n; g++) by_id[g] = &groups[g];
  qsort(by_id, n, sizeof *by_id, group_by_first_id);
  size_t used = 0;
  kbp_status st = KBP_OK;
  for (size_t i = 0; i < n && st == KBP_OK; i++) {
    size_t g = (size_t)(by_id[i] - groups);
    const page_member *m = &members[groups[g].start];
    pages[g].record = (kbp_string){NULL, 0};
    if (!m->has_record) continue;
    chunk_fields f;
    if ((st = chunk_fields_of(kb, m->id, &f)) != KBP_OK) break;
    pages[g].record = put_string(kb->page_strings, &used, f.value[F_RECORD].data, (size_t)f.value[F_RECORD].len);
  }
  free(by_id);
  if (st != KBP_OK) return st;
  size_t per_page = (size_t)kb->rs.page_chunks;
  for (size_t g = 0; g < n; g++) {
    const page_member *m = &members[groups[g].start];
    kbp_page_hit *p = &pages[g];
    p->score = groups[g].score;
    p->source = m->source;
    p->page = m->page;
    p->n_chunks = groups[g].len < per_page ? groups[g].len : per_page;
    for (size_t c = 0; c < p->n_chunks; c++) {
      p->chunk_ids[c] = m[c].id;
      p->chunk_scores[c] = m[c].score;
    }
  }
  return KBP_OK;
}

kbp_status kbp_search_pages(kbp_bundle *kb, const float *query_vector, const char *question, size_t k, kbp_mode mode,
                            kbp_page_hit *pages, size_t *n_pages) {
  if (!kb) return KBP_ERR_ARGUMENT;
  clear_error(&kb->err);
  if (!n_pages || (k && !pages)) return fail(kb, KBP_ERR_ARGUMENT, "", "kbp_search_pages: pages and n_pages must not be NULL");
  *n_pages = 0;
  kbp_status st = retrieval_ready(kb);
  if (st != KBP_OK) return st;
  size_t depth = (size_t)kb->rs.page_depth, n = 0; /* <= MAX_PAGE_DEPTH: every allocation here is bounded */
  double share = kb->rs.page_share;
  kbp_hit *hits = malloc(depth * sizeof *hits);
  page_member *members = malloc(depth * sizeof *members);
  page_group *groups = malloc(depth * sizeof *groups);
  if (!hits || !members || !groups) st = out_of_memory(kb);
  /* 1. the mode's best P chunks, whatever k is (k = 0: the same checks, no pages) */
  if (st == KBP_OK) st = kbp_search(kb, query_vector, question, k ? depth : 0, mode, hits, &n);
  for (size_t i = 0; st == KBP_OK && i < n; i++) {
    memset(&members[i], 0, sizeof members[i]);
    members[i].score = hits[i].score;
    members[i].id = hits[i].id;
  }
  /* their pages, the blocks read in id order (each once) */
  if (st == KBP_OK) qsort(members, n, sizeof *members, member_by_id);
  for (size_t i = 0; st == KBP_OK && i < n; i++) st = read_page_key(kb, &members[i]);
  /* 2. grouped by page, members best first; 3. each page's score */
  size_t n_groups = 0;
  if (st == KBP_OK) {
    qsort(members, n, sizeof *members, member_by_page_then_rank);
    for (size_t i = 0; i < n;) {
      size_t j = i + 1;
      while (j < n && page_key_cmp(&members[i], &members[j]) == 0) j++;
      double rest = 0.0; /* left to right, as Python's loop: rest += max(s, 0.0) */
      for (size_t r = i + 1; r < j; r++) rest += 0.0 > members[r].score ? 0.0 : members[r].score;
      double total = share != 0.0 ? members[i].score + share * rest : members[i].score;
      groups[n_groups++] = (page_group){total, members[i].id, i, j - i};
      i = j;
    }
    /* 4. pages by score, the lower first chunk id first on ties; the first k */
    qsort(groups, n_groups, sizeof *groups, group_by_rank);
    if (n_groups > k) n_groups = k;
    st = fill_pages(kb, members, groups, n_groups, pages);
  }
  if (st == KBP_OK) *n_pages = n_groups;
  free(hits);
  free(members);
  free(groups);
  return st;
}

/* ============================================================== 10. probes
 * FORMAT.md §2.3; Python: Bundle.probes, kbc/probe.py compare. */

static kbp_status load_probe_json(kbp_bundle *kb) {
  probe_set *ps = &kb->probes;
  const section *s = &kb->sections[kb->known[S_PROBES]];
  const uint8_t *bytes = NULL;
  kbp_status st;
  if (strcmp(s->encoding, "json") != 0) return invalid(kb, "probes", "unexpected encoding '%s'", s->encoding);
  if (s->length > MAX_JSON_SECTION_BYTES) return invalid(kb, "probes", "%llu bytes exceeds the JSON section limit", (unsigned long long)s->length);
  if ((st = section_bytes(kb, kb->known[S_PROBES], &bytes)) != KBP_OK) return st;
  ps->end = (const char *)bytes + s->length;
  if (json_check((const char *)bytes, s->length, &ps->root)) return invalid(kb, "probes", "invalid JSON (or not UTF-8)");
  const char *list = jget(ps->root, ps->end, "probes"), *item;
  jcur it;
  if (!jopen(list, ps->end, '[', &it)) return invalid(kb, "probes", "malformed: expected an object with a list of {text} probes");
  size_t n = 0;
  while (jarray_next(&it, &item)) n++;
  ps->items = calloc(n ? n : 1, sizeof *ps->items);
  if (!ps->items) return out_of_memory(kb);
  jopen(list, ps->end, '[', &it);
  while (jarray_next(&it, &item)) {
    const char *kind = jget(item, ps->end, "kind"), *tokens = jget(item, ps->end, "tokens");
    uint64_t u;
    if (jtype(jget(item, ps->end, "text")) != J_STRING)
      return invalid(kb, "probes", "malformed: expected an object with a list of {text} probes");
    /* FORMAT.md §2.3: kind a string, tokens a count; an engine reads both */
    if ((kind && jtype(kind) != J_STRING) || (tokens && juint(tokens, ps->end, &u)))
      return invalid(kb, "probes", "probe %zu: kind must be a string and tokens an integer >= 0", ps->n);
    ps->items[ps->n++] = item;
  }
  /* every field an engine reads has its type, so a verified bundle's probes are all usable */
  const char *prompt = jget(ps->root, ps->end, "prompt"), *max_seq = jget(ps->root, ps->end, "max_seq_length");
  const char *role = jget(ps->root, ps->end, "role"), *version = jget(ps->root, ps->end, "version");
  uint64_t u;
  if (prompt && jtype(prompt) != J_STRING) return invalid(kb, "probes", "prompt is not a string");
  if (role && jtype(role) != J_STRING) return invalid(kb, "probes", "role is not a string");
  if ((max_seq && (juint(max_seq, ps->end, &u) || u < 1)) || (version && juint(version, ps->end, &u)))
    return invalid(kb, "probes", "version and max_seq_length must be integers (max_seq_length >= 1)");
  double threshold = DEFAULT_PROBE_THRESHOLD;
  const char *stored = jget(ps->root, ps->end, "threshold");
  if (stored && !(jfinite_number(stored, ps->end, &threshold) && threshold >= -1 && threshold <= 1))
    return invalid(kb, "probes", "threshold must be a number from -1 to 1 (a cosine)");
  ps->threshold = threshold;
  return KBP_OK;
}

static kbp_status open_probes(kbp_bundle *kb) {
  if (kb->known[S_PROBES] < 0) return fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no probes (format 1.0)");
  kbp_status st = load_probe_json(kb);
  if (st != KBP_OK) return st;
  int idx = kb->known[S_PROBE_VECTORS];
  if (idx < 0) return invalid(kb, "probe_vectors", "missing although a probes section is present");
  const section *s = &kb->sections[idx];
  uint64_t n = kb->probes.n;
  int length_ok = n == 0 ? s->length == 0 : kb->dim <= s->length / 4 / n && s->length == n * kb->dim * 4;
  if (strcmp(s->encoding, "f32le") != 0 || !length_ok)
    return invalid(kb, "probe_vectors", "expected %llu x %llu f32le, found %llu bytes (%s)", (unsigned long long)n,
                   (unsigned long long)kb->dim, (unsigned long long)s->length, s->encoding);
  return section_bytes(kb, idx, &kb->probes.vectors);
}

static kbp_status probes_ready(kbp_bundle *kb) {
  if (kb->probes_state == LOAD_READY) return KBP_OK;
  if (kb->probes_state == LOAD_ABSENT) return fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no probes (format 1.0)");
  free(kb->probes.items);
  memset(&kb->probes, 0, sizeof kb->probes);
  kbp_status st = open_probes(kb);
  if (st == KBP_OK) kb->probes_state = LOAD_READY;
  if (st == KBP_ERR_NOT_PRESENT) kb->probes_state = LOAD_ABSENT;
  return st;
}

kbp_status kbp_probe_count(kbp_bundle *kb, size_t *n) {
  clear_error(&kb->err);
  kbp_status st = probes_ready(kb);
  if (st == KBP_OK && n) *n = kb->probes.n;
  return st;
}

kbp_status kbp_probe_get(kbp_bundle *kb, size_t i, kbp_probe *out) {
  clear_error(&kb->err);
  kbp_status st = probes_ready(kb);
  if (st != KBP_OK) return st;
  const probe_set *ps = &kb->probes;
  if (!out || i >= ps->n) return fail(kb, KBP_ERR_ARGUMENT, "", "probe %zu out of range", i);
  const char *prompt = jget(ps->root, ps->end, "prompt"), *text = jget(ps->items[i], ps->end, "text");
  const char *kind = jget(ps->items[i], ps->end, "kind");
  if (prompt && jtype(prompt) != J_STRING) return invalid(kb, "probes", "prompt is not a string");
  if (jtype(kind) != J_STRING) kind = NULL;
  size_t pb = prompt ? jdecoded_bound(prompt, ps->end) : 0, tb = jdecoded_bound(text, ps->end);
  size_t kb_len = kind ? jdecoded_bound(kind, ps->end) : 1;
  void *area = kb->probe_strings;
  if (reserve(&area, &kb->probe_strings_cap, pb + tb + kb_len + 2)) return out_of_memory(kb);
  kb->probe_strings = area;
  uint8_t *buf = (uint8_t *)kb->probe_strings;
  long lp = prompt ? jdecode(prompt, ps->end, buf, pb) : 0;
  long lt = jdecode(text, ps->end, buf + lp, tb);
  buf[lp + lt] = 0;
  out->input = (kbp_string){(const char *)buf, (size_t)(lp + lt)};
  uint8_t *kind_at = buf + lp + lt + 1;
  long lk = kind ? jdecode(kind, ps->end, kind_at, kb_len) : 1;
  if (!kind) kind_at[0] = '?';
  kind_at[lk] = 0;
  out->kind = (kbp_string){(const char *)kind_at, (size_t)lk};
  return KBP_OK;
}

static double probe_value(const probe_set *ps, size_t dim, size_t i, size_t j) {
  uint32_t bits = (uint32_t)le(ps->vectors + 4 * (i * dim + j), 4);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

kbp_status kbp_probe_check(kbp_bundle *kb, const float *vectors, size_t n_vectors, double *cosines, kbp_probe_result *result) {
  clear_error(&kb->err);
  kbp_status st = probes_ready(kb);
  if (st != KBP_OK) return st;
  const probe_set *ps = &kb->probes;
  size_t dim = (size_t)kb->dim;
  if (!result || (n_vectors && !vectors)) return fail(kb, KBP_ERR_ARGUMENT, "", "kbp_probe_check: vectors and result must not be NULL");
  if (n_vectors != ps->n)
    return fail(kb, KBP_ERR_ARGUMENT, "", "%zu vectors, but the bundle has %zu probes (embed every probe input, in order)", n_vectors, ps->n);
  for (size_t i = 0; i < n_vectors * dim; i++)
    if (!isfinite(vectors[i])) return fail(kb, KBP_ERR_ARGUMENT, "", "the probe vectors hold NaN or infinity");
  memset(result, 0, sizeof *result);
  result->count = ps->n;
  result->threshold = ps->threshold;
  double sum = 0;
  for (size_t i = 0; i < ps->n; i++) {
    double num = 0, ref_sq = 0, cand_sq = 0;
    for (size_t j = 0; j < dim; j++) {
      double r = probe_value(ps, dim, i, j), c = vectors[i * dim + j];
      num += r * c;
      ref_sq += r * r;
      cand_sq += c * c;
    }
    double den = sqrt(ref_sq) * sqrt(cand_sq);
    double cosine = den > 0 ? num / (den > 1e-300 ? den : 1e-300) : 0.0;
    if (cosines) cosines[i] = cosine;
    if (i == 0 || cosine < result->min_cosine) {
      result->min_cosine = cosine;
      result->worst = i;
    }
    sum += cosine;
  }
  result->mean_cosine = ps->n ? sum / (double)ps->n : 0.0;
  result->passed = ps->n == 0 || result->min_cosine >= result->threshold;
  return KBP_OK;
}

/* ============================================================== 11. the query encoder
 * FORMAT.md §2.6; Python: Bundle.encoder. The manifest's `encoder` object names two sections. */

/* The section a manifest string names, or -1 (*name gets it, cut to fit, for the message). */
static int named_section(const kbp_bundle *kb, const char *v, char name[KBP_PART_MAX]) {
  uint8_t buf[KBP_PART_MAX];
  long n = jdecode(v, kb->manifest_end, buf, sizeof buf - 1);
  if (n < 0) { /* longer than any section name: no section has it */
    memcpy(name, "encoder", 8);
    return -1;
  }
  memcpy(name, buf, (size_t)n);
  name[n] = 0;
  return strlen(name) == (size_t)n ? section_index(kb, name) : -1; /* a NUL inside names nothing */
}

/* 1 when two JSON values are the same string, the same boolean or the same non-negative integer
 * (the encoder fields that must repeat the embedder record); 0 otherwise, including on error. */
static int same_setting(const char *a, const char *b, const char *end) {
  jkind ka = jtype(a), kb_ = jtype(b);
  if (ka != kb_) return 0;
  if (ka == J_TRUE || ka == J_FALSE) return 1;
  if (ka == J_NUMBER) {
    uint64_t x, y;
    return juint(a, end, &x) == 0 && juint(b, end, &y) == 0 && x == y;
  }
  if (ka != J_STRING) return 0;
  size_t ca = jdecoded_bound(a, end), cb = jdecoded_bound(b, end);
  uint8_t *x = malloc(ca + 1), *y = malloc(cb + 1);
  long nx = x ? jdecode(a, end, x, ca) : -1, ny = y ? jdecode(b, end, y, cb) : -1;
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
  if (!jstreq(jget(meta, end, "format"), end, "onnx")) return invalid(kb, "manifest", "encoder.format must be \"onnx\"");
  v = jget(meta, end, "precision");
  if (!jstreq(v, end, "float32") && !jstreq(v, end, "int8"))
    return invalid(kb, "manifest", "encoder.precision must be \"float32\" or \"int8\"");
  jcur it;
  if (!jopen(jget(meta, end, "inputs"), end, '[', &it)) return invalid(kb, "manifest", "encoder.inputs must be a list of strings");
  while (jarray_next(&it, &item))
    if (jtype(item) != J_STRING) return invalid(kb, "manifest", "encoder.inputs must be a list of strings");
  for (size_t i = 0; i < sizeof strings / sizeof *strings; i++) {
    v = jget(meta, end, strings[i]);
    if ((v || required[i]) && jtype(v) != J_STRING) return invalid(kb, "manifest", "encoder.%s must be a string", strings[i]);
  }
  v = jget(meta, end, "query_prompt");
  if (jstring_chars(v, end) > MAX_PROMPT_CHARS)
    return invalid(kb, "manifest", "encoder.query_prompt must be a string of at most %u characters", MAX_PROMPT_CHARS);
  v = jget(meta, end, "do_lower_case");
  if (jtype(v) != J_TRUE && jtype(v) != J_FALSE) return invalid(kb, "manifest", "encoder.do_lower_case must be true or false");
  v = jget(meta, end, "normalized");
  if (v && jtype(v) != J_TRUE && jtype(v) != J_FALSE) return invalid(kb, "manifest", "encoder.normalized must be true or false");
  if (juint(jget(meta, end, "max_seq_length"), end, &u) || u < 1)
    return invalid(kb, "manifest", "encoder.max_seq_length must be an integer >= 1");
  v = jget(meta, end, "opset");
  if (v && juint(v, end, &u)) return invalid(kb, "manifest", "encoder.opset must be an integer >= 0");
  return KBP_OK;
}

/* kbc/encoder_guard.py's bounds on tokenizer.json (FORMAT.md §5.1): its size, its nesting and its shape */
#define MAX_TOKENIZER_BYTES ((uint64_t)32 << 20)
#define MAX_TOKENIZER_DEPTH 32

static kbp_status check_tokenizer(kbp_bundle *kb, const char *part, const char *text, uint64_t n) {
  const char *root, *v, *item;
  if (n > MAX_TOKENIZER_BYTES)
    return invalid(kb, part, "%llu bytes exceeds the %llu-byte tokenizer limit", (unsigned long long)n,
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
    return invalid(kb, part, "JSON nested %ld deep, more than the tokenizer limit of %d", deepest, MAX_TOKENIZER_DEPTH);
  if (json_check(text, n, &root)) return invalid(kb, part, "invalid JSON (or not UTF-8)");
  const char *end = text + n;
  if (jtype(root) != J_OBJECT) return invalid(kb, part, "not a tokenizer.json object");
  const char *model = jget(root, end, "model"), *type = jget(model, end, "type");
  if (jtype(model) != J_OBJECT || (type && jtype(type) != J_STRING))
    return invalid(kb, part, "not a tokenizer.json (its model is not an object)");
  static const char *const parts[] = {"normalizer", "pre_tokenizer", "post_processor", "decoder", "truncation", "padding"};
  for (size_t i = 0; i < sizeof parts / sizeof *parts; i++) {
    v = jget(root, end, parts[i]);
    if (v && jtype(v) != J_NULL && jtype(v) != J_OBJECT)
      return invalid(kb, part, "not a tokenizer.json (%s is neither null nor an object)", parts[i]);
  }
  v = jget(root, end, "added_tokens");
  jcur it;
  if (v && !jopen(v, end, '[', &it)) return invalid(kb, part, "not a tokenizer.json (added_tokens is not a list of token objects)");
  while (v && jarray_next(&it, &item))
    if (jtype(item) != J_OBJECT || jtype(jget(item, end, "content")) != J_STRING)
      return invalid(kb, part, "not a tokenizer.json (added_tokens is not a list of token objects)");
  return KBP_OK;
}

kbp_status kbp_encoder_get(kbp_bundle *kb, kbp_encoder *out) {
  static const char *const keys[2] = {"graph", "tokenizer"}, *const encodings[2] = {"onnx", "json"};
  const char *end = kb->manifest_end, *meta = jget(kb->manifest_root, end, "encoder");
  int idx[2];
  char names[2][KBP_PART_MAX];
  const uint8_t *graph = NULL, *tokenizer = NULL;
  kbp_status st;
  clear_error(&kb->err);
  if (jtype(meta) == J_NONE || jtype(meta) == J_NULL) return fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no query encoder");
  if (jtype(meta) != J_OBJECT || jtype(jget(meta, end, "graph")) != J_STRING || jtype(jget(meta, end, "tokenizer")) != J_STRING)
    return invalid(kb, "manifest", "encoder: expected an object naming its graph and tokenizer sections");
  if ((st = check_encoder_record(kb, meta)) != KBP_OK) return st;
  for (int i = 0; i < 2; i++) {
    idx[i] = named_section(kb, jget(meta, end, keys[i]), names[i]);
    if (idx[i] < 0) return invalid(kb, names[i], "encoder %s section is missing", keys[i]);
    if (strcmp(kb->sections[idx[i]].encoding, encodings[i]) != 0)
      return invalid(kb, names[i], "encoding '%s', expected '%s'", kb->sections[idx[i]].encoding, encodings[i]);
  }
  if ((st = section_bytes(kb, idx[0], &graph)) != KBP_OK) return st;
  uint8_t digest[32];
  char hex[65];
  sha256(graph, kb->sections[idx[0]].length, digest);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
  if (!jstreq(jget(meta, end, "graph_sha256"), end, hex))
    return invalid(kb, names[0], "differs from the manifest's encoder.graph_sha256");
  /* the encoder must be the one that made the vectors, run the way the embedder record says */
  const char *embedder = jget(kb->manifest_root, end, "embedder");
  if (!same_setting(jget(meta, end, "graph_sha256"), jget(jget(embedder, end, "runtime"), end, "graph_sha256"), end))
    return invalid(kb, "manifest", "encoder.graph_sha256 disagrees with embedder.runtime.graph_sha256");
  static const char *const shared[4] = {"query_prompt", "max_seq_length", "do_lower_case", "precision"};
  for (int i = 0; i < 4; i++)
    if (!same_setting(jget(meta, end, shared[i]), jget(embedder, end, shared[i]), end))
      return invalid(kb, "manifest", "encoder.%s disagrees with embedder.%s", shared[i], shared[i]);
  const section *t = &kb->sections[idx[1]];
  if (t->length > MAX_TOKENIZER_BYTES)
    return invalid(kb, names[1], "%llu bytes exceeds the %llu-byte tokenizer limit", (unsigned long long)t->length,
                   (unsigned long long)MAX_TOKENIZER_BYTES);
  if ((st = section_bytes(kb, idx[1], &tokenizer)) != KBP_OK) return st;
  if ((st = check_tokenizer(kb, names[1], (const char *)tokenizer, t->length)) != KBP_OK) return st;
  if (out) {
    jcur c = {meta, end};
    jscan_value(&c, 0);
    *out = (kbp_encoder){graph, (size_t)kb->sections[idx[0]].length, (const char *)tokenizer, (size_t)t->length,
                         meta, (size_t)(c.p - meta)};
  }
  return KBP_OK;
}

/* ============================================================== 12. verify
 * What `kbc inspect --verify` checks, in the order Bundle.verify checks it, so that the part
 * named is the same. */

static kbp_status verify_sections(kbp_bundle *kb, int *body_ok) {
  uint8_t digest[32];
  sha256(kb->data + HEADER_SIZE, kb->size - HEADER_SIZE, digest);
  *body_ok = memcmp(digest, kb->body_sha, 32) == 0;
  for (size_t i = 0; i < kb->n_sections; i++) { /* every section's checksum again, in file order */
    int idx = (int)kb->file_order[i];
    const uint8_t *bytes = NULL;
    kb->sections[idx].state = UNCHECKED;
    kbp_status st = section_bytes(kb, idx, &bytes);
    if (st != KBP_OK) return st;
  }
  return KBP_OK;
}

static kbp_status verify_chunks(kbp_bundle *kb) {
  kbp_status st = check_offsets(kb);
  for (uint64_t b = 0; st == KBP_OK && b < kb->n_blocks; b++) st = load_block(kb, b);
  return st;
}

static kbp_status verify_probes(kbp_bundle *kb) {
  if (kb->known[S_PROBES] < 0) return KBP_OK;
  kbp_status st = probes_ready(kb);
  if (st != KBP_OK) return st;
  if (first_non_finite_row(kb->probes.vectors, kb->probes.n, kb->dim, 4) >= 0)
    return invalid(kb, "probe_vectors", "holds NaN or infinity");
  return KBP_OK;
}

static kbp_status verify_lexical(kbp_bundle *kb) {
  if (!kbp_has_lexical(kb)) return KBP_OK;
  kbp_status st = lexical_ready(kb);
  uint64_t df;
  for (uint64_t t = 0; st == KBP_OK && t < kb->lex.terms; t++) st = walk_postings(kb, t, &df, NULL, NULL);
  return st;
}

/* The stored FAISS index (FORMAT.md §5.1; Python: kbc/faiss_guard.py, whose walk this is, check for
 * check). This library never loads or searches the index, but a device that hands a verified
 * bundle's index to FAISS must be able to trust it: faiss::read_index allocates what the bytes
 * declare before it reads the data that should fill them, and a forged id map or graph link names
 * chunks that do not exist. So every type kbc writes is walked, each declared size checked against
 * the bytes present and against one budget per quantity, and ids and links checked against the
 * chunk count. Nothing is allocated from a declared size: only a bitmap of the bundle's own count
 * (whose vectors are in the file) to see each id once. Layout per faiss/impl/index_read.cpp
 * (faiss-cpu 1.15): little-endian, size_t = u64. Any other type is refused. */
#define MAX_INDEX_BYTES ((uint64_t)1 << 30) /* the index section: FAISS holds it in memory whole */
#define MAX_IVF_LISTS ((uint64_t)1 << 20)   /* nlist: FAISS allocates two vectors per list first */
#define MAX_PQ_BITS 16u                     /* bits per PQ sub-code: d x 2^nbits centroid floats */
#define MAX_HNSW_LEVELS 32u                 /* graph levels */
#define MAX_HNSW_LINKS 4096u                /* neighbour slots of one node over all its levels */
#define MAX_HNSW_EF 4096u                   /* the efSearch stored in the graph */
#define METRIC_INNER_PRODUCT 0              /* FAISS's MetricType; kbc scores by inner product only */

typedef enum { IX_NONE, IX_HNSW_FLAT, IX_IVF_FLAT, IX_IVF_PQ, IX_PQ, IX_FLAT } index_type;
static const char *const IX_FOURCC[] = {"", "IHNf", "IwFl", "IwPQ", "IxPq", "IxFI"};
static const char *const IX_NAME[] = {"", "HNSW,Flat", "IVF,Flat", "IVF,PQ", "PQ", "Flat"};

typedef struct {
  kbp_bundle *kb;
  const uint8_t *p;
  uint64_t n, pos;
} ix_reader;

#define IX_LEFT(r) ((r)->n - (r)->pos)

static int ix_take(ix_reader *r, uint64_t n, const char *what, const uint8_t **at) {
  if (n > IX_LEFT(r)) {
    invalid(r->kb, "index", "%s declares %llu bytes, %llu remain in the section", what, (unsigned long long)n,
            (unsigned long long)IX_LEFT(r));
    return -1;
  }
  if (at) *at = r->p + r->pos;
  r->pos += n;
  return 0;
}

static int ix_u(ix_reader *r, int bytes, const char *what, uint64_t *out) {
  const uint8_t *at;
  if (ix_take(r, (uint64_t)bytes, what, &at)) return -1;
  *out = le(at, bytes);
  return 0;
}

static int ix_i32(ix_reader *r, const char *what, int64_t *out) {
  uint64_t u;
  if (ix_u(r, 4, what, &u)) return -1;
  uint32_t u32 = (uint32_t)u;
  int32_t v;
  memcpy(&v, &u32, sizeof v); /* two's complement, as FAISS reads it */
  *out = v;
  return 0;
}

static int ix_i64(ix_reader *r, const char *what, int64_t *out) {
  uint64_t u;
  if (ix_u(r, 8, what, &u)) return -1;
  memcpy(out, &u, sizeof *out);
  return 0;
}

static int64_t ix_at_i32(const uint8_t *p, uint64_t i) {
  uint32_t u = (uint32_t)le(p + 4 * i, 4);
  int32_t v;
  memcpy(&v, &u, sizeof v);
  return v;
}

static int64_t ix_at_i64(const uint8_t *p, uint64_t i) {
  uint64_t u = le(p + 8 * i, 8);
  int64_t v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* count entries of item bytes; the count is checked against the bytes left before multiplying */
static int ix_array(ix_reader *r, uint64_t item, uint64_t count, const char *what, const uint8_t **at) {
  if (count > IX_LEFT(r) / item) {
    invalid(r->kb, "index", "%s declares %llu entries of %llu bytes, %llu bytes remain in the section", what,
            (unsigned long long)count, (unsigned long long)item, (unsigned long long)IX_LEFT(r));
    return -1;
  }
  return ix_take(r, count * item, what, at);
}

/* FAISS's READVECTOR: a u64 element count, then the elements */
static int ix_vector(ix_reader *r, uint64_t item, const char *what, uint64_t *count, const uint8_t **at) {
  char name[64];
  snprintf(name, sizeof name, "%s length", what);
  if (ix_u(r, 8, name, count)) return -1;
  return ix_array(r, item, *count, what, at);
}

static int ix_fail(ix_reader *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  set_error(&r->kb->err, KBP_ERR_INVALID, "index", fmt, ap);
  va_end(ap);
  return -1;
}

/* a * b, or UINT64_MAX when it does not fit (no count here comes near it) */
static uint64_t ix_mul(uint64_t a, uint64_t b) { return a && b > UINT64_MAX / a ? UINT64_MAX : a * b; }

/* write_index_header: d, ntotal, two dummies, is_trained, metric; then the fourcc's type */
static int ix_expect(ix_reader *r, const char *what, uint64_t d, uint64_t ntotal, index_type *type) {
  const uint8_t *cc;
  char name[64];
  snprintf(name, sizeof name, "%s type", what);
  if (ix_take(r, 4, name, &cc)) return -1;
  *type = IX_NONE;
  for (int t = IX_HNSW_FLAT; t <= IX_FLAT; t++)
    if (memcmp(cc, IX_FOURCC[t], 4) == 0) *type = (index_type)t;
  if (*type == IX_NONE) {
    char shown[5];
    for (int i = 0; i < 4; i++) shown[i] = cc[i] > 32 && cc[i] < 127 ? (char)cc[i] : '?';
    shown[4] = 0;
    return ix_fail(r, "%s has FAISS type '%s', which kbc bundles do not carry (allowed: Flat, HNSW,Flat, IVF,Flat, IVF,PQ, PQ)",
                   what, shown);
  }
  int64_t got_d, got_n, metric;
  snprintf(name, sizeof name, "%s d", what);
  if (ix_i32(r, name, &got_d)) return -1;
  snprintf(name, sizeof name, "%s ntotal", what);
  if (ix_i64(r, name, &got_n)) return -1;
  const uint8_t *trained;
  snprintf(name, sizeof name, "%s header", what);
  if (ix_take(r, 16 + 1, name, &trained)) return -1;
  if (trained[16] > 1) return ix_fail(r, "%s is_trained is not a boolean", what); /* FAISS refuses it too */
  snprintf(name, sizeof name, "%s metric", what);
  if (ix_i32(r, name, &metric)) return -1;
  if (metric != METRIC_INNER_PRODUCT)
    return ix_fail(r, "%s uses metric %lld, expected inner product (%d)", what, (long long)metric, METRIC_INNER_PRODUCT);
  if (got_d <= 0 || got_n < 0) return ix_fail(r, "%s declares d=%lld, ntotal=%lld", what, (long long)got_d, (long long)got_n);
  if ((uint64_t)got_d != d || (uint64_t)got_n != ntotal)
    return ix_fail(r, "%s holds %lld x %lld-d vectors, expected %llu x %llu", what, (long long)got_n, (long long)got_d,
                   (unsigned long long)ntotal, (unsigned long long)d);
  return 0;
}

/* IndexFlat: READXBVECTOR, a count of floats, then ntotal x d of them */
static int ix_flat(ix_reader *r, const char *what, uint64_t d, uint64_t ntotal) {
  uint64_t n;
  char name[64];
  snprintf(name, sizeof name, "%s codes length", what);
  if (ix_u(r, 8, name, &n)) return -1;
  if (n != ix_mul(ntotal, d) || n == UINT64_MAX)
    return ix_fail(r, "%s codes hold %llu floats, expected %llu x %llu", what, (unsigned long long)n,
                   (unsigned long long)ntotal, (unsigned long long)d);
  snprintf(name, sizeof name, "%s codes", what);
  return ix_array(r, 4, n, name, NULL);
}

static int ix_hnsw(ix_reader *r, uint64_t ntotal) {
  uint64_t n_probas, n_cum, n_levels, n_offsets, n_neighbors;
  const uint8_t *cum, *levels, *offsets, *neighbors;
  if (ix_vector(r, 8, "HNSW assign_probas", &n_probas, NULL) || ix_vector(r, 4, "HNSW cum_nneighbor_per_level", &n_cum, &cum))
    return -1;
  if (n_cum < 2 || n_cum - 1 > MAX_HNSW_LEVELS || n_probas > MAX_HNSW_LEVELS)
    return ix_fail(r, "HNSW declares %lld levels (limit %u)", (long long)n_cum - 1, MAX_HNSW_LEVELS);
  uint64_t levels_n = n_cum - 1;
  int ok = ix_at_i32(cum, 0) == 0 && ix_at_i32(cum, levels_n) <= (int64_t)MAX_HNSW_LINKS;
  for (uint64_t i = 1; ok && i < n_cum; i++) ok = ix_at_i32(cum, i) >= ix_at_i32(cum, i - 1);
  if (!ok) return ix_fail(r, "HNSW neighbours per level are not increasing from 0 up to %u", MAX_HNSW_LINKS);
  if (ix_vector(r, 4, "HNSW levels", &n_levels, &levels)) return -1;
  int64_t top = 0;
  ok = n_levels == ntotal;
  for (uint64_t i = 0; ok && i < n_levels; i++) {
    int64_t l = ix_at_i32(levels, i);
    ok = l >= 1 && (uint64_t)l <= levels_n;
    if (l > top) top = l;
  }
  if (!ok) return ix_fail(r, "HNSW levels are not %llu values from 1 to %llu", (unsigned long long)ntotal, (unsigned long long)levels_n);
  if (ix_vector(r, 8, "HNSW offsets", &n_offsets, &offsets)) return -1;
  ok = n_offsets == ntotal + 1 && le(offsets, 8) == 0;
  for (uint64_t i = 0; ok && i < ntotal; i++) /* uint64 differences wrap, as numpy's do */
    ok = le(offsets + 8 * (i + 1), 8) - le(offsets + 8 * i, 8) == (uint64_t)ix_at_i32(cum, (uint64_t)ix_at_i32(levels, i));
  if (!ok) return ix_fail(r, "HNSW offsets disagree with the nodes' levels");
  if (ix_vector(r, 4, "HNSW neighbors", &n_neighbors, &neighbors)) return -1;
  uint64_t last = le(offsets + 8 * ntotal, 8);
  if (n_neighbors != last)
    return ix_fail(r, "HNSW holds %llu neighbour slots, its offsets %llu", (unsigned long long)n_neighbors, (unsigned long long)last);
  for (uint64_t i = 0; i < n_neighbors; i++) {
    int64_t v = ix_at_i32(neighbors, i);
    if (v < -1 || v >= (int64_t)ntotal) return ix_fail(r, "HNSW links name nodes beyond the %llu vectors", (unsigned long long)ntotal);
  }
  int64_t entry, max_level, ef, ignored;
  if (ix_i32(r, "HNSW entry_point", &entry) || ix_i32(r, "HNSW max_level", &max_level) ||
      ix_i32(r, "HNSW efConstruction", &ignored) || ix_i32(r, "HNSW efSearch", &ef) || ix_i32(r, "HNSW upper_beam", &ignored))
    return -1;
  if (ntotal == 0)
    ok = entry == -1 && max_level == -1;
  else
    ok = entry >= 0 && (uint64_t)entry < ntotal && max_level == ix_at_i32(levels, (uint64_t)entry) - 1 && max_level == top - 1;
  if (!ok) return ix_fail(r, "HNSW entry point %lld / max level %lld do not fit the graph", (long long)entry, (long long)max_level);
  if (ef < 1 || ef > (int64_t)MAX_HNSW_EF) return ix_fail(r, "HNSW efSearch %lld is outside 1..%u", (long long)ef, MAX_HNSW_EF);
  return 0;
}

/* ProductQuantizer: d, M, nbits (size_t each), then d x 2^nbits centroid floats; *code_size gets
 * its code size */
static int ix_pq(ix_reader *r, uint64_t d, uint64_t *code_size) {
  uint64_t pd, m, nbits, n;
  if (ix_u(r, 8, "PQ d", &pd) || ix_u(r, 8, "PQ M", &m) || ix_u(r, 8, "PQ nbits", &nbits)) return -1;
  if (pd != d || m < 1 || m > d || d % m || nbits < 1 || nbits > MAX_PQ_BITS)
    return ix_fail(r, "PQ of d=%llu, M=%llu, nbits=%llu does not fit %llu-d vectors (M must divide d, nbits 1..%u)",
                   (unsigned long long)pd, (unsigned long long)m, (unsigned long long)nbits, (unsigned long long)d, MAX_PQ_BITS);
  if (ix_u(r, 8, "PQ centroids length", &n)) return -1;
  if (d > (UINT64_MAX >> nbits) || n != d << nbits)
    return ix_fail(r, "PQ centroids hold %llu floats, expected %llu x 2^%llu", (unsigned long long)n, (unsigned long long)d,
                   (unsigned long long)nbits);
  if (ix_array(r, 4, n, "PQ centroids", NULL)) return -1;
  *code_size = (m * nbits + 7) / 8; /* d x 2^nbits x 4 bytes are in the section: m * nbits is small */
  return 0;
}

/* ArrayInvertedLists ("ilar"): list sizes ("full" or "sprs"), then each list's codes and ids; every
 * id in 0..ntotal-1, each row exactly once */
static int ix_invlists(ix_reader *r, uint64_t nlist, uint64_t code_size, uint64_t ntotal) {
  const uint8_t *cc, *raw;
  uint64_t got_nlist, got_code_size, n_raw;
  if (ix_take(r, 4, "inverted lists type", &cc)) return -1;
  if (memcmp(cc, "ilar", 4) != 0) return ix_fail(r, "inverted lists are not FAISS array lists ('ilar')");
  if (ix_u(r, 8, "inverted lists nlist", &got_nlist)) return -1;
  if (got_nlist != nlist) return ix_fail(r, "inverted lists disagree with the index's nlist or code size");
  if (ix_u(r, 8, "inverted lists code size", &got_code_size)) return -1;
  if (got_code_size != code_size) return ix_fail(r, "inverted lists disagree with the index's nlist or code size");
  if (ix_take(r, 4, "inverted lists layout", &cc) || ix_vector(r, 8, "inverted list sizes", &n_raw, &raw)) return -1;
  uint64_t stride, first, n_sizes;
  if (memcmp(cc, "full", 4) == 0 && n_raw == nlist) {
    stride = 8, first = 0, n_sizes = n_raw;
  } else if (memcmp(cc, "sprs", 4) == 0 && n_raw % 2 == 0) {
    stride = 16, first = 8, n_sizes = n_raw / 2;
    for (uint64_t i = 0; i < n_sizes; i++) { /* which list each size is for: ascending, below nlist */
      uint64_t which = le(raw + 16 * i, 8);
      if (which >= nlist || (i && which <= le(raw + 16 * (i - 1), 8)))
        return ix_fail(r, "sparse inverted list sizes name lists out of order or beyond nlist");
    }
  } else {
    char shown[5];
    for (int i = 0; i < 4; i++) shown[i] = cc[i] > 32 && cc[i] < 127 ? (char)cc[i] : '?';
    shown[4] = 0;
    return ix_fail(r, "inverted list sizes of layout '%s' do not fit %llu lists", shown, (unsigned long long)nlist);
  }
  uint64_t total = 0;
  int wrapped = 0;
  for (uint64_t i = 0; i < n_sizes; i++) { /* forged sizes must not wrap around */
    uint64_t s = le(raw + first + stride * i, 8);
    if (s > UINT64_MAX - total) wrapped = 1;
    total += s;
  }
  if (wrapped || total != ntotal)
    return ix_fail(r, "inverted lists hold %s%llu entries, the index %llu", wrapped ? "more than " : "",
                   (unsigned long long)total, (unsigned long long)ntotal);
  if (code_size > UINT64_MAX - 8 || total > IX_LEFT(r) / (code_size + 8))
    return ix_fail(r, "inverted lists declare %llu entries, more than the section holds", (unsigned long long)total);
  uint64_t start = r->pos;
  for (uint64_t i = 0; i < n_sizes; i++) { /* each list's codes, then its ids: all within the section now */
    uint64_t s = le(raw + first + stride * i, 8);
    if (s && (ix_take(r, s * code_size, "inverted list codes", NULL) || ix_array(r, 8, s, "inverted list ids", NULL))) return -1;
  }
  /* ids: first all within range (Python's min/max), then each row once */
  for (int pass = 0; pass < 2; pass++) {
    uint8_t *seen = NULL;
    if (pass == 1 && ntotal && !(seen = calloc((size_t)(ntotal / 8 + 1), 1))) return out_of_memory(r->kb), -1;
    uint64_t at = start;
    for (uint64_t i = 0; i < n_sizes; i++) {
      uint64_t s = le(raw + first + stride * i, 8);
      const uint8_t *ids = r->p + at + s * code_size;
      at += s * (code_size + 8);
      for (uint64_t j = 0; j < s; j++) {
        int64_t id = ix_at_i64(ids, j);
        if (pass == 0 && (id < 0 || (uint64_t)id >= ntotal))
          return ix_fail(r, "inverted list ids lie outside 0..%lld", (long long)ntotal - 1);
        if (pass == 1) {
          if (seen[id / 8] & (1u << (id % 8))) {
            free(seen);
            return ix_fail(r, "inverted list ids are not each of the %llu rows once", (unsigned long long)ntotal);
          }
          seen[id / 8] |= (uint8_t)(1u << (id % 8));
        }
      }
    }
    free(seen);
  }
  return 0;
}

static int ix_ivf(ix_reader *r, index_type type, uint64_t d, uint64_t ntotal) {
  uint64_t nlist, nprobe, dm_type, dm_len, code_size;
  index_type quantizer;
  if (ix_u(r, 8, "IVF nlist", &nlist) || ix_u(r, 8, "IVF nprobe", &nprobe)) return -1;
  if (nlist < 1 || nlist > MAX_IVF_LISTS || nprobe < 1 || nprobe > nlist)
    return ix_fail(r, "IVF declares nlist=%llu, nprobe=%llu (nlist 1..%llu, nprobe 1..nlist)", (unsigned long long)nlist,
                   (unsigned long long)nprobe, (unsigned long long)MAX_IVF_LISTS);
  if (ix_expect(r, "IVF quantizer", d, nlist, &quantizer)) return -1;
  if (quantizer != IX_FLAT) return ix_fail(r, "IVF quantizer is not a flat inner-product index");
  if (ix_flat(r, "IVF quantizer", d, nlist)) return -1;
  if (ix_u(r, 1, "IVF direct map type", &dm_type)) return -1;
  if (dm_type != 0) return ix_fail(r, "IVF carries a direct map (kbc writes none)");
  if (ix_vector(r, 8, "IVF direct map", &dm_len, NULL)) return -1;
  if (dm_len) return ix_fail(r, "IVF carries a direct map (kbc writes none)");
  if (type == IX_IVF_FLAT) {
    code_size = d * 4; /* the quantizer's nlist x d floats are in the section */
  } else {
    uint64_t by_residual, pq_size;
    if (ix_u(r, 1, "IVFPQ by_residual", &by_residual)) return -1;
    if (by_residual > 1) return ix_fail(r, "IVFPQ by_residual is not a boolean");
    if (ix_u(r, 8, "IVFPQ code size", &code_size) || ix_pq(r, d, &pq_size)) return -1;
    if (pq_size != code_size) return ix_fail(r, "IVFPQ code size %llu disagrees with its PQ", (unsigned long long)code_size);
  }
  return ix_invlists(r, nlist, code_size, ntotal);
}

/* 0 and *type when the bytes are an index kbc writes for count x dim vectors; -1 with the error set */
static int check_index(kbp_bundle *kb, const uint8_t *p, uint64_t n, uint64_t count, uint64_t dim, index_type *type) {
  ix_reader r = {kb, p, n, 0};
  if (n > MAX_INDEX_BYTES)
    return ix_fail(&r, "index section of %llu bytes exceeds %llu", (unsigned long long)n, (unsigned long long)MAX_INDEX_BYTES);
  if (ix_expect(&r, "stored index", dim, count, type)) return -1;
  index_type storage;
  uint64_t code_size, codes;
  int64_t search_type;
  switch (*type) {
  case IX_FLAT:
    if (ix_flat(&r, "stored index", dim, count)) return -1;
    break;
  case IX_HNSW_FLAT:
    if (ix_hnsw(&r, count) || ix_expect(&r, "HNSW storage", dim, count, &storage)) return -1;
    if (storage != IX_FLAT) return ix_fail(&r, "HNSW storage is not a flat inner-product index");
    if (ix_flat(&r, "HNSW storage", dim, count)) return -1;
    break;
  case IX_PQ:
    if (ix_pq(&r, dim, &code_size) || ix_u(&r, 8, "PQ codes length", &codes)) return -1;
    if (codes != ix_mul(count, code_size) || codes == UINT64_MAX)
      return ix_fail(&r, "PQ codes hold %llu bytes, expected %llu x %llu", (unsigned long long)codes, (unsigned long long)count,
                     (unsigned long long)code_size);
    if (ix_take(&r, codes, "PQ codes", NULL) || ix_i32(&r, "PQ search type", &search_type)) return -1;
    if (search_type != 0) return ix_fail(&r, "PQ search type is not plain PQ search"); /* polysemous: extra tables */
    if (ix_take(&r, 1 + 4, "PQ search settings", NULL)) return -1;
    break;
  default:
    if (ix_ivf(&r, *type, dim, count)) return -1;
  }
  if (IX_LEFT(&r)) return ix_fail(&r, "%llu bytes follow the index", (unsigned long long)IX_LEFT(&r));
  return 0;
}

/* The index section as a FAISS loader would take it: declared `faiss`, walked by check_index, and the
 * manifest's search parameters bounded and of the index's type (FAISS refuses efSearch on an IVF
 * index, nprobe on HNSW, either on PQ or Flat). */
static kbp_status verify_index(kbp_bundle *kb) {
  static const char *const params[2] = {"nprobe", "efSearch"};
  static const uint64_t limits[2] = {65536, 4096};
  int idx = kb->known[S_INDEX];
  if (idx < 0) return KBP_OK;
  const section *s = &kb->sections[idx];
  if (strcmp(s->encoding, "faiss") != 0) return invalid(kb, "index", "unknown encoding '%s', expected 'faiss'", s->encoding);
  const uint8_t *p;
  kbp_status st = section_bytes(kb, idx, &p);
  if (st != KBP_OK) return st;
  index_type type;
  if (check_index(kb, p, s->length, kb->count, kb->dim, &type)) return kb->err.status;
  const char *end = kb->manifest_end, *search_params = jget(kb->m_index, end, "search_params"), *key, *value;
  if (jfalsy(search_params, end)) return KBP_OK; /* Python: `... or {}` */
  jcur it;
  if (!jopen(search_params, end, '{', &it)) return invalid(kb, "manifest", "index.search_params is not an object");
  while (jobject_next(&it, &key, &value)) {
    int known = -1;
    uint64_t v;
    for (int i = 0; i < 2; i++)
      if (jstreq(key, end, params[i])) known = i;
    if (known < 0 || juint(value, end, &v) || v < 1 || v > limits[known])
      return invalid(kb, "manifest", "index.search_params: a parameter is not allowed (known: nprobe 1..65536, efSearch 1..4096)");
    int applies = known == 0 ? type == IX_IVF_FLAT || type == IX_IVF_PQ : type == IX_HNSW_FLAT;
    if (!applies)
      return invalid(kb, "manifest", "index.search_params: %s does not apply to the stored %s index", params[known], IX_NAME[type]);
  }
  return KBP_OK;
}

kbp_status kbp_verify(kbp_bundle *kb) {
  if (!kb) return KBP_ERR_ARGUMENT;
  clear_error(&kb->err);
  int body_ok;
  const uint8_t *vectors = NULL;
  kbp_status st = verify_sections(kb, &body_ok);
  if (st == KBP_OK) st = verify_chunks(kb);
  if (st == KBP_OK && !body_ok) st = invalid(kb, "file", "whole-file sha256 mismatch (damage outside any section, e.g. padding)");
  if (st == KBP_OK) {
    kb->vectors_checked = 0;
    st = vectors_bytes(kb, &vectors); /* finite, or int8's scales */
  }
  if (st == KBP_OK) st = check_code_padding(kb);
  if (st == KBP_OK && kbp_encoder_get(kb, NULL) == KBP_ERR_INVALID) st = KBP_ERR_INVALID;
  if (st == KBP_OK) {
    clear_error(&kb->err); /* "no query encoder" is no failure here */
    st = verify_probes(kb);
  }
  if (st == KBP_OK) st = verify_lexical(kb);
  if (st == KBP_OK) st = verify_index(kb);
  if (st == KBP_OK) st = retrieval_ready(kb);
  return st;
}
