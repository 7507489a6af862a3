/* libkbpack, pages.c: pages as the unit (FORMAT.md §2.8; Python: kbc/search/fusion.py page_key,
 * rank_pages and KnowledgeBase.rank_pages). kbp_search_pages takes the mode's best page_depth
 * chunks, groups them by page (source, record, page_start), scores each page by its best chunk
 * plus page_share of the others, and returns the best k pages with their records and their first
 * page_chunks chunks. kbp_default_unit and kbp_page_settings report the manifest's settings. */
#include "kbpack_internal.h"

kbp_status kbp_default_unit(kbp_bundle *kb, kbp_unit *unit) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  if (!unit) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_default_unit: unit must not be NULL");
  kbp_status st = kbpi_retrieval_ready(kb);
  if (st != KBP_OK) return st;
  *unit = kb->rs.unit;
  return KBP_OK;
}

kbp_status kbp_page_settings(kbp_bundle *kb, size_t *page_depth, double *page_share, size_t *page_chunks) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  kbp_status st = kbpi_retrieval_ready(kb);
  if (st != KBP_OK) return st;
  if (page_depth) *page_depth = (size_t)kb->rs.page_depth;
  if (page_share) *page_share = kb->rs.page_share;
  if (page_chunks) *page_chunks = (size_t)kb->rs.page_chunks;
  return KBP_OK;
}

/* One ranked chunk with its page: (source, record or none, page_start), as Python's page_key reads
 * them (an absent source or page_start is 0). Both fit int64: a block holding a larger one is
 * refused when it is loaded (chunks.c, FORMAT.md 2.1), so int64 compares them as Python's ints. The record is
 * compared by its length and SHA-256, so a page member takes 80 bytes (x86-64) whatever the record's length. */
typedef struct {
  int64_t source, page;
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
static kbp_status read_page_key(kbp_bundle *kb, page_member *m) {
  chunk_fields f;
  kbp_status st = kbpi_chunk_fields(kb, m->id, &f);
  if (st != KBP_OK) return st;
  if (f.present & 1u << F_SOURCE) {
    m->source = f.value[F_SOURCE].i;
  }
  if (f.present & 1u << F_PAGE_START) {
    m->page = f.value[F_PAGE_START].i;
  }
  if (f.present & 1u << F_RECORD) {
    m->has_record = 1;
    m->record_len = f.value[F_RECORD].len;
    kbpi_sha256(f.value[F_RECORD].data, f.value[F_RECORD].len, m->record_sha);
  }
  return KBP_OK;
}

#define CMP_FIELD(a, b) \
  if ((a) != (b)) return (a) < (b) ? -1 : 1

static int page_key_cmp(const page_member *a, const page_member *b) {
  CMP_FIELD(a->source, b->source);
  CMP_FIELD(a->page, b->page);
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
  if (need > (uint64_t)SIZE_MAX) return kbpi_out_of_memory(kb);
  void *area = kb->page_strings;
  if (need && kbpi_reserve(&area, &kb->page_strings_cap, (size_t)need)) return kbpi_out_of_memory(kb);
  kb->page_strings = area;
  const page_group **by_id = malloc((n ? n : 1) * sizeof *by_id); /* the blocks are read in id order */
  if (!by_id) return kbpi_out_of_memory(kb);
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
    if ((st = kbpi_chunk_fields(kb, m->id, &f)) != KBP_OK) break;
    pages[g].record = kbpi_put_string(kb->page_strings, &used, f.value[F_RECORD].data, (size_t)f.value[F_RECORD].len);
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
  return kbp_search_pages_filtered(kb, query_vector, question, k, mode, NULL, pages, n_pages);
}

kbp_status kbp_search_pages_filtered(kbp_bundle *kb, const float *query_vector, const char *question, size_t k,
                                     kbp_mode mode, const kbp_filter *filter, kbp_page_hit *pages, size_t *n_pages) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  if (!n_pages || (k && !pages)) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_search_pages: pages and n_pages must not be NULL");
  *n_pages = 0;
  kbp_status st = kbpi_retrieval_ready(kb);
  if (st != KBP_OK) return st;
  size_t depth = (size_t)kb->rs.page_depth, n = 0; /* <= MAX_PAGE_DEPTH: every allocation here is bounded */
  double share = kb->rs.page_share;
  kbp_hit *hits = malloc(depth * sizeof *hits);
  page_member *members = malloc(depth * sizeof *members);
  page_group *groups = malloc(depth * sizeof *groups);
  if (!hits || !members || !groups) st = kbpi_out_of_memory(kb);
  /* 1. the mode's best P chunks, whatever k is (k = 0: the same checks, no pages) */
  if (st == KBP_OK) st = kbp_search_filtered(kb, query_vector, question, k ? depth : 0, mode, filter, hits, &n);
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
