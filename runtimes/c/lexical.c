/* libkbpack, lexical.c: the lexical index and BM25 (FORMAT.md §2.4; Python: kbc/format/bm25.py).
 * Opening checks the manifest's `lexical` object and the offsets (LexicalIndex.__init__) and the
 * vocabulary order; each posting list is checked when a question uses it (postings_of), and all
 * of them by kbp_verify (check_all). The tokeniser kbc-lex-1 (steps 1-7) turns a question into
 * terms, and each term's postings add to every chunk's score, each step rounded in exactly the
 * order FORMAT.md gives. */
#include "kbpack_internal.h"

#define N_LEX 5
static const char *const LEX_ENCODINGS[N_LEX] = {"utf8", "u32le", "uleb128", "u32le", "u32le"};
/* 1.8: the two offset arrays may hold a 0 and then each term's length instead (the by-source layout
 * writes them so: lengths stay put when an earlier term changes, so an update's delta stays small) */
#define LEX_LENGTHS "u32le-lengths"
#define lex_offset(section, i) le((section) + 4 * (uint64_t)(i), 4)

/* Lengths summed into u32le offsets, in a buffer the bundle owns (Python: LexicalIndex._array). A
 * section of the wrong size is left to check_lex_offsets; a first entry other than 0, or lengths that
 * do not add up to `end` (or pass 2^32 - 1) are refused in its words. */
static kbp_status sum_lex_lengths(kbp_bundle *kb, int which, uint8_t **owned, const uint8_t **offsets, uint64_t entries,
                                  uint64_t end) {
  const section *s = &kb->sections[kb->known[which]];
  if (strcmp(s->encoding, LEX_LENGTHS) != 0 || s->length % 4 || s->length / 4 != entries) return KBP_OK;
  uint64_t n = s->length / 4, sum = 0;
  int ok = n > 0 && le(*offsets, 4) == 0 && end <= UINT32_MAX;
  for (uint64_t i = 0; ok && i < n; i++) ok = (sum += le(*offsets + 4 * i, 4)) <= end; /* u64: no wrap-around */
  if (!ok || sum != end) return kbpi_invalid(kb, s->name, "offsets do not rise from 0 to %llu", (unsigned long long)end);
  uint8_t *out = malloc((size_t)s->length);
  if (!out) return kbpi_out_of_memory(kb);
  sum = 0;
  for (uint64_t i = 0; i < n; i++) {
    sum += le(*offsets + 4 * i, 4);
    for (int k = 0; k < 4; k++) out[4 * i + k] = (uint8_t)(sum >> (8 * k));
  }
  free(*owned); /* an earlier open that failed after summing */
  *owned = out;
  *offsets = out;
  return KBP_OK;
}

static kbp_status check_lex_offsets(kbp_bundle *kb, int which, const uint8_t *p, uint64_t entries, uint64_t end) {
  const section *s = &kb->sections[kb->known[which]]; /* p: its bytes (SHA-256 checked by the caller), or their sums */
  if (s->length % 4 || s->length / 4 != entries)
    return kbpi_invalid(kb, s->name, "expected %llu u4 entries, found %llu bytes", (unsigned long long)entries, (unsigned long long)s->length);
  uint64_t prev = 0;
  for (uint64_t i = 0; i < entries; i++) {
    uint64_t v = lex_offset(p, i);
    if ((i == 0 && v != 0) || v < prev) return kbpi_invalid(kb, s->name, "offsets do not rise from 0 to %llu", (unsigned long long)end);
    prev = v;
  }
  if (prev != end) return kbpi_invalid(kb, s->name, "offsets do not rise from 0 to %llu", (unsigned long long)end);
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
  const char *tok = kbpi_jget(meta, end, "tokenizer");
  if (kbpi_jtype(tok) != J_OBJECT || !kbpi_jstreq(kbpi_jget(tok, end, "name"), end, "kbc-lex-1"))
    return kbpi_invalid(kb, "manifest", "lexical: unknown tokenizer (not kbc-lex-1)");
  const char *stem = kbpi_jget(tok, end, "stem"), *stop = kbpi_jget(tok, end, "stop_words");
  if (kbpi_jtype(stop) != J_TRUE && kbpi_jtype(stop) != J_FALSE) return kbpi_invalid(kb, "manifest", "lexical: malformed tokenizer options");
  x->stop_words = kbpi_jtype(stop) == J_TRUE;
  if (!stem || kbpi_jtype(stem) == J_NULL) x->stem = 0;
  else if (kbpi_jstreq(stem, end, "s-stemmer")) x->stem = 1;
  else if (kbpi_jstreq(stem, end, "snowball-english")) x->stem = 2;
  else return kbpi_invalid(kb, "manifest", "lexical: malformed tokenizer options");
  const char *k1 = kbpi_jget(meta, end, "k1"), *b = kbpi_jget(meta, end, "b"), *n = kbpi_jget(meta, end, "doc_count");
  const char *terms = kbpi_jget(meta, end, "terms"), *avg = kbpi_jget(meta, end, "avg_doc_length");
  if (!k1 || !b || !n || !terms || !avg) return kbpi_invalid(kb, "manifest", "lexical: missing or malformed field");
  if (!kbpi_jequals_count(kbpi_jget(meta, end, "version"), end, 1) || !kbpi_jstreq(kbpi_jget(meta, end, "scoring"), end, "bm25"))
    return kbpi_invalid(kb, "manifest", "lexical: version or scoring not supported (1, bm25)");
  if (!kbpi_jfinite_number(k1, end, &x->k1) || !kbpi_jfinite_number(b, end, &x->b) || !kbpi_jfinite_number(avg, end, &x->avg) ||
      !(x->k1 >= 0 && x->k1 <= 100 && x->b >= 0 && x->b <= 1 && x->avg >= 0))
    return kbpi_invalid(kb, "manifest", "lexical: k1, b or avg_doc_length out of range");
  if (kbpi_juint(n, end, &x->n) || kbpi_juint(terms, end, &x->terms) || x->n != kb->count)
    return kbpi_invalid(kb, "manifest", "lexical: doc_count disagrees with %llu chunks", (unsigned long long)kb->count);
  return KBP_OK;
}

static kbp_status open_lexical(kbp_bundle *kb) {
  lexical_index *x = &kb->lex;
  const uint8_t *bytes[N_LEX] = {NULL};
  kbp_status st;
  int present = 0;
  for (int i = 0; i < N_LEX; i++) present += kb->known[S_LEX_VOCAB + i] >= 0;
  if (!kb->m_lexical && !present) return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no lexical index");
  for (int i = 0; i < N_LEX; i++)
    if (kb->known[S_LEX_VOCAB + i] < 0)
      return kbpi_invalid(kb, kbpi_known_sections[S_LEX_VOCAB + i], "lexical index is incomplete: section missing");
  if (!kb->m_lexical) return kbpi_invalid(kb, "manifest", "lexical index is incomplete: no lexical object");
  for (int i = 0; i < N_LEX; i++) {
    const section *s = &kb->sections[kb->known[S_LEX_VOCAB + i]];
    if (strcmp(s->encoding, LEX_ENCODINGS[i]) != 0 && !((i == 1 || i == 3) && strcmp(s->encoding, LEX_LENGTHS) == 0))
      return kbpi_invalid(kb, s->name, "encoding '%s', expected '%s'", s->encoding, LEX_ENCODINGS[i]);
  }
  for (int i = 0; i < N_LEX; i++)
    if ((st = kbpi_section_bytes(kb, kb->known[S_LEX_VOCAB + i], &bytes[i])) != KBP_OK) return st;
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
    return kbpi_invalid(kb, "lex_vocab_offsets", "expected %llu u4 entries", (unsigned long long)x->terms + 1);
  if ((st = sum_lex_lengths(kb, S_LEX_VOCAB_OFFSETS, &x->summed[0], &x->vocab_offsets, x->terms + 1, x->vocab_len)) != KBP_OK ||
      (st = check_lex_offsets(kb, S_LEX_VOCAB_OFFSETS, x->vocab_offsets, x->terms + 1, x->vocab_len)) != KBP_OK)
    return st;
  if (x->terms >= kb->sections[kb->known[S_LEX_POSTINGS_OFFSETS]].length)
    return kbpi_invalid(kb, "lex_postings_offsets", "expected %llu u4 entries", (unsigned long long)x->terms + 1);
  if ((st = sum_lex_lengths(kb, S_LEX_POSTINGS_OFFSETS, &x->summed[1], &x->postings_offsets, x->terms + 1, x->postings_len)) != KBP_OK ||
      (st = check_lex_offsets(kb, S_LEX_POSTINGS_OFFSETS, x->postings_offsets, x->terms + 1, x->postings_len)) != KBP_OK)
    return st;
  if (kb->sections[kb->known[S_LEX_DOC_LENGTHS]].length != x->n * 4)
    return kbpi_invalid(kb, "lex_doc_lengths", "expected %llu u4 entries", (unsigned long long)x->n);
  /* binary search needs the vocabulary strictly ascending; cheap to check once */
  for (uint64_t t = 0; t < x->terms; t++) {
    size_t la = 0, lb;
    const uint8_t *tb = vocab_term(x, t, &lb), *ta = t ? vocab_term(x, t - 1, &la) : NULL;
    if (lb == 0) return kbpi_invalid(kb, "lex_vocab_offsets", "an empty term");
    if (ta && compare_bytes(ta, la, tb, lb) >= 0)
      return kbpi_invalid(kb, "lex_vocab", "term %llu is not in ascending byte order", (unsigned long long)t);
  }
  x->scores = calloc(x->n ? (size_t)x->n : 1, sizeof *x->scores);
  return x->scores ? KBP_OK : kbpi_out_of_memory(kb);
}

KBP_INTERNAL kbp_status kbpi_lexical_ready(kbp_bundle *kb) {
  if (kb->lexical_state == LOAD_READY) return KBP_OK;
  if (kb->lexical_state == LOAD_ABSENT) return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no lexical index");
  kbp_status st = open_lexical(kb);
  if (st == KBP_OK) kb->lexical_state = LOAD_READY;
  if (st == KBP_ERR_NOT_PRESENT) kb->lexical_state = LOAD_ABSENT;
  return st;
}

/* One unsigned LEB128 value of at most 5 bytes from p[*i..end). */
static kbp_status read_varint(kbp_bundle *kb, const uint8_t *p, uint64_t end, uint64_t *i, uint64_t *v, uint64_t term) {
  uint64_t x = 0;
  for (int k = 0; k < 5; k++) {
    if (*i >= end) return kbpi_invalid(kb, "lex_postings", "truncated varint (term %llu)", (unsigned long long)term);
    uint8_t byte = p[(*i)++];
    x |= (uint64_t)(byte & 0x7F) << (7 * k);
    if (!(byte & 0x80)) {
      *v = x;
      return KBP_OK;
    }
  }
  return kbpi_invalid(kb, "lex_postings", "varint longer than 5 bytes (term %llu)", (unsigned long long)term);
}

KBP_INTERNAL kbp_status kbpi_walk_postings(kbp_bundle *kb, uint64_t t, uint64_t *df, posting_visitor visit, void *ctx) {
  const lexical_index *x = &kb->lex;
  uint64_t a = lex_offset(x->postings_offsets, t), end = lex_offset(x->postings_offsets, t + 1), id = 0, gap = 0, tf = 0, n = 0;
  kbp_status st;
  if (a == end) return kbpi_invalid(kb, "lex_postings", "term %llu: a term without postings", (unsigned long long)t);
  while (a < end) {
    if ((st = read_varint(kb, x->postings, end, &a, &gap, t)) != KBP_OK || (st = read_varint(kb, x->postings, end, &a, &tf, t)) != KBP_OK)
      return st;
    if (n && gap == 0) return kbpi_invalid(kb, "lex_postings", "term %llu: chunk ids not increasing", (unsigned long long)t);
    if (gap >= x->n || id >= x->n - gap) /* the first gap is the id itself (id starts at 0) */
      return kbpi_invalid(kb, "lex_postings", "term %llu: chunk id out of range", (unsigned long long)t);
    if (tf == 0) return kbpi_invalid(kb, "lex_postings", "term %llu: term frequency 0", (unsigned long long)t);
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

/* Steps 1-3 over q[0, qn): decode (an invalid byte becomes U+FFFD, a separator), fold case, drop
 * thousands commas; at most `limit` code points. Returns the count; *out is malloc'd. */
static long code_points(const char *q, size_t qn, size_t limit, uint32_t **out) {
  size_t n = 0;
  size_t cap = qn < limit ? qn : limit;
  uint32_t *cp = malloc((cap + 1) * sizeof *cp);
  if (!cp) return -1;
  for (size_t i = 0; i < qn && n < cap;) {
    uint32_t c;
    size_t l = kbpi_utf8_next((const uint8_t *)q + i, qn - i, &c);
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

/* Steps 4-7 over folded code points: each token, in order, to `visit` until it returns nonzero. */
typedef int (*token_visitor)(void *ctx, const term *t);

static void each_token(const uint32_t *cp, long n, int stop_words, int stem, token_visitor visit, void *ctx) {
  for (long i = 0; i < n;) {
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
    for (size_t j = 0; j < len; j++) t.len += kbpi_utf8_put(tok[j], t.bytes + t.len);
    if (visit(ctx, &t)) return;
  }
}

typedef struct {
  term *out;
  long n;
} distinct_terms;

static int add_distinct(void *ctx, const term *t) {
  distinct_terms *d = ctx;
  int seen = 0;
  for (long j = 0; j < d->n && !seen; j++) seen = d->out[j].len == t->len && memcmp(d->out[j].bytes, t->bytes, t->len) == 0;
  if (!seen) d->out[d->n++] = *t;
  return d->n >= (long)MAX_QUERY_TERMS;
}

/* The question's distinct terms in order of first occurrence, at most MAX_QUERY_TERMS (steps 4-7). */
static long question_terms(const char *q, int stop_words, int stem, term *out) {
  uint32_t *cp;
  long n = code_points(q, strlen(q), MAX_QUESTION_CHARS, &cp);
  if (n < 0) return -1;
  distinct_terms d = {out, 0};
  each_token(cp, n, stop_words, stem, add_distinct, &d);
  free(cp);
  return d.n;
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
  const uint8_t *keep; /* a filter's chunks (FORMAT.md §2.10.2), or NULL for all */
} bm25_term;

/* score[id] += ((idf * tf) * (k1 + 1)) / (tf + k1 * ((1 - b) + (b * len) / avgdl)), each step
 * its own rounding, in exactly the order FORMAT.md gives. */
static void add_bm25(void *ctx, uint64_t id, uint64_t tf_count) {
  const bm25_term *bt = ctx;
  const lexical_index *x = bt->x;
  if (bt->keep && !bt->keep[id]) return; /* a posting of a chunk the filter leaves out */
  double tf = (double)tf_count;
  double len = (double)le(x->doc_lengths + 4 * id, 4);
  double lnorm = (x->b * len) / bt->avgdl;
  double norm = x->k1 * ((1.0 - x->b) + lnorm);
  double top = (bt->idf * tf) * (x->k1 + 1.0);
  double bottom = tf + norm;
  x->scores[id] += top / bottom;
}

/* ---- the context match (FORMAT.md §2.9; Python: kbc/search/fusion.py context_match) ---- */

typedef struct {
  term t;
  size_t i; /* its place in the question's order */
} indexed_term;

/* The question kbpi_score_lexical scored last: its terms in the vocabulary with the idf BM25 gave
 * them, kept for the context match of the same search (one allocation per handle, reused). */
struct context_query {
  indexed_term *sorted; /* the terms by bytes: a text's tokens are looked up here */
  double *idf;          /* each one's idf, in the question's (first-seen) order */
  char *found;          /* per term, in the question's order: seen in the text being read */
  size_t n;
  int stop_words, stem;
};

static int by_term_bytes(const void *pa, const void *pb) {
  const indexed_term *a = pa, *b = pb;
  return compare_bytes(a->t.bytes, a->t.len, b->t.bytes, b->t.len);
}

KBP_INTERNAL void kbpi_context_query_free(context_query *cq) {
  if (!cq) return;
  free(cq->idf);
  free(cq->sorted);
  free(cq->found);
  free(cq);
}

static context_query *scored_question(lexical_index *x) {
  if (!x->question) {
    context_query *cq = calloc(1, sizeof *cq);
    if (!cq) return NULL;
    cq->idf = malloc(MAX_QUERY_TERMS * sizeof *cq->idf);
    cq->sorted = malloc(MAX_QUERY_TERMS * sizeof *cq->sorted);
    cq->found = calloc(MAX_QUERY_TERMS, 1);
    if (!cq->idf || !cq->sorted || !cq->found) {
      kbpi_context_query_free(cq);
      return NULL;
    }
    x->question = cq;
  }
  x->question->n = 0;
  x->question->stop_words = x->stop_words;
  x->question->stem = x->stem;
  return x->question;
}

static int mark_found(void *ctx, const term *t) {
  context_query *cq = ctx;
  size_t lo = 0, hi = cq->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const indexed_term *m = &cq->sorted[mid];
    int c = compare_bytes(m->t.bytes, m->t.len, t->bytes, t->len);
    if (c == 0) {
      cq->found[m->i] = 1;
      return 0;
    }
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return 0;
}

KBP_INTERNAL kbp_status kbpi_context_sum(kbp_bundle *kb, context_query *cq, const uint8_t *text, size_t n, double *sum) {
  *sum = 0.0;
  if (cq->n == 0 || n == 0) return KBP_OK;
  uint32_t *cp;
  long m = code_points((const char *)text, n, MAX_CONTEXT_CHARS, &cp);
  if (m < 0) return kbpi_out_of_memory(kb);
  memset(cq->found, 0, cq->n);
  each_token(cp, m, cq->stop_words, cq->stem, mark_found, cq);
  free(cp);
  double acc = 0.0; /* in the question's order, as Python sums */
  for (size_t i = 0; i < cq->n; i++)
    if (cq->found[i]) acc += cq->idf[i];
  *sum = acc;
  return KBP_OK;
}

/* BM25 of every chunk for the question into kb->lex.scores; its terms in the vocabulary, with
 * their idf, into kb->lex.question (kbpi_scored_question). */
KBP_INTERNAL kbp_status kbpi_score_lexical(kbp_bundle *kb, const char *question, const uint8_t *keep) {
  lexical_index *x = &kb->lex;
  if (x->stem == 2) return kbpi_invalid(kb, "manifest", "lexical: stemmer snowball-english is not supported by this reader");
  context_query *scored = scored_question(x);
  if (!scored) return kbpi_out_of_memory(kb);
  memset(x->scores, 0, (size_t)x->n * sizeof *x->scores);
  if (x->n == 0) return KBP_OK;
  term *terms = malloc(MAX_QUERY_TERMS * sizeof *terms);
  if (!terms) return kbpi_out_of_memory(kb);
  long nt = question_terms(question, x->stop_words, x->stem, terms);
  if (nt < 0) {
    free(terms);
    return kbpi_out_of_memory(kb);
  }
  const double N = (double)x->n;
  bm25_term bt = {x, 0, x->avg > 0 ? x->avg : 1.0, keep};
  kbp_status st = KBP_OK;
  for (long i = 0; i < nt && st == KBP_OK; i++) {
    int64_t t = lookup_term(x, &terms[i]);
    uint64_t df;
    if (t < 0) continue;
    if ((st = kbpi_walk_postings(kb, (uint64_t)t, &df, NULL, NULL)) != KBP_OK) break; /* the whole list is valid first */
    double num = (N - (double)df) + 0.5, den = (double)df + 0.5;
    bt.idf = log(1.0 + num / den);
    scored->sorted[scored->n] = (indexed_term){terms[i], scored->n};
    scored->idf[scored->n++] = bt.idf;
    st = kbpi_walk_postings(kb, (uint64_t)t, &df, add_bm25, &bt);
  }
  free(terms);
  qsort(scored->sorted, scored->n, sizeof *scored->sorted, by_term_bytes);
  return st;
}

KBP_INTERNAL context_query *kbpi_scored_question(kbp_bundle *kb) { return kb->lex.question; }

/* The k best chunks with a score > 0; *out malloc'd, best first. */
KBP_INTERNAL kbp_status kbpi_lexical_top(kbp_bundle *kb, uint64_t k, scored **out, size_t *n) {
  const lexical_index *x = &kb->lex;
  top_k t = {NULL, 0, (size_t)(k < x->n ? k : x->n)};
  t.items = malloc((t.k ? t.k : 1) * sizeof *t.items);
  if (!t.items) return kbpi_out_of_memory(kb);
  for (uint64_t id = 0; id < x->n; id++)
    if (x->scores[id] > 0 && !(t.n == t.k && !(x->scores[id] > t.items[0].score))) kbpi_top_k_offer(&t, x->scores[id], id);
  kbpi_top_k_sort(&t);
  *out = t.items;
  *n = t.n;
  return KBP_OK;
}

