/* libkbpack, dense.c: the vectors and dense search. The vectors are checked on first use
 * (SHA-256, every value finite, or for int8 the scales); float16 rows and big-endian float32
 * rows are converted, int8 rows scored against the query times the scales; inner products in
 * float32 in a fixed order of sums. A bundle with binary codes (format 1.4, FORMAT.md §2.7) is
 * searched in two stages: a Hamming-distance shortlist, then those rows rescored. Here too are
 * the ranked lists the other searches share: kbpi_by_rank and the top-k heap. */
#include "kbpack_internal.h"

#define DOT_LANES 16 /* floats per step of the vectorised loops */

static int value_finite(const uint8_t *p, size_t item) {
  if (item == 2) return (le(p, 2) & 0x7c00u) != 0x7c00u;
  return (le(p, 4) & 0x7f800000u) != 0x7f800000u;
}

/* Row `first_bad` of a rows x dim array of floats (item 2 or 4 bytes) holds NaN or infinity, or -1. */
KBP_INTERNAL int64_t kbpi_first_non_finite_row(const uint8_t *p, uint64_t rows, uint64_t dim, size_t item) {
  for (uint64_t r = 0; r < rows; r++)
    for (uint64_t j = 0; j < dim; j++)
      if (!value_finite(p + (r * dim + j) * item, item)) return (int64_t)r;
  return -1;
}

/* int8 (format 1.4): vector_scales, checked (SHA-256, every scale >= 0 with 128 x scale finite) and kept as
 * native floats. Python: Bundle.scales. */
static kbp_status load_scales(kbp_bundle *kb) {
  const uint8_t *p = NULL;
  kbp_status st = kbpi_section_bytes(kb, kb->known[S_VECTOR_SCALES], &p);
  if (st != KBP_OK) return st;
  size_t dim = (size_t)kb->dim; /* the section holds exactly dim x 4 bytes (kbp_open) */
  if (!kb->scales && !(kb->scales = malloc(dim * sizeof *kb->scales))) return kbpi_out_of_memory(kb);
  for (size_t j = 0; j < dim; j++) {
    uint32_t bits = (uint32_t)le(p + 4 * j, 4);
    float scale;
    memcpy(&scale, &bits, 4);
    /* 128 x scale finite: every value a row stands for (bytes -128..127) is a float32 (FORMAT.md §2.7) */
    if (!isfinite(scale * 128.0f) || !(scale >= 0.0f))
      return kbpi_invalid(kb, "vector_scales", "scale %zu is %g: scales must be >= 0 with 128 x scale a finite float32",
                     j, (double)scale);
    kb->scales[j] = scale;
  }
  return KBP_OK;
}

/* The vectors, checked the first time they are used: their SHA-256 and every value finite (a NaN
 * would poison every score it meets), or for int8 the scales; and the binary codes' SHA-256 when
 * the bundle has them (dense search reads them first). */
KBP_INTERNAL kbp_status kbpi_vectors_bytes(kbp_bundle *kb, const uint8_t **out) {
  kbp_status st = kbpi_section_bytes(kb, kb->known[S_VECTORS], out);
  if (st != KBP_OK || kb->vectors_checked) return st;
  if (kb->dtype == DTYPE_INT8) {
    if ((st = load_scales(kb)) != KBP_OK) return st;
  } else {
    int64_t bad = kbpi_first_non_finite_row(*out, kb->count, kb->dim, dtype_size(kb->dtype));
    if (bad >= 0) return kbpi_invalid(kb, "vectors", "row %lld holds NaN or infinity", (long long)bad);
  }
  const uint8_t *codes;
  if (kb->binary && (st = kbpi_section_bytes(kb, kb->known[S_VECTORS_BINARY], &codes)) != KBP_OK) return st;
  int convert = kb->dtype == DTYPE_FLOAT16 || (kb->dtype == DTYPE_FLOAT32 && !host_is_little_endian());
  /* only with rows: then dim x itemsize bytes are in the file; a count of 0 bounds no dim */
  if (convert && kb->count && !kb->row && !(kb->row = malloc((size_t)kb->dim * sizeof *kb->row))) return kbpi_out_of_memory(kb);
  kb->vectors_checked = 1;
  return KBP_OK;
}

/* Unused bits of each code's last byte (those past dim) must be 0 (FORMAT.md §2.7). Searching
 * does not need it (they are XOR'd and counted as any bit, as Python's reader counts them), so
 * only kbp_verify checks it, after kbpi_vectors_bytes. Python: Bundle._check_binary_padding. */
KBP_INTERNAL kbp_status kbpi_check_code_padding(kbp_bundle *kb) {
  unsigned spare = (unsigned)((8 - kb->dim % 8) % 8);
  if (!kb->binary || !spare) return KBP_OK;
  const uint8_t *codes = kb->data + kb->sections[kb->known[S_VECTORS_BINARY]].offset, mask = (uint8_t)((1u << spare) - 1);
  for (uint64_t r = 0; r < kb->count; r++)
    if (codes[r * kb->code_bytes + kb->code_bytes - 1] & mask)
      return kbpi_invalid(kb, "vectors_binary", "row %llu sets bits past dimension %llu", (unsigned long long)r,
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

/* Float row r as native floats: a pointer into the map (float32 on a little-endian host) or kb->row. */
static const float *vector_row(kbp_bundle *kb, const uint8_t *vectors, uint64_t r) {
  size_t dim = (size_t)kb->dim;
  if (!kb->row) return (const float *)(const void *)(vectors + (size_t)r * dim * 4); /* 64-byte aligned section */
  const uint8_t *p = vectors + (size_t)r * dim * dtype_size(kb->dtype);
  float *row = kb->row;
  if (kb->dtype == DTYPE_FLOAT16) { /* on a big-endian host (kbpi_row_score widens little-endian ones itself) */
    for (size_t j = 0; j < dim; j++) row[j] = kbpi_half_to_float((uint16_t)le(p + 2 * j, 2));
  } else { /* float32 on a big-endian host */
    for (size_t j = 0; j < dim; j++) {
      uint32_t bits = (uint32_t)le(p + 4 * j, 4);
      memcpy(&row[j], &bits, 4);
    }
  }
  return row;
}

KBP_INTERNAL kbp_status kbpi_prepare_query(kbp_bundle *kb, const float *q, dense_query *dq) {
  kbp_status st = kbpi_vectors_bytes(kb, &dq->vectors);
  if (st != KBP_OK) return st;
  dq->q = dq->w = q;
  if (kb->dtype == DTYPE_INT8) {
    size_t dim = (size_t)kb->dim;
    if (!kb->weights && !(kb->weights = malloc(dim * sizeof *kb->weights))) return kbpi_out_of_memory(kb);
    for (size_t j = 0; j < dim; j++) kb->weights[j] = q[j] * kb->scales[j];
    dq->w = kb->weights;
  }
  return KBP_OK;
}

/* Row r's inner product with the query, in float32. A forged bundle's huge values can make it
 * NaN: such a score ranks last, as in Python's reader (-inf). */
KBP_INTERNAL float kbpi_row_score(kbp_bundle *kb, const dense_query *dq, uint64_t r) {
  size_t dim = (size_t)kb->dim;
  /* int8 and float16 rows: kernels.c's inner products (SIMD where the CPU has it, the same float as plain C) */
  float s = kb->dtype == DTYPE_INT8 ? kbpi_dot_i8((const int8_t *)(const void *)(dq->vectors + (size_t)r * dim), dq->w, dim,
                                                  KBPI_KERNEL_BEST)
            : kb->dtype == DTYPE_FLOAT16 && host_is_little_endian()
                ? kbpi_dot_f16(dq->vectors + (size_t)r * dim * 2, dq->w, dim, KBPI_KERNEL_BEST)
                : dot(vector_row(kb, dq->vectors, r), dq->w, dim);
  return isnan(s) ? -INFINITY : s;
}

KBP_INTERNAL int kbpi_by_rank(const void *pa, const void *pb) {
  scored a = *(const scored *)pa, b = *(const scored *)pb;
  return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

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

KBP_INTERNAL void kbpi_top_k_offer(top_k *t, double score, uint64_t id) {
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

KBP_INTERNAL void kbpi_top_k_sort(top_k *t) { qsort(t->items, t->n, sizeof *t->items, kbpi_by_rank); }

KBP_INTERNAL kbp_status kbpi_check_query_vector(kbp_bundle *kb, const float *q) {
  if (!q) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "this search needs a query vector");
  for (size_t j = 0; j < kb->dim; j++)
    if (!isfinite(q[j])) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "the query vector holds NaN or infinity");
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
static kbp_status shortlist(kbp_bundle *kb, const float *q, uint64_t k, const kbp_filter *f, size_t *n_out) {
  size_t n = (size_t)kb->count, bytes = kb->code_bytes, max_distance = 8 * bytes;
  uint64_t m = kb->count;
  const uint64_t *kept = f ? kbpi_filter_ids(f, &m) : NULL; /* a filter's rows only (FORMAT.md §2.10.2) */
  uint64_t r = k > UINT64_MAX / kb->multiplier ? UINT64_MAX : kb->multiplier * k;
  if (r < kb->candidates) r = kb->candidates;
  if (r > m) r = m;
  if (!kb->query_bits) {
    kb->query_bits = malloc(bytes);
    kb->distances = malloc(n * sizeof *kb->distances);
    kb->histogram = malloc((max_distance + 1) * sizeof *kb->histogram);
    if (!kb->query_bits || !kb->distances || !kb->histogram) {
      free(kb->query_bits); free(kb->distances); free(kb->histogram);
      kb->query_bits = NULL; kb->distances = NULL; kb->histogram = NULL;
      return kbpi_out_of_memory(kb);
    }
  }
  void *ids = kb->candidate_ids;
  if (kbpi_reserve(&ids, &kb->candidate_cap, (size_t)r * sizeof *kb->candidate_ids)) return kbpi_out_of_memory(kb);
  kb->candidate_ids = ids;
  uint8_t *bits = kb->query_bits;
  memset(bits, 0, bytes);
  for (size_t d = 0; d < (size_t)kb->dim; d++)
    if (q[d] > 0.0f) bits[d / 8] |= (uint8_t)(0x80u >> (d % 8)); /* most significant bit first */
  const uint8_t *codes = kb->data + kb->sections[kb->known[S_VECTORS_BINARY]].offset; /* checked by kbpi_vectors_bytes */
  memset(kb->histogram, 0, (max_distance + 1) * sizeof *kb->histogram);
  if (kept) { /* the kept rows' distances only, a row at a time */
    for (uint64_t i = 0; i < m; i++) {
      const uint8_t *code = codes + kept[i] * bytes;
      uint32_t d = 0;
      for (size_t j = 0; j < bytes; j++) d += popcount64((uint64_t)(code[j] ^ bits[j]));
      kb->distances[kept[i]] = d;
      kb->histogram[d]++;
    }
  } else {
    code_distances(codes, n, bytes, bits, kb->distances, kb->histogram);
  }
  uint64_t below = 0; /* rows nearer than `cut` */
  size_t cut = 0;
  while (cut < max_distance && below + kb->histogram[cut] < r) below += kb->histogram[cut++];
  uint64_t at_cut = r - below; /* the lowest ids at distance `cut` */
  size_t taken = 0;
  for (uint64_t j = 0; j < (kept ? m : n) && taken < r; j++) {
    uint64_t i = kept ? kept[j] : j;
    uint32_t d = kb->distances[i];
    if (d < cut || (d == cut && at_cut && at_cut--)) kb->candidate_ids[taken++] = i;
  }
  *n_out = taken;
  return KBP_OK;
}

/* The k best chunks by inner product: every row (every kept row with a filter), or the binary codes'
 * shortlist rescored when the bundle has them. *out is malloc'd (the caller frees it), best first. */
KBP_INTERNAL kbp_status kbpi_dense_top(kbp_bundle *kb, const dense_query *dq, uint64_t k, const kbp_filter *f, scored **out,
                                       size_t *n) {
  uint64_t m = kb->count;
  const uint64_t *kept = f ? kbpi_filter_ids(f, &m) : NULL;
  top_k t = {NULL, 0, (size_t)(k < m ? k : m)};
  size_t n_candidates = 0;
  kbp_status st = kb->binary && t.k ? shortlist(kb, dq->q, t.k, f, &n_candidates) : KBP_OK;
  if (st != KBP_OK) return st;
  t.items = malloc((t.k ? t.k : 1) * sizeof *t.items);
  if (!t.items) return kbpi_out_of_memory(kb);
  uint64_t rows = kb->binary ? n_candidates : m;
  for (uint64_t i = 0; t.k && i < rows; i++) {
    uint64_t r = kb->binary ? kb->candidate_ids[i] : kept ? kept[i] : i;
    float s = kbpi_row_score(kb, dq, r);
    /* ids arrive in increasing order, so an equal score never displaces a kept one */
    if (t.n == t.k && !(s > t.items[0].score)) continue;
    kbpi_top_k_offer(&t, s, r);
  }
  kbpi_top_k_sort(&t);
  *out = t.items;
  *n = t.n;
  return KBP_OK;
}
