/* libkbpack, faiss_index.c: the stored FAISS index, walked for kbp_verify (kbpi_verify_index) so
 * that a device may hand a verified bundle's index to FAISS. What the walk checks, against which
 * budgets and why, is said below; nothing here loads or searches the index. */
#include "kbpack_internal.h"

/* The stored FAISS index (FORMAT.md §5.1; Python: kbc/format/faiss_guard.py, whose walk this is, check for
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
    kbpi_invalid(r->kb, "index", "%s declares %llu bytes, %llu remain in the section", what, (unsigned long long)n,
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
    kbpi_invalid(r->kb, "index", "%s declares %llu entries of %llu bytes, %llu bytes remain in the section", what,
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
  kbpi_set_error(&r->kb->err, KBP_ERR_INVALID, "index", fmt, ap);
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
    if (pass == 1 && ntotal && !(seen = calloc((size_t)(ntotal / 8 + 1), 1))) return kbpi_out_of_memory(r->kb), -1;
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
KBP_INTERNAL kbp_status kbpi_verify_index(kbp_bundle *kb) {
  static const char *const params[2] = {"nprobe", "efSearch"};
  static const uint64_t limits[2] = {65536, 4096};
  int idx = kb->known[S_INDEX];
  if (idx < 0) return KBP_OK;
  const section *s = &kb->sections[idx];
  if (strcmp(s->encoding, "faiss") != 0) return kbpi_invalid(kb, "index", "unknown encoding '%s', expected 'faiss'", s->encoding);
  const uint8_t *p;
  kbp_status st = kbpi_section_bytes(kb, idx, &p);
  if (st != KBP_OK) return st;
  index_type type;
  if (check_index(kb, p, s->length, kb->count, kb->dim, &type)) return kb->err.status;
  const char *end = kb->manifest_end, *search_params = kbpi_jget(kb->m_index, end, "search_params"), *key, *value;
  if (kbpi_jfalsy(search_params, end)) return KBP_OK; /* Python: `... or {}` */
  jcur it;
  if (!kbpi_jopen(search_params, end, '{', &it)) return kbpi_invalid(kb, "manifest", "index.search_params is not an object");
  while (kbpi_jobject_next(&it, &key, &value)) {
    int known = -1;
    uint64_t v;
    for (int i = 0; i < 2; i++)
      if (kbpi_jstreq(key, end, params[i])) known = i;
    if (known < 0 || kbpi_juint(value, end, &v) || v < 1 || v > limits[known])
      return kbpi_invalid(kb, "manifest", "index.search_params: a parameter is not allowed (known: nprobe 1..65536, efSearch 1..4096)");
    int applies = known == 0 ? type == IX_IVF_FLAT || type == IX_IVF_PQ : type == IX_HNSW_FLAT;
    if (!applies)
      return kbpi_invalid(kb, "manifest", "index.search_params: %s does not apply to the stored %s index", params[known], IX_NAME[type]);
  }
  return KBP_OK;
}
