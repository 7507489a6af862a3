/* libkbpack, attributes.c: document attributes and filters (FORMAT.md §2.10; Python:
 * kbc/format/attributes.py AttributeTable, kbc/format/filters.py). The manifest's `attributes`
 * object gives the keys and their types; the `attributes` section holds one row per run of chunks
 * ([first_chunk, source, values...]). Both are checked whole, in the Python reader's order, before
 * a filter reads them (kbp_verify checks them too), so both readers refuse the same bundles.
 * kbp_filter_compile parses conditions exactly as filters.py does and turns them into the chunks a
 * search may return; dense.c, lexical.c, search.c and pages.c search inside them. */
#include "kbpack_internal.h"

#define MAX_INTEGER_DIGITS 16 /* a condition's integer: -?[0-9]{1,16} */
static const int64_t MAX_ATTRIBUTE_INTEGER = ((int64_t)1 << 53) - 1;
static const char *const type_names[] = {"string", "list", "integer", "date"};

struct kbp_filter {
  const kbp_bundle *kb;
  uint64_t count, matched;
  uint8_t *keep; /* one byte per chunk: 1 when the filter keeps it */
  uint64_t *ids; /* the kept chunk ids, increasing */
};

/* ---- values */

/* A JSON integer literal (no fraction, exponent, NaN or Infinity) within ±(2^53 - 1), as Python's
 * is_integer reads json.loads' int (a bool is no number here: J_TRUE/J_FALSE never reach this). */
static int json_integer(const char *v, const char *end, int64_t *out) {
  if (kbpi_jtype(v) != J_NUMBER) return 0;
  const char *p = v;
  int negative = p < end && *p == '-';
  if (negative) p++;
  int64_t x = 0;
  int digits = 0;
  for (; p < end && *p >= '0' && *p <= '9'; p++) {
    if (++digits > MAX_INTEGER_DIGITS) return 0; /* JSON has no leading zeros: 17 digits exceed 2^53 */
    x = x * 10 + (*p - '0');
  }
  if (!digits || (p < end && (*p == '.' || *p == 'e' || *p == 'E' || *p == 'I' || *p == 'N'))) return 0;
  if (x > MAX_ATTRIBUTE_INTEGER) return 0;
  *out = negative ? -x : x;
  return 1;
}

static int leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* YYYY-MM-DD, a real day of years 0001..9999 (Python: valid_date). */
static int valid_date(const uint8_t *s, size_t n) {
  static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (n != 10 || s[4] != '-' || s[7] != '-') return 0;
  for (size_t i = 0; i < 10; i++)
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9')) return 0;
  int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
  int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
  if (y < 1 || m < 1 || m > 12 || d < 1) return 0;
  return d <= days[m - 1] + (m == 2 && leap(y));
}

/* The JSON string at v decoded into buf (cap bytes); -1 when it does not fit. */
static long decode_small(const char *v, const char *end, uint8_t *buf, size_t cap) {
  if (kbpi_jtype(v) != J_STRING || kbpi_jdecoded_bound(v, end) > cap + 2 + 6 * cap) return -1;
  return kbpi_jdecode(v, end, buf, cap);
}

static int json_date(const char *v, const char *end) {
  uint8_t buf[16];
  long n = decode_small(v, end, buf, sizeof buf);
  return n >= 0 && valid_date(buf, (size_t)n);
}

static int short_string(const char *v, const char *end) {
  return kbpi_jtype(v) == J_STRING && kbpi_jstring_chars(v, end) <= MAX_ATTRIBUTE_CHARS;
}

static int value_ok(attr_type t, const char *v, const char *end) {
  int64_t i;
  jcur it;
  const char *item;
  size_t n = 0;
  switch (t) {
  case ATTR_STRING: return short_string(v, end);
  case ATTR_INTEGER: return json_integer(v, end, &i);
  case ATTR_DATE: return json_date(v, end);
  case ATTR_LIST:
    if (!kbpi_jopen(v, end, '[', &it)) return 0;
    while (kbpi_jarray_next(&it, &item))
      if (++n > MAX_ATTRIBUTE_LIST || !short_string(item, end)) return 0;
    return 1;
  }
  return 0;
}

/* ---- the table */

static int key_name_ok(const uint8_t *s, long n) {
  if (n < 1 || n > (long)MAX_ATTRIBUTE_KEY_CHARS) return 0;
  for (long i = 0; i < n; i++) {
    uint8_t c = s[i];
    int letter = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
    if (!(letter || (i > 0 && ((c >= '0' && c <= '9') || c == '.' || c == '-')))) return 0;
  }
  return !(n == 4 && memcmp(s, "path", 4) == 0); /* reserved for path:GLOB */
}

static kbp_status read_keys(kbp_bundle *kb, const char *meta) {
  const char *end = kb->manifest_end, *v, *keys;
  attribute_table *a = &kb->attrs;
  uint64_t version;
  if (kbpi_jtype(meta) != J_OBJECT) return kbpi_invalid(kb, "manifest", "attributes: not an object");
  if (!(v = kbpi_jget(meta, end, "version")) || kbpi_juint(v, end, &version) || version != 1)
    return kbpi_invalid(kb, "manifest", "attributes: version must be 1");
  if (!kbpi_jstreq(kbpi_jget(meta, end, "section"), end, "attributes"))
    return kbpi_invalid(kb, "manifest", "attributes: section must be \"attributes\"");
  keys = kbpi_jget(meta, end, "keys");
  jcur it;
  const char *key;
  size_t n = 0;
  if (kbpi_jopen(keys, end, '[', &it))
    while (kbpi_jarray_next(&it, &key)) n++;
  if (!kbpi_jopen(keys, end, '[', &it) || n > MAX_ATTRIBUTE_KEYS)
    return kbpi_invalid(kb, "manifest", "attributes: keys must be a list of at most %u objects", MAX_ATTRIBUTE_KEYS);
  a->n_keys = 0;
  for (size_t i = 0; kbpi_jarray_next(&it, &key); i++) {
    if (kbpi_jtype(key) != J_OBJECT) return kbpi_invalid(kb, "manifest", "attributes: key %zu is not an object", i);
    const char *name = kbpi_jget(key, end, "name"), *type = kbpi_jget(key, end, "type");
    uint8_t buf[MAX_ATTRIBUTE_KEY_CHARS + 1];
    long len = name ? decode_small(name, end, buf, sizeof buf) : -1;
    if (len < 0 || !key_name_ok(buf, len))
      return kbpi_invalid(kb, "manifest", "attributes: key %zu: name must match [A-Za-z_][A-Za-z0-9_.-]* (at most %u "
                          "characters, not path)", i, MAX_ATTRIBUTE_KEY_CHARS);
    memcpy(a->names[a->n_keys], buf, (size_t)len);
    a->names[a->n_keys][len] = '\0';
    for (size_t j = 0; j < a->n_keys; j++)
      if (strcmp(a->names[j], a->names[a->n_keys]) == 0)
        return kbpi_invalid(kb, "manifest", "attributes: key %zu: %s appears twice", i, a->names[j]);
    int t = -1;
    for (int k = 0; k < 4; k++)
      if (type && kbpi_jstreq(type, end, type_names[k])) t = k;
    if (t < 0) return kbpi_invalid(kb, "manifest", "attributes: key %s: type must be string, list, integer or date", a->names[a->n_keys]);
    a->types[a->n_keys++] = (attr_type)t;
  }
  return KBP_OK;
}

static kbp_status read_rows(kbp_bundle *kb, const uint8_t *bytes, uint64_t len) {
  attribute_table *a = &kb->attrs;
  const char *root, *text = (const char *)bytes, *end = text + len, *rows, *row;
  if (len > MAX_JSON_SECTION_BYTES)
    return kbpi_invalid(kb, "attributes", "%llu bytes exceeds the %llu-byte limit", (unsigned long long)len,
                        (unsigned long long)MAX_JSON_SECTION_BYTES);
  if (kbpi_json_check(text, len, &root)) return kbpi_invalid(kb, "attributes", "not valid JSON");
  jcur it;
  if (kbpi_jtype(root) != J_OBJECT || kbpi_jtype(rows = kbpi_jget(root, end, "rows")) != J_ARRAY)
    return kbpi_invalid(kb, "attributes", "not an object with a rows list");
  size_t n = 0;
  kbpi_jopen(rows, end, '[', &it);
  while (kbpi_jarray_next(&it, &row)) n++;
  if (n > kb->count || (kb->count && !n))
    return kbpi_invalid(kb, "attributes", "%zu rows for %llu chunks (1 to %llu needed)", n, (unsigned long long)kb->count,
                        (unsigned long long)kb->count);
  a->firsts = malloc((n ? n : 1) * sizeof *a->firsts);
  a->sources = malloc((n ? n : 1) * sizeof *a->sources);
  a->rows = malloc((n ? n : 1) * sizeof *a->rows);
  if (!a->firsts || !a->sources || !a->rows) return kbpi_out_of_memory(kb);
  size_t width = 2 + a->n_keys;
  int64_t previous = -1;
  kbpi_jopen(rows, end, '[', &it);
  for (size_t r = 0; kbpi_jarray_next(&it, &row); r++) {
    jcur cells;
    const char *cell[2 + MAX_ATTRIBUTE_KEYS], *v;
    size_t m = 0;
    int shaped = kbpi_jopen(row, end, '[', &cells);
    while (shaped && kbpi_jarray_next(&cells, &v)) {
      if (m < width) cell[m] = v;
      m++;
    }
    if (!shaped || m != width) return kbpi_invalid(kb, "attributes", "row %zu is not an array of %zu values", r, width);
    int64_t first, source;
    if (!json_integer(cell[0], end, &first) || first <= previous || (uint64_t)first >= kb->count || (r == 0 && first != 0))
      return kbpi_invalid(kb, "attributes", "row %zu: first chunk must increase from 0 and stay below %llu", r,
                          (unsigned long long)kb->count);
    if (!json_integer(cell[1], end, &source) || source < 0 || (uint64_t)source >= kb->n_sources)
      return kbpi_invalid(kb, "attributes", "row %zu: source must be an index into the %zu sources", r, kb->n_sources);
    for (size_t k = 0; k < a->n_keys; k++)
      if (kbpi_jtype(cell[2 + k]) != J_NULL && !value_ok(a->types[k], cell[2 + k], end))
        return kbpi_invalid(kb, "attributes", "row %zu: value of %s is not a %s within the bounds", r, a->names[k],
                            type_names[a->types[k]]);
    previous = first;
    a->firsts[r] = (uint64_t)first;
    a->sources[r] = (uint64_t)source;
    a->rows[r] = row;
  }
  a->n_rows = n;
  a->end = end;
  return KBP_OK;
}

/* The table, checked whole on first use (Python: Bundle.attributes). KBP_ERR_NOT_PRESENT for a
 * bundle without attributes. */
KBP_INTERNAL kbp_status kbpi_attributes_ready(kbp_bundle *kb) {
  if (kb->attributes_state == LOAD_READY) return KBP_OK;
  if (kb->attributes_state == LOAD_ABSENT) return KBP_ERR_NOT_PRESENT;
  const char *meta = kbpi_jget(kb->manifest_root, kb->manifest_end, "attributes");
  int idx = kb->known[S_ATTRIBUTES];
  if (meta && kbpi_jtype(meta) == J_NULL) meta = NULL; /* Python's manifest.get: null is absent */
  if (!meta && idx < 0) {
    kb->attributes_state = LOAD_ABSENT;
    return KBP_ERR_NOT_PRESENT;
  }
  if (!meta) return kbpi_invalid(kb, "attributes", "present although the manifest has no attributes object");
  kbp_status st = read_keys(kb, meta);
  if (st != KBP_OK) return st;
  if (idx < 0) return kbpi_invalid(kb, "attributes", "missing although the manifest names it");
  if (strcmp(kb->sections[idx].encoding, "json") != 0)
    return kbpi_invalid(kb, "attributes", "encoding '%s', expected 'json'", kb->sections[idx].encoding);
  if (kb->sections[idx].length > MAX_JSON_SECTION_BYTES)
    return kbpi_invalid(kb, "attributes", "%llu bytes exceeds the JSON section limit", (unsigned long long)kb->sections[idx].length);
  const uint8_t *bytes;
  if ((st = kbpi_section_bytes(kb, idx, &bytes)) != KBP_OK) return st;
  free(kb->attrs.firsts);
  free(kb->attrs.sources);
  free((void *)kb->attrs.rows);
  kb->attrs.firsts = kb->attrs.sources = NULL;
  kb->attrs.rows = NULL;
  if ((st = read_rows(kb, bytes, kb->sections[idx].length)) != KBP_OK) return st;
  kb->attributes_state = LOAD_READY;
  return KBP_OK;
}

KBP_INTERNAL void kbpi_attributes_free(kbp_bundle *kb) {
  free(kb->attrs.firsts);
  free(kb->attrs.sources);
  free((void *)kb->attrs.rows);
}

kbp_status kbp_attribute_count(kbp_bundle *kb, size_t *n) {
  if (!kb || !n) return kb ? kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_attribute_count: n must not be NULL") : KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  *n = 0;
  kbp_status st = kbpi_attributes_ready(kb);
  if (st == KBP_ERR_NOT_PRESENT)
    return kbpi_fail(kb, st, "", "no attributes in this bundle (built before format 1.7)");
  if (st == KBP_OK) *n = kb->attrs.n_keys;
  return st;
}

kbp_status kbp_attribute_key(kbp_bundle *kb, size_t i, const char **name, const char **type) {
  size_t n;
  kbp_status st = kbp_attribute_count(kb, &n);
  if (st != KBP_OK) return st;
  if (i >= n) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "attribute key %zu out of range 0..%zu", i, n);
  if (name) *name = kb->attrs.names[i];
  if (type) *type = type_names[kb->attrs.types[i]];
  return KBP_OK;
}

/* ---- globs (FORMAT.md §2.10.1; Python: glob_match) */

static size_t cp_len(const uint8_t *s, size_t n) { /* bytes of the code point at s (valid UTF-8, or a surrogate's 3) */
  size_t l = (s[0] & 0x80) == 0 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : 4;
  return l > n ? n : l;
}

/* One segment: `*` any run, `?` one code point, the rest literal. The greedy match with one
 * backtrack point, as Python's _segment_match, stepping by code points. */
static int segment_match(const uint8_t *p, size_t pn, const uint8_t *t, size_t tn) {
  size_t pi = 0, ti = 0, star = (size_t)-1, mark = 0;
  while (ti < tn) {
    size_t tl = cp_len(t + ti, tn - ti);
    if (pi < pn && p[pi] != '*') {
      size_t pl = cp_len(p + pi, pn - pi);
      if ((pl == 1 && p[pi] == '?') || (pl == tl && memcmp(p + pi, t + ti, pl) == 0)) {
        pi += pl;
        ti += tl;
        continue;
      }
    } else if (pi < pn) { /* '*' */
      star = pi++;
      mark = ti;
      continue;
    }
    if (star == (size_t)-1) return 0;
    pi = star + 1;
    mark += cp_len(t + mark, tn - mark);
    ti = mark;
  }
  while (pi < pn && p[pi] == '*') pi++;
  return pi == pn;
}

typedef struct {
  const uint8_t *s;
  size_t n;
} span;

static size_t split_segments(const uint8_t *s, size_t n, span *out, size_t cap) {
  size_t k = 0, start = 0;
  for (size_t i = 0; i <= n; i++)
    if (i == n || s[i] == '/') {
      if (k < cap) out[k] = (span){s + start, i - start};
      k++;
      start = i + 1;
    }
  return k;
}

static int is_globstar(span s) { return s.n == 2 && s.s[0] == '*' && s.s[1] == '*'; }

/* Segments of the glob against those of the path: `**` matches zero or more whole segments. */
static int glob_match(const span *pat, size_t np, const span *seg, size_t ns) {
  size_t p = 0, s = 0, star = (size_t)-1, mark = 0;
  while (s < ns) {
    if (p < np && !is_globstar(pat[p]) && segment_match(pat[p].s, pat[p].n, seg[s].s, seg[s].n)) {
      p++;
      s++;
    } else if (p < np && is_globstar(pat[p])) {
      star = p++;
      mark = s;
    } else if (star != (size_t)-1) {
      p = star + 1;
      s = ++mark;
    } else {
      return 0;
    }
  }
  while (p < np && is_globstar(pat[p])) p++;
  return p == np;
}

/* ---- conditions */

typedef enum { OP_GLOB, OP_EQ, OP_GE, OP_LE, OP_GT, OP_LT } filter_op;

typedef struct {
  filter_op op;
  size_t key;          /* column, for every op but OP_GLOB */
  const char *text;    /* the condition as given */
  char *values;        /* the values (or the glob), NUL-separated, owned */
  size_t n_values;
  size_t *offsets, *lengths;
  int64_t integers[1]; /* integer keys: each value as a number (n_values of them, allocated past) */
} condition;

static int is_space(char c) { return c == ' ' || c == '\t'; }

static void strip(const char **s, const char **e) {
  while (*s < *e && is_space(**s)) (*s)++;
  while (*e > *s && is_space((*e)[-1])) (*e)--;
}

static int parse_integer(const char *s, size_t n, int64_t *out) {
  size_t i = n && s[0] == '-';
  if (n - i < 1 || n - i > MAX_INTEGER_DIGITS) return 0;
  int64_t x = 0;
  for (size_t j = i; j < n; j++) {
    if (s[j] < '0' || s[j] > '9') return 0;
    x = x * 10 + (s[j] - '0');
  }
  if (x > MAX_ATTRIBUTE_INTEGER) return 0;
  *out = i ? -x : x;
  return 1;
}

/* The bundle's keys, sorted, comma-separated, for a refusal (Python: _keys_line). */
static void keys_line(const attribute_table *a, char *out, size_t cap) {
  const char *sorted[MAX_ATTRIBUTE_KEYS];
  for (size_t i = 0; i < a->n_keys; i++) sorted[i] = a->names[i];
  for (size_t i = 1; i < a->n_keys; i++) /* insertion sort: at most 64 names */
    for (size_t j = i; j > 0 && strcmp(sorted[j - 1], sorted[j]) > 0; j--) {
      const char *t = sorted[j];
      sorted[j] = sorted[j - 1];
      sorted[j - 1] = t;
    }
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < a->n_keys && used + 1 < cap; i++)
    used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? ", " : "", sorted[i]);
  if (!a->n_keys) snprintf(out, cap, "none");
}

#define REFUSE(...) do { kbpi_fail(kb, KBP_ERR_ARGUMENT, "", __VA_ARGS__); goto refused; } while (0)

static kbp_status parse_condition(kbp_bundle *kb, const char *text, condition **out) {
  const attribute_table *a = &kb->attrs;
  size_t len = strlen(text);
  condition *c = NULL;
  char keys[1024];
  if (!kbpi_utf8_valid((const uint8_t *)text, len)) REFUSE("'%.80s': not valid UTF-8", text);
  const char *s = text, *e = text + len;
  strip(&s, &e);
  filter_op op;
  const char *key_s = NULL, *key_e = NULL, *val_s, *val_e = e;
  if ((size_t)(e - s) >= 5 && memcmp(s, "path:", 5) == 0) {
    op = OP_GLOB;
    val_s = s + 5;
    strip(&val_s, &val_e);
    if (val_s == val_e || (size_t)(val_e - val_s) > MAX_GLOB_BYTES)
      REFUSE("'%.80s': a path glob must be 1 to %u bytes", text, MAX_GLOB_BYTES);
  } else {
    const char *at = s;
    while (at < e && *at != '<' && *at != '>' && *at != '=') at++;
    if (at == e)
      REFUSE("'%.80s' is not a condition: expected path:GLOB, key=value, key=v1,v2, key>=N, key<=N, key>N or key<N", text);
    size_t ol = 1;
    if (at + 1 < e && at[1] == '=' && (*at == '<' || *at == '>')) ol = 2;
    op = ol == 2 ? (*at == '>' ? OP_GE : OP_LE) : *at == '=' ? OP_EQ : *at == '>' ? OP_GT : OP_LT;
    key_s = s;
    key_e = at;
    strip(&key_s, &key_e);
    val_s = at + ol;
    static const char *const names[] = {"", "=", ">=", "<=", ">", "<"};
    if (key_s == key_e)
      REFUSE("'%.80s': no attribute before %s: expected path:GLOB, key=value, key=v1,v2, key>=N, key<=N, key>N or key<N",
             text, names[op]);
  }
  /* the values, split at ',' and stripped, into one owned buffer */
  size_t n_values = 1;
  if (op != OP_GLOB)
    for (const char *p = val_s; p < val_e; p++) n_values += *p == ',';
  size_t size = sizeof *c + n_values * sizeof c->integers[0];
  c = calloc(1, size);
  if (c) {
    c->values = malloc((size_t)(val_e - val_s) + 1);
    c->offsets = malloc(n_values * sizeof *c->offsets);
    c->lengths = malloc(n_values * sizeof *c->lengths);
  }
  if (!c || !c->values || !c->offsets || !c->lengths) {
    if (c) { free(c->values); free(c->offsets); free(c->lengths); free(c); }
    return kbpi_out_of_memory(kb);
  }
  c->op = op;
  c->text = text;
  size_t used = 0;
  for (const char *p = val_s; c->n_values < n_values; p++) {
    const char *q = p;
    while (q < val_e && (op == OP_GLOB || *q != ',')) q++;
    const char *vs = p, *ve = q;
    strip(&vs, &ve);
    c->offsets[c->n_values] = used;
    c->lengths[c->n_values++] = (size_t)(ve - vs);
    memcpy(c->values + used, vs, (size_t)(ve - vs));
    used += (size_t)(ve - vs);
    p = q;
  }
  if (op == OP_GLOB) {
    *out = c;
    return KBP_OK;
  }
  /* the key */
  size_t kl = (size_t)(key_e - key_s), k;
  for (k = 0; k < a->n_keys; k++)
    if (strlen(a->names[k]) == kl && memcmp(a->names[k], key_s, kl) == 0) break;
  if (k == a->n_keys) {
    keys_line(a, keys, sizeof keys);
    REFUSE("unknown attribute '%.*s' in '%.80s'; this bundle has: %s", (int)(kl > 80 ? 80 : kl), key_s, text, keys);
  }
  c->key = k;
  const char *name = a->names[k];
  static const char *const op_names[] = {"", "=", ">=", "<=", ">", "<"};
  for (size_t i = 0; i < c->n_values; i++)
    if (!c->lengths[i]) REFUSE("'%.80s': an empty value for %s", text, name);
  if (op != OP_EQ && c->n_values > 1) REFUSE("'%.80s': %s takes one value", text, op_names[op]);
  attr_type t = a->types[k];
  if ((t == ATTR_STRING || t == ATTR_LIST) && op != OP_EQ)
    REFUSE("'%.80s': %s is a %s; only = applies (%s=v or %s=v1,v2)", text, name, type_names[t], name, name);
  for (size_t i = 0; i < c->n_values; i++) {
    const char *v = c->values + c->offsets[i];
    if (t == ATTR_INTEGER && !parse_integer(v, c->lengths[i], &c->integers[i]))
      REFUSE("'%.80s': %s is an integer; '%.*s' is not one (at most 16 digits)", text, name,
             (int)(c->lengths[i] > 40 ? 40 : c->lengths[i]), v);
    if (t == ATTR_DATE && !valid_date((const uint8_t *)v, c->lengths[i]))
      REFUSE("'%.80s': %s is a date; '%.*s' is not a YYYY-MM-DD date", text, name,
             (int)(c->lengths[i] > 40 ? 40 : c->lengths[i]), v);
  }
  *out = c;
  return KBP_OK;
refused:
  if (c) { free(c->values); free(c->offsets); free(c->lengths); free(c); }
  return KBP_ERR_ARGUMENT;
}

static void condition_free(condition *c) {
  if (!c) return;
  free(c->values);
  free(c->offsets);
  free(c->lengths);
  free(c);
}

static int compare(filter_op op, int c) {
  return op == OP_GE ? c >= 0 : op == OP_LE ? c <= 0 : op == OP_GT ? c > 0 : c < 0;
}

/* The condition against one row's value v (JSON, or null). */
static int row_matches(const condition *c, attr_type t, const char *v, const char *end) {
  uint8_t buf[4 * MAX_ATTRIBUTE_CHARS + 4];
  jkind kind = kbpi_jtype(v);
  if (kind == J_NULL) return 0;
  if (t == ATTR_INTEGER) {
    int64_t x;
    json_integer(v, end, &x); /* checked when the table was read */
    for (size_t i = 0; i < c->n_values; i++) {
      int64_t y = c->integers[i];
      int cmp = x < y ? -1 : x > y;
      if (c->op == OP_EQ ? cmp == 0 : compare(c->op, cmp)) return 1;
    }
    return 0;
  }
  if (t == ATTR_LIST) {
    jcur it;
    const char *item;
    kbpi_jopen(v, end, '[', &it);
    while (kbpi_jarray_next(&it, &item)) {
      long n = kbpi_jdecode(item, end, buf, sizeof buf);
      for (size_t i = 0; n >= 0 && i < c->n_values; i++)
        if ((size_t)n == c->lengths[i] && memcmp(buf, c->values + c->offsets[i], (size_t)n) == 0) return 1;
    }
    return 0;
  }
  long n = kbpi_jdecode(v, end, buf, sizeof buf); /* string or date */
  if (n < 0) return 0;
  if (c->op == OP_EQ) {
    for (size_t i = 0; i < c->n_values; i++)
      if ((size_t)n == c->lengths[i] && memcmp(buf, c->values + c->offsets[i], (size_t)n) == 0) return 1;
    return 0;
  }
  int cmp = memcmp(buf, c->values, 10); /* dates: both YYYY-MM-DD, so byte order is time order */
  return compare(c->op, cmp);
}

/* The row's value of column k. */
static const char *row_value(const char *row, const char *end, size_t k) {
  jcur it;
  const char *v = NULL;
  kbpi_jopen(row, end, '[', &it);
  for (size_t i = 0; i < k + 3 && kbpi_jarray_next(&it, &v); i++)
    if (i == k + 2) return v;
  return NULL;
}

/* 1 when source src's path matches the glob (a path over MAX_MATCHED_PATH_BYTES matches none). */
static kbp_status source_matches(kbp_bundle *kb, const condition *c, uint64_t src, int *hit) {
  static uint8_t unused;
  (void)unused;
  *hit = 0;
  const char *v = kb->source_paths[src];
  uint8_t *path = malloc(MAX_MATCHED_PATH_BYTES + 1);
  span *pat = NULL, *seg = NULL;
  if (!path) return kbpi_out_of_memory(kb);
  long n = kbpi_jdecode(v, kb->manifest_end, path, MAX_MATCHED_PATH_BYTES);
  if (n >= 0) {
    const uint8_t *g = (const uint8_t *)c->values;
    size_t gl = c->lengths[0];
    size_t np = split_segments(g, gl, NULL, 0), ns = split_segments(path, (size_t)n, NULL, 0);
    pat = malloc(np * sizeof *pat);
    seg = malloc(ns * sizeof *seg);
    if (!pat || !seg) {
      free(path); free(pat); free(seg);
      return kbpi_out_of_memory(kb);
    }
    split_segments(g, gl, pat, np);
    split_segments(path, (size_t)n, seg, ns);
    *hit = glob_match(pat, np, seg, ns);
  }
  free(path);
  free(pat);
  free(seg);
  return KBP_OK;
}

kbp_status kbp_filter_compile(kbp_bundle *kb, const char *const *conditions, size_t n, kbp_filter **out) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  if (!out || (n && !conditions)) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_filter_compile: out and conditions must not be NULL");
  *out = NULL;
  kbp_status st = kbpi_attributes_ready(kb);
  if (st != KBP_OK && st != KBP_ERR_NOT_PRESENT) return st;
  int absent = st == KBP_ERR_NOT_PRESENT; /* refused below, condition by condition, as Python refuses it */
  st = KBP_OK;
  kbpi_clear_error(&kb->err);
  if (!n) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "an empty filter: give at least one condition");
  if (n > MAX_FILTER_CONDITIONS) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "%zu conditions: at most %u", n, MAX_FILTER_CONDITIONS);
  for (size_t i = 0; i < n; i++)
    if (!conditions[i]) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "condition %zu is NULL", i);
  condition *conds[MAX_FILTER_CONDITIONS] = {0};
  const attribute_table *a = &kb->attrs;
  kbp_filter *f = NULL;
  uint8_t *keep_row = NULL;
  signed char *by_source = NULL;
  for (size_t i = 0; i < n && st == KBP_OK; i++) {
    if (!kbpi_utf8_valid((const uint8_t *)conditions[i], strlen(conditions[i])))
      st = kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "'%.80s': not valid UTF-8", conditions[i]);
    else if (absent)
      st = kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "no attributes in this bundle (built before format 1.7): cannot apply '%.80s'",
                     conditions[i]);
    else
      st = parse_condition(kb, conditions[i], &conds[i]);
  }
  if (st == KBP_OK) {
    f = calloc(1, sizeof *f);
    keep_row = malloc(a->n_rows ? a->n_rows : 1);
    by_source = malloc(kb->n_sources ? kb->n_sources : 1);
    if (f) {
      f->keep = calloc(kb->count ? kb->count : 1, 1);
      f->ids = NULL;
    }
    if (!f || !keep_row || !by_source || !f->keep) st = kbpi_out_of_memory(kb);
  }
  if (st == KBP_OK) {
    memset(keep_row, 1, a->n_rows);
    for (size_t i = 0; i < n && st == KBP_OK; i++) {
      const condition *c = conds[i];
      if (c->op == OP_GLOB) memset(by_source, -1, kb->n_sources);
      for (size_t r = 0; r < a->n_rows && st == KBP_OK; r++) {
        if (!keep_row[r]) continue;
        if (c->op == OP_GLOB) {
          uint64_t src = a->sources[r];
          if (by_source[src] < 0) {
            int hit;
            st = source_matches(kb, c, src, &hit);
            by_source[src] = (signed char)hit;
          }
          keep_row[r] = by_source[src] == 1;
        } else {
          keep_row[r] = (uint8_t)row_matches(c, a->types[c->key], row_value(a->rows[r], a->end, c->key), a->end);
        }
      }
    }
  }
  if (st == KBP_OK) {
    for (size_t r = 0; r < a->n_rows; r++) {
      uint64_t stop = r + 1 < a->n_rows ? a->firsts[r + 1] : kb->count;
      if (keep_row[r]) {
        memset(f->keep + a->firsts[r], 1, (size_t)(stop - a->firsts[r]));
        f->matched += stop - a->firsts[r];
      }
    }
    f->ids = malloc((f->matched ? f->matched : 1) * sizeof *f->ids);
    if (!f->ids) st = kbpi_out_of_memory(kb);
  }
  if (st == KBP_OK) {
    size_t m = 0;
    for (uint64_t i = 0; i < kb->count; i++)
      if (f->keep[i]) f->ids[m++] = i;
    f->kb = kb;
    f->count = kb->count;
    *out = f;
    f = NULL;
  }
  for (size_t i = 0; i < n && i < MAX_FILTER_CONDITIONS; i++) condition_free(conds[i]);
  free(keep_row);
  free(by_source);
  kbp_filter_free(f);
  return st;
}

uint64_t kbp_filter_matched(const kbp_filter *f) { return f ? f->matched : 0; }

int kbp_filter_keeps(const kbp_filter *f, uint64_t id) { return f && id < f->count && f->keep[id]; }

void kbp_filter_free(kbp_filter *f) {
  if (!f) return;
  free(f->keep);
  free(f->ids);
  free(f);
}

KBP_INTERNAL kbp_status kbpi_check_filter(kbp_bundle *kb, const kbp_filter *f) {
  if (f && (f->kb != kb || f->count != kb->count))
    return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "the filter was compiled for another bundle handle");
  return KBP_OK;
}

KBP_INTERNAL const uint8_t *kbpi_filter_keep(const kbp_filter *f) { return f ? f->keep : NULL; }
KBP_INTERNAL const uint64_t *kbpi_filter_ids(const kbp_filter *f, uint64_t *m) {
  *m = f ? f->matched : 0;
  return f ? f->ids : NULL;
}
