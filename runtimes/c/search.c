/* libkbpack, search.c: retrieval settings and kbp_search (FORMAT.md §2.5; Python:
 * kbc/format/retrieval.py RetrievalSettings, kbc/search/fusion.py fuse, Retriever.search). The manifest's `retrieval` object
 * gives the default mode, the fusion (tmm, minmax or rrf) with its weight and depth, and the
 * page settings (read here, used by pages.c). kbp_resolve_mode says which mode a request gets;
 * kbp_search runs it: dense (dense.c), lexical (lexical.c), or hybrid, which fuses both lists
 * here. */
#include "kbpack_internal.h"

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
  rs->path_weight = 0.0; /* absent (before 1.6): no context match */
  rs->heading_weight = 0.0;
  rs->standout_weighting = 0; /* absent (before 1.8): the fixed weight, the ranking of 1.7 */
  rs->has_min_strength = 0; /* absent (before 1.8): no answer-strength threshold */
  rs->min_strength = 0.0;
  if (!r) return KBP_OK;
  const char *mode = kbpi_jget(r, end, "default_mode"), *fusion = kbpi_jget(r, end, "fusion"), *weight = kbpi_jget(r, end, "weight");
  const char *depth = kbpi_jget(r, end, "depth"), *rrf_k = kbpi_jget(r, end, "rrf_k");
  if (mode) {
    if (kbpi_jstreq(mode, end, "dense")) rs->default_mode = KBP_MODE_DENSE;
    else if (kbpi_jstreq(mode, end, "lexical")) rs->default_mode = KBP_MODE_LEXICAL;
    else if (kbpi_jstreq(mode, end, "hybrid")) rs->default_mode = KBP_MODE_HYBRID;
    else return kbpi_invalid(kb, "manifest", "retrieval: unknown mode");
  }
  if (fusion) {
    if (kbpi_jstreq(fusion, end, "tmm")) rs->fusion = FUSION_TMM;
    else if (kbpi_jstreq(fusion, end, "minmax")) rs->fusion = FUSION_MINMAX;
    else if (kbpi_jstreq(fusion, end, "rrf")) rs->fusion = FUSION_RRF;
    else return kbpi_invalid(kb, "manifest", "retrieval: unknown fusion");
  }
  if (weight && !(kbpi_jtype(weight) == J_NUMBER && kbpi_jdouble(weight, end, &rs->weight) == 0 && rs->weight >= 0 && rs->weight <= 1))
    return kbpi_invalid(kb, "manifest", "retrieval: fusion weight must be within [0, 1]");
  if (depth && (kbpi_juint(depth, end, &rs->depth) || rs->depth < 1 || rs->depth > MAX_RETRIEVAL_DEPTH))
    return kbpi_invalid(kb, "manifest", "retrieval: depth must be an integer within [1, %u]", MAX_RETRIEVAL_DEPTH);
  if (rrf_k && (kbpi_juint(rrf_k, end, &rs->rrf_k) || rs->rrf_k < 1 || rs->rrf_k > MAX_RRF_K))
    return kbpi_invalid(kb, "manifest", "retrieval: rrf_k must be an integer within [1, %u]", MAX_RRF_K);
  /* 1.5, pages as the unit (FORMAT.md §2.8): the same verdicts as RetrievalSettings.check */
  const char *unit = kbpi_jget(r, end, "unit"), *page_depth = kbpi_jget(r, end, "page_depth");
  const char *page_share = kbpi_jget(r, end, "page_share"), *page_chunks = kbpi_jget(r, end, "page_chunks");
  if (page_depth && (kbpi_juint(page_depth, end, &rs->page_depth) || rs->page_depth < 1 || rs->page_depth > MAX_PAGE_DEPTH))
    return kbpi_invalid(kb, "manifest", "retrieval: page_depth must be an integer within [1, %u]", MAX_PAGE_DEPTH);
  if (page_chunks && (kbpi_juint(page_chunks, end, &rs->page_chunks) || rs->page_chunks < 1 || rs->page_chunks > KBP_MAX_PAGE_CHUNKS))
    return kbpi_invalid(kb, "manifest", "retrieval: page_chunks must be an integer within [1, %u]", (unsigned)KBP_MAX_PAGE_CHUNKS);
  if (unit) {
    if (kbpi_jstreq(unit, end, "chunk")) rs->unit = KBP_UNIT_CHUNK;
    else if (kbpi_jstreq(unit, end, "page")) rs->unit = KBP_UNIT_PAGE;
    else return kbpi_invalid(kb, "manifest", "retrieval: unknown unit");
  }
  if (page_share &&
      !(kbpi_jtype(page_share) == J_NUMBER && kbpi_jdouble(page_share, end, &rs->page_share) == 0 && rs->page_share >= 0 && rs->page_share <= 1))
    return kbpi_invalid(kb, "manifest", "retrieval: page_share must be within [0, 1]");
  /* 1.6, the context match (FORMAT.md §2.9) */
  static const char *const context_keys[] = {"path_weight", "heading_weight"};
  double *context_weights[] = {&rs->path_weight, &rs->heading_weight};
  for (int i = 0; i < 2; i++) {
    const char *v = kbpi_jget(r, end, context_keys[i]);
    if (v && !(kbpi_jtype(v) == J_NUMBER && kbpi_jdouble(v, end, context_weights[i]) == 0 && *context_weights[i] >= 0 &&
               *context_weights[i] <= 1))
      return kbpi_invalid(kb, "manifest", "retrieval: %s must be within [0, 1]", context_keys[i]);
  }
  /* 1.8, each list weighted by its standout (FORMAT.md §2.5.1): a JSON boolean, as Python's check
   * (1 or "yes" would be true to a lenient reader and false to another: refused instead) */
  const char *standout = kbpi_jget(r, end, "standout_weighting");
  if (standout && kbpi_jtype(standout) != J_TRUE && kbpi_jtype(standout) != J_FALSE)
    return kbpi_invalid(kb, "manifest", "retrieval: standout_weighting must be true or false");
  rs->standout_weighting = kbpi_jtype(standout) == J_TRUE;
  /* 1.8, the answer strength's threshold (FORMAT.md §2.11; answer.c): null or absent, none */
  const char *min_strength = kbpi_jget(r, end, "min_strength");
  rs->has_min_strength = min_strength && kbpi_jtype(min_strength) != J_NULL;
  if (rs->has_min_strength &&
      !(kbpi_jtype(min_strength) == J_NUMBER && kbpi_jdouble(min_strength, end, &rs->min_strength) == 0 &&
        rs->min_strength >= -1 && rs->min_strength <= 1))
    return kbpi_invalid(kb, "manifest", "retrieval: min_strength must be null or within [-1, 1]");
  return KBP_OK;
}

KBP_INTERNAL kbp_status kbpi_retrieval_ready(kbp_bundle *kb) {
  if (kb->retrieval_state == LOAD_READY) return KBP_OK;
  kbp_status st = read_retrieval(kb);
  if (st == KBP_OK) kb->retrieval_state = LOAD_READY;
  return st;
}

kbp_status kbp_resolve_mode(kbp_bundle *kb, kbp_mode requested, kbp_mode *used) {
  kbpi_clear_error(&kb->err);
  if (requested < KBP_MODE_DEFAULT || requested > KBP_MODE_HYBRID)
    return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "mode must be dense, lexical or hybrid");
  kbp_status st = kbpi_retrieval_ready(kb);
  if (st != KBP_OK) return st;
  if (requested == KBP_MODE_DENSE) { /* dense reads the vectors only */
    if (used) *used = KBP_MODE_DENSE;
    return KBP_OK;
  }
  st = kbpi_lexical_ready(kb);
  if (st != KBP_OK && st != KBP_ERR_NOT_PRESENT) return st;
  int has_lexical = st == KBP_OK;
  kbpi_clear_error(&kb->err);
  kbp_mode mode = requested;
  if (mode == KBP_MODE_DEFAULT) mode = has_lexical ? kb->rs.default_mode : KBP_MODE_DENSE;
  if (mode != KBP_MODE_DENSE && !has_lexical)
    return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "%s search: this bundle has no lexical index (built before format 1.2, or "
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

/* P for source `src`: the question's terms in its path without the extension (Python: context_parts). */
static kbp_status path_sum(kbp_bundle *kb, context_query *cq, int64_t src, uint8_t **buf, size_t *cap, double *sum) {
  const char *v = kb->source_paths[src];
  size_t need = kbpi_jdecoded_bound(v, kb->manifest_end) + 1;
  if (need > *cap) {
    void *grown = realloc(*buf, need);
    if (!grown) return kbpi_out_of_memory(kb);
    *buf = grown;
    *cap = need;
  }
  uint8_t *path = *buf;
  long n = kbpi_jdecode(v, kb->manifest_end, path, *cap);
  size_t len = 0;
  /* A lone surrogate escape (\ud800) decodes to ED A0..BF 80..BF, three invalid bytes that would read
   * as three code points; Python holds it as one, of the separator class: one space here. */
  for (size_t j = 0; n > 0 && j < (size_t)n; j++) {
    if (path[j] == 0xED && j + 2 < (size_t)n && (path[j + 1] & 0xE0) == 0xA0 && (path[j + 2] & 0xC0) == 0x80) {
      path[len++] = ' ';
      j += 2;
    } else {
      path[len++] = path[j];
    }
  }
  size_t dot = len; /* the stem ends at the last '.' after the last '/' */
  for (size_t j = 0; j < len; j++) {
    if (path[j] == '/') dot = len;
    else if (path[j] == '.') dot = j;
  }
  return kbpi_context_sum(kb, cq, path, dot, sum);
}

/* The context match (FORMAT.md §2.9; Python: Retriever._context_match, context_parts, context_match):
 * adds path_weight x (P / best P), then heading_weight x (H / best H), to each candidate's fused
 * score. Each source's path is read once a query, however many candidates share it. */
static kbp_status add_context_match(kbp_bundle *kb, const uint64_t *cand, size_t nc, scored *fused) {
  const retrieval_settings *rs = &kb->rs;
  context_query *cq = kbpi_scored_question(kb); /* hybrid search scored the question just before */
  double *sums = malloc(2 * (nc ? nc : 1) * sizeof *sums), best[2] = {0.0, 0.0};
  double *by_source = malloc((kb->n_sources ? kb->n_sources : 1) * sizeof *by_source);
  uint8_t *seen = calloc(kb->n_sources ? kb->n_sources : 1, 1), *path = NULL;
  size_t path_cap = 0;
  kbp_status st = sums && by_source && seen ? KBP_OK : kbpi_out_of_memory(kb);
  for (size_t i = 0; st == KBP_OK && i < nc; i++) { /* candidates in id order: each block is read once */
    double *in_path = &sums[2 * i], *in_heading = &sums[2 * i + 1];
    *in_path = *in_heading = 0.0;
    chunk_fields f;
    if ((st = kbpi_chunk_fields(kb, cand[i], &f)) != KBP_OK) break;
    /* the source path (kbp_chunk_get's rule: none when absent or out of range) */
    int64_t src = f.present & 1u << F_SOURCE ? f.value[F_SOURCE].i : -1;
    if (src >= 0 && (uint64_t)src < kb->n_sources) {
      if (!seen[src] && (st = path_sum(kb, cq, src, &path, &path_cap, &by_source[src])) != KBP_OK) break;
      seen[src] = 1;
      *in_path = by_source[src];
    }
    /* the heading: the context after its first " | " (ASCII: never inside a UTF-8 sequence) */
    const mp_value *ctx = &f.value[F_CONTEXT];
    if (f.present & 1u << F_CONTEXT && ctx->kind == MP_STR) {
      size_t n = (size_t)ctx->len;
      for (size_t j = 0; j + 3 <= n; j++)
        if (ctx->data[j] == ' ' && ctx->data[j + 1] == '|' && ctx->data[j + 2] == ' ') {
          st = kbpi_context_sum(kb, cq, ctx->data + j + 3, n - j - 3, in_heading);
          break;
        }
      if (st != KBP_OK) break;
    }
    for (int p = 0; p < 2; p++)
      if (sums[2 * i + p] > best[p]) best[p] = sums[2 * i + p];
  }
  for (size_t i = 0; st == KBP_OK && i < nc; i++) {
    fused[i].score = fused[i].score + rs->path_weight * (best[0] > 0.0 ? sums[2 * i] / best[0] : 0.0);
    fused[i].score = fused[i].score + rs->heading_weight * (best[1] > 0.0 ? sums[2 * i + 1] / best[1] : 0.0);
  }
  free(path);
  free(seen);
  free(by_source);
  free(sums);
  return st;
}

/* How far a list's best stands out of its own list (FORMAT.md §2.5.1; Python: standout): sets *z to
 * (s1 - mean) / sd, the population's sd, every sum taken left to right from the best in double
 * precision, so that each runtime gets the same bits. Returns 0 when the list cannot say: fewer than
 * two scores, a spread under STANDOUT_MIN_SD (a list that flat is float32 rounding: two runtimes
 * summing inner products in another order would weigh it differently), or one that is no finite
 * number (only a forged bundle's overflowing scores make one). */
#define STANDOUT_MIN_SD 0.001
static int standout(const scored *list, size_t n, double *z) {
  if (n < 2) return 0;
  double total = 0.0;
  for (size_t i = 0; i < n; i++) total += list[i].score;
  double mean = total / (double)n, spread = 0.0;
  for (size_t i = 0; i < n; i++) spread += (list[i].score - mean) * (list[i].score - mean);
  double sd = sqrt(spread / (double)n);
  if (!(sd >= STANDOUT_MIN_SD && isfinite(sd))) return 0;
  *z = (list[0].score - mean) / sd;
  return 1;
}

/* The lexical list's weight for this question (Python: question_weight): each list's fixed share
 * times its standout (a negative one counts as 0), as a proportion; the fixed weight when either
 * list's standout says nothing or neither list stands out. */
static double question_weight(double w, const scored *d, size_t nd, const scored *l, size_t nl) {
  double zd = 0.0, zl = 0.0;
  if (!standout(d, nd, &zd) || !standout(l, nl, &zl)) return w;
  double a = (1.0 - w) * (zd > 0.0 ? zd : 0.0), b = w * (zl > 0.0 ? zl : 0.0);
  return a + b > 0.0 ? b / (a + b) : w;
}

/* Fuses the dense and lexical lists into fused[i] for each candidate (Python: fuse). */
static kbp_status fuse(kbp_bundle *kb, const dense_query *dq, const scored *d, size_t nd,
                       const scored *l, size_t nl, const uint64_t *cand, size_t nc, scored *fused) {
  const retrieval_settings *rs = &kb->rs;
  double w = rs->weight;
  for (size_t i = 0; i < nc; i++) {
    fused[i].id = cand[i];
    fused[i].score = 0.0;
  }
  if (rs->fusion == FUSION_RRF) { /* the dense list's terms first, then the lexical list's */
    for (size_t r = 0; r < nd; r++) fused[position_of(cand, nc, d[r].id)].score += (1.0 - w) / (double)(rs->rrf_k + r + 1);
    for (size_t r = 0; r < nl; r++) fused[position_of(cand, nc, l[r].id)].score += w / (double)(rs->rrf_k + r + 1);
    return KBP_OK;
  }
  if (rs->standout_weighting) w = question_weight(w, d, nd, l, nl);
  score_range dense_range = range_of(d, nd), lexical_range = range_of(l, nl);
  for (size_t i = 0; i < nc; i++) {
    double ip = (double)kbpi_row_score(kb, dq, cand[i]); /* exact, in float32 */
    if (!isfinite(ip)) ip = 0.0; /* a forged bundle's overflowing scores count for nothing, as in Python */
    double dense = normalise(ip, dense_range, rs->fusion);
    double lexical = normalise(kb->lex.scores[cand[i]], lexical_range, rs->fusion);
    double a = (1.0 - w) * dense, b = w * lexical;
    fused[i].score = a + b;
  }
  if (rs->path_weight == 0.0 && rs->heading_weight == 0.0) return KBP_OK;
  return add_context_match(kb, cand, nc, fused);
}

static kbp_status hybrid_search(kbp_bundle *kb, const float *q, const char *question, size_t k, const kbp_filter *f,
                                kbp_hit *hits, size_t *n_hits) {
  uint64_t depth = k > kb->rs.depth ? k : kb->rs.depth;
  scored *d = NULL, *l = NULL, *fused = NULL;
  uint64_t *cand = NULL;
  size_t nd = 0, nl = 0, nc = 0;
  dense_query dq;
  kbp_status st = kbpi_prepare_query(kb, q, &dq);
  /* both lists drawn from the filter's chunks (FORMAT.md §2.10.2); two-stage with binary codes, as Python's */
  if (st == KBP_OK) st = kbpi_dense_top(kb, &dq, depth, f, &d, &nd);
  if (st == KBP_OK) st = kbpi_score_lexical(kb, question, kbpi_filter_keep(f));
  if (st == KBP_OK) st = kbpi_lexical_top(kb, depth, &l, &nl);
  if (st == KBP_OK && nl == 0) { /* no word of the question in the index: the dense list */
    for (size_t i = 0; i < nd && i < k; i++) hits[i] = (kbp_hit){d[i].id, d[i].score};
    *n_hits = nd < k ? nd : k;
  } else if (st == KBP_OK) {
    cand = malloc((nd + nl) * sizeof *cand);
    fused = malloc((nd + nl) * sizeof *fused);
    if (!cand || !fused) st = kbpi_out_of_memory(kb);
    else {
      nc = candidate_union(d, nd, l, nl, cand);
      st = fuse(kb, &dq, d, nd, l, nl, cand, nc, fused);
      if (st == KBP_OK) {
        qsort(fused, nc, sizeof *fused, kbpi_by_rank);
        for (size_t i = 0; i < nc && i < k; i++) hits[i] = (kbp_hit){fused[i].id, fused[i].score};
        *n_hits = nc < k ? nc : k;
      }
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
  return kbp_search_filtered(kb, query_vector, question, k, mode, NULL, hits, n_hits);
}

kbp_status kbp_search_filtered(kbp_bundle *kb, const float *query_vector, const char *question, size_t k, kbp_mode mode,
                               const kbp_filter *filter, kbp_hit *hits, size_t *n_hits) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  if (!n_hits || (k && !hits)) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_search: hits and n_hits must not be NULL");
  *n_hits = 0;
  kbp_mode used;
  kbp_status st = kbpi_check_filter(kb, filter);
  if (st != KBP_OK) return st;
  if ((st = kbp_resolve_mode(kb, mode, &used)) != KBP_OK) return st;
  if (used != KBP_MODE_LEXICAL && (st = kbpi_check_query_vector(kb, query_vector)) != KBP_OK) return st;
  if (used != KBP_MODE_DENSE && !question) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "this search needs a question");
  if (k == 0) return KBP_OK;
  scored *top = NULL;
  size_t n = 0;
  if (used == KBP_MODE_HYBRID) return hybrid_search(kb, query_vector, question, k, filter, hits, n_hits);
  if (used == KBP_MODE_DENSE) {
    dense_query dq;
    if ((st = kbpi_prepare_query(kb, query_vector, &dq)) == KBP_OK) st = kbpi_dense_top(kb, &dq, k, filter, &top, &n);
  } else if ((st = kbpi_score_lexical(kb, question, kbpi_filter_keep(filter))) == KBP_OK) {
    st = kbpi_lexical_top(kb, k, &top, &n);
  }
  if (st == KBP_OK) copy_hits(top, n, k, hits, n_hits);
  free(top);
  return st;
}
