/* libkbpack, json.c: a validating recursive-descent parser that accepts exactly what Python's
 * json.loads accepts (RFC 8259 plus NaN, Infinity and -Infinity; duplicate keys: the last wins),
 * then lookups on the checked text. A value is a pointer to its first byte; `end` is the end of
 * the document. Lookups rely on kbpi_json_check having accepted the whole document first, and
 * allocate nothing. The manifest, the probes section and tokenizer.json are read with it. */
#include "kbpack_internal.h"

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
  if (!c->check) {
    /* A lookup skips a string kbpi_json_check accepted: its closing quote is the first '"' after an
     * even run of backslashes. memchr instead of a byte loop, because a lookup skips every value
     * before its key: a 30 MB string in a manifest was scanned 40 times byte by byte (1.4 s). The
     * backslashes counted back from each quote stop at the one before it, so this stays linear. */
    for (const char *s = c->p + 1; s < c->end;) {
      const char *q = memchr(s, '"', (size_t)(c->end - s));
      if (!q) return -1;
      size_t run = 0;
      while (q - run - 1 > c->p && q[-(ptrdiff_t)run - 1] == '\\') run++;
      s = q + 1;
      if (!(run & 1)) { c->p = s; return 0; }
    }
    return -1;
  }
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

KBP_INTERNAL int kbpi_jscan_value(jcur *c, int depth) { /* checks and skips one value (no surrounding space) */
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
      if (kbpi_jscan_value(c, depth + 1)) return -1;
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
KBP_INTERNAL int kbpi_json_check(const char *text, uint64_t n, const char **root) {
  if (!kbpi_utf8_valid((const uint8_t *)text, (size_t)n)) return -1;
  jcur c = {text, text + n, 1};
  jws(&c);
  *root = c.p;
  if (kbpi_jscan_value(&c, 0)) return -1;
  jws(&c);
  return c.p == c.end ? 0 : -1;
}

KBP_INTERNAL jkind kbpi_jtype(const char *v) {
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
KBP_INTERNAL int kbpi_jopen(const char *v, const char *end, char open, jcur *it) {
  if (!v || *v != open) return 0;
  it->p = v + 1;
  it->end = end;
  it->check = 0;
  jws(it);
  return 1;
}

KBP_INTERNAL int kbpi_jarray_next(jcur *it, const char **value) {
  if (it->p >= it->end || *it->p == ']') return 0;
  if (*it->p == ',') { it->p++; jws(it); }
  *value = it->p;
  if (kbpi_jscan_value(it, 0)) return 0;
  jws(it);
  return 1;
}

KBP_INTERNAL int kbpi_jobject_next(jcur *it, const char **key, const char **value) {
  if (it->p >= it->end || *it->p == '}') return 0;
  if (*it->p == ',') { it->p++; jws(it); }
  *key = it->p;
  if (jscan_string(it)) return 0;
  jws(it);
  it->p++; /* ':' */
  jws(it);
  *value = it->p;
  if (kbpi_jscan_value(it, 0)) return 0;
  jws(it);
  return 1;
}

/* Decodes the JSON string at v into at most cap bytes; its byte length, or -1 if it needs more. */
KBP_INTERNAL long kbpi_jdecode(const char *v, const char *end, uint8_t *out, size_t cap) {
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
        l = kbpi_utf8_put(cp, tmp);
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

/* Bytes kbpi_jdecode needs for the string at v (at most its encoded length). */
KBP_INTERNAL size_t kbpi_jdecoded_bound(const char *v, const char *end) {
  jcur c = {v, end, 0};
  jscan_string(&c);
  return (size_t)(c.p - v);
}

/* The string's length in code points, as Python's len() counts it. */
KBP_INTERNAL uint64_t kbpi_jstring_chars(const char *v, const char *end) {
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

KBP_INTERNAL int kbpi_jstreq(const char *v, const char *end, const char *lit) {
  uint8_t buf[80];
  size_t l = strlen(lit);
  if (kbpi_jtype(v) != J_STRING || l >= sizeof buf) return 0;
  long n = kbpi_jdecode(v, end, buf, sizeof buf);
  return n == (long)l && memcmp(buf, lit, l) == 0;
}

/* The value of `key` in the object at obj (the last if the key repeats, as Python keeps it), or
 * NULL when obj is not an object or lacks the key. */
KBP_INTERNAL const char *kbpi_jget(const char *obj, const char *end, const char *key) {
  jcur it;
  const char *k, *v, *found = NULL;
  if (!kbpi_jopen(obj, end, '{', &it)) return NULL;
  while (kbpi_jobject_next(&it, &k, &v))
    if (kbpi_jstreq(k, end, key)) found = v;
  return found;
}

static int jis_integer_literal(const char *v, const char *end) {
  if (kbpi_jtype(v) != J_NUMBER || *v == 'N' || *v == 'I' || (v[0] == '-' && v + 1 < end && v[1] == 'I')) return 0;
  jcur c = {v, end, 0};
  if (jscan_number(&c)) return 0;
  for (const char *p = v; p < c.p; p++)
    if (*p == '.' || *p == 'e' || *p == 'E') return 0;
  return 1;
}

/* A JSON integer (Python int, not bool, not float) >= 0 that fits a u64. */
KBP_INTERNAL int kbpi_juint(const char *v, const char *end, uint64_t *out) {
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
KBP_INTERNAL int kbpi_jdouble(const char *v, const char *end, double *out) {
  if (kbpi_jtype(v) != J_NUMBER) return -1;
  jcur c = {v, end, 0};
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
KBP_INTERNAL int kbpi_jequals_count(const char *v, const char *end, uint64_t n) {
  uint64_t u;
  double d;
  switch (kbpi_jtype(v)) {
  case J_TRUE: return n == 1;
  case J_FALSE: return n == 0;
  case J_NUMBER:
    if (jis_integer_literal(v, end)) return kbpi_juint(v, end, &u) == 0 && u == n;
    return kbpi_jdouble(v, end, &d) == 0 && d == (double)n && n < ((uint64_t)1 << 53);
  default: return 0;
  }
}

/* A finite JSON number that is not a boolean (Python: int or float, not bool, math.isfinite). */
KBP_INTERNAL int kbpi_jfinite_number(const char *v, const char *end, double *out) {
  return kbpi_jtype(v) == J_NUMBER && kbpi_jdouble(v, end, out) == 0 && isfinite(*out);
}

/* Python's truthiness, for `x or {}`. */
KBP_INTERNAL int kbpi_jfalsy(const char *v, const char *end) {
  double d;
  switch (kbpi_jtype(v)) {
  case J_NONE: case J_NULL: case J_FALSE: return 1;
  case J_NUMBER: return kbpi_jdouble(v, end, &d) == 0 && d == 0;
  case J_STRING: return v[1] == '"';
  case J_OBJECT: case J_ARRAY: {
    jcur it;
    kbpi_jopen(v, end, *v, &it);
    return it.p < it.end && (*it.p == '}' || *it.p == ']');
  }
  default: return 0;
  }
}
