/* kbpack_internal.h: what libkbpack's units share, none of it part of the library's interface (that
 * is kbpack.h; the format is schemas/FORMAT.md). Each unit includes this header first, and no other of ours.
 *
 * Every rule in the units mirrors kbc's Python reader (kbc/format/bundle.py, kbc/format/bm25.py, kbc/search/fusion.py,
 * kbc/format/probes.py), so that a bundle one refuses the other refuses too, and a search ranks the same
 * chunks. Where the Python code's behaviour is subtle (Python's `==` between JSON numbers and
 * booleans, duplicate keys, the order of floating-point operations) the comment says so. Nothing is
 * allocated from a size read from the file before that size has been checked against the file or a
 * fixed limit.
 *
 * The units, in the order `make amalgamation` concatenates them into one kbpack_amalgamation.c:
 *   common.c       errors, buffers, UTF-8
 *   sha256.c       SHA-256
 *   json.c         JSON as Python's json.loads accepts it, and lookups
 *   kbpack.c       kbp_open and kbp_close: the header, section table and manifest; the accessors
 *   msgpack.c      the msgpack subset of chunk blocks
 *   chunks.c       chunk blocks (zstd frames of msgpack records), kbp_chunk_get
 *   kernels.c      the dense scan's int8 and float16 inner products: portable C, and SIMD chosen at run time
 *   dense.c        vectors (float32, float16, int8, binary codes), dense search, top-k lists
 *   lexical.c      the lexical index, tokeniser kbc-lex-1, BM25
 *   search.c       retrieval settings, hybrid fusion, kbp_resolve_mode, kbp_search
 *   pages.c        pages as the unit, kbp_search_pages
 *   attributes.c   document attributes and filters (FORMAT.md §2.10), kbp_filter_compile
 *   probes.c       probes, kbp_probe_check
 *   onnx_check.c   the encoder's ONNX graph, walked as kbc/format/encoder_guard.py walks it
 *   encoder.c      the query encoder record and tokenizer.json, kbp_encoder_get
 *   faiss_index.c  the stored FAISS index, walked as kbc/format/faiss_guard.py walks it
 *   verify.c       kbp_verify
 *   delta.c        kbp_apply_delta: a .kbdelta applied to the old bundle
 *   answer.c       the answer strength, kbp_answer_strength (FORMAT.md §2.11)
 *
 * A function one unit lends another is declared here, under the unit that defines it, and is named
 * kbpi_NAME, so that a program linking libkbpack.a never meets a `fail` or a `jget` of ours; its
 * definition is marked KBP_INTERNAL. Compiled unit by unit, KBP_INTERNAL is empty and, with GCC or
 * clang, these functions stay out of libkbpack.so's exported symbols; in the amalgamation it is
 * `static`, so that one object exports only kbp_ functions, as the single kbpack.c did, and the
 * compiler may inline across units. Everything else a unit needs is `static` in it. */
#ifndef KBPACK_INTERNAL_H
#define KBPACK_INTERNAL_H

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
/* kernels.c's SIMD intrinsics; on x86-64 each kernel enables its instruction set by a target
 * attribute, so including them builds nothing beyond baseline x86-64 */
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#elif defined(__wasm_simd128__)
#include <wasm_simd128.h>
#endif

/* BM25 must round exactly as FORMAT.md §2.4 orders it: no fused multiply-add. GCC in ISO C mode
 * (-std=c99) never contracts; clang needs telling. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#endif

/* KBP_INTERNAL: see above. KBP_INTERNAL_DATA declares the one table units share. */
#ifdef KBP_AMALGAMATION
#define KBP_INTERNAL static
#define KBP_INTERNAL_DATA static
#else
#define KBP_INTERNAL
#define KBP_INTERNAL_DATA extern
#endif

#if defined(__GNUC__) /* and clang: what is declared from here on is not exported by libkbpack.so */
#pragma GCC visibility push(hidden)
#endif

/* ============ limits */

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
#define MAX_CONTEXT_CHARS 4096u /* code points of each part of a chunk's context the context match reads */
#define MAX_TOKEN_CHARS 64u
#define MAX_TERM_BYTES (4u * MAX_TOKEN_CHARS)
#define MAX_RETRIEVAL_DEPTH 10000u
#define MAX_RRF_K 10000u
#define MAX_PAGE_DEPTH 10000u /* retrieval.page_depth (FORMAT.md §2.8) */
#define DEFAULT_PROBE_THRESHOLD 0.99
/* document attributes and filters (FORMAT.md §2.10) */
#define MAX_ATTRIBUTE_KEYS 64u
#define MAX_ATTRIBUTE_KEY_CHARS 64u
#define MAX_ATTRIBUTE_CHARS 1024u  /* code points of a string value */
#define MAX_ATTRIBUTE_LIST 64u     /* strings in a list value */
#define MAX_FILTER_CONDITIONS 64u
#define MAX_GLOB_BYTES 1024u
#define MAX_MATCHED_PATH_BYTES 4096u /* a longer source path matches no glob */
/* Python's json recurses about 990 levels before RecursionError; stay a little below. */
#define JSON_MAX_DEPTH 900
/* CPython (3.11+) refuses to convert integer literals of more digits (int_max_str_digits). */
#define JSON_MAX_INT_DIGITS 4300

typedef enum { UNCHECKED, CHECKED, DAMAGED } check_state;
typedef enum { LOAD_UNKNOWN, LOAD_READY, LOAD_ABSENT } load_state;

/* ============ common.c: errors, buffers, UTF-8 */

/* Little-endian fields, whatever the host. */
static inline uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static inline int host_is_little_endian(void) {
  const uint16_t one = 1;
  uint8_t first;
  memcpy(&first, &one, 1);
  return first == 1;
}

KBP_INTERNAL void kbpi_set_error(kbp_error *err, kbp_status status, const char *part, const char *fmt, va_list ap);
KBP_INTERNAL kbp_status kbpi_report(kbp_error *err, kbp_status status, const char *part, const char *fmt, ...);
KBP_INTERNAL void kbpi_clear_error(kbp_error *err);
KBP_INTERNAL size_t kbpi_utf8_next(const uint8_t *s, size_t n, uint32_t *cp);
KBP_INTERNAL int kbpi_utf8_valid(const uint8_t *s, size_t n);
KBP_INTERNAL size_t kbpi_utf8_put(uint32_t c, uint8_t *o);
KBP_INTERNAL kbp_status kbpi_fail(kbp_bundle *kb, kbp_status status, const char *part, const char *fmt, ...);
KBP_INTERNAL kbp_status kbpi_invalid(kbp_bundle *kb, const char *part, const char *fmt, ...);
KBP_INTERNAL kbp_status kbpi_out_of_memory(kbp_bundle *kb);
KBP_INTERNAL int kbpi_reserve(void **buf, size_t *cap, size_t need);

/* ============ sha256.c: SHA-256 */

KBP_INTERNAL void kbpi_sha256(const uint8_t *p, uint64_t n, uint8_t out[32]);

/* ============ json.c: values point into checked text */

typedef struct {
  const char *p, *end;
  int check; /* 1 only inside kbpi_json_check: validate while scanning; 0: skip text it accepted */
} jcur;

typedef enum { J_NONE, J_OBJECT, J_ARRAY, J_STRING, J_NUMBER, J_TRUE, J_FALSE, J_NULL } jkind;

KBP_INTERNAL int kbpi_jscan_value(jcur *c, int depth);
KBP_INTERNAL int kbpi_json_check(const char *text, uint64_t n, const char **root);
KBP_INTERNAL jkind kbpi_jtype(const char *v);
KBP_INTERNAL int kbpi_jopen(const char *v, const char *end, char open, jcur *it);
KBP_INTERNAL int kbpi_jarray_next(jcur *it, const char **value);
KBP_INTERNAL int kbpi_jobject_next(jcur *it, const char **key, const char **value);
KBP_INTERNAL long kbpi_jdecode(const char *v, const char *end, uint8_t *out, size_t cap);
KBP_INTERNAL size_t kbpi_jdecoded_bound(const char *v, const char *end);
KBP_INTERNAL uint64_t kbpi_jstring_chars(const char *v, const char *end);
KBP_INTERNAL int kbpi_jstreq(const char *v, const char *end, const char *lit);
KBP_INTERNAL const char *kbpi_jget(const char *obj, const char *end, const char *key);
KBP_INTERNAL int kbpi_juint(const char *v, const char *end, uint64_t *out);
KBP_INTERNAL int kbpi_jdouble(const char *v, const char *end, double *out);
KBP_INTERNAL int kbpi_jequals_count(const char *v, const char *end, uint64_t n);
KBP_INTERNAL int kbpi_jfinite_number(const char *v, const char *end, double *out);
KBP_INTERNAL int kbpi_jfalsy(const char *v, const char *end);

/* ============ kbpack.c: the bundle */

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
       S_ENCODER_GRAPH, S_ENCODER_TOKENIZER, S_VECTOR_SCALES, S_VECTORS_BINARY, S_ATTRIBUTES, S_CHUNK_BLOCKS, N_KNOWN };

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
  struct context_query *question; /* the question scored last (lexical.c), for the context match */
  uint8_t *summed[2]; /* 1.8: lex_vocab_offsets, lex_postings_offsets stored as lengths, summed into u32le offsets */
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
  double path_weight, heading_weight; /* 1.6, the context match (FORMAT.md §2.9); absent: 0 */
  int standout_weighting;             /* 1.8, w per question (FORMAT.md §2.5.1); absent: 0, w fixed */
  int has_min_strength;               /* 1.8, the answer strength's threshold (FORMAT.md §2.11); absent or null: 0 */
  double min_strength;
} retrieval_settings;

/* The attributes (FORMAT.md §2.10), checked whole by attributes.c before any use. */
typedef enum { ATTR_STRING, ATTR_LIST, ATTR_INTEGER, ATTR_DATE } attr_type;
typedef struct {
  size_t n_keys;
  char names[MAX_ATTRIBUTE_KEYS][MAX_ATTRIBUTE_KEY_CHARS + 1];
  attr_type types[MAX_ATTRIBUTE_KEYS];
  size_t n_rows;
  uint64_t *firsts, *sources; /* each row's first chunk and source */
  const char **rows;          /* each row's JSON array, in the section */
  const char *end;            /* the end of the section's JSON */
} attribute_table;

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
  int by_source;      /* 1.8: chunks in the by-source layout, the chunk_blocks table naming each block's first id and source */
  int blocks_checked; /* that table checked whole (kbpi_check_block_table) */
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

  load_state lexical_state, retrieval_state, probes_state, attributes_state;
  attribute_table attrs;
  lexical_index lex;
  retrieval_settings rs;
  probe_set probes;
  char *probe_strings;
  size_t probe_strings_cap;
  char *page_strings; /* the records of the last kbp_search_pages */
  size_t page_strings_cap;

  kbp_error err;
};

static inline size_t dtype_size(vector_dtype t) { return t == DTYPE_INT8 ? 1 : t == DTYPE_FLOAT16 ? 2 : 4; }

/* Their names, by S_ index (kbpack.c). */
KBP_INTERNAL_DATA const char *const kbpi_known_sections[N_KNOWN];

KBP_INTERNAL int kbpi_section_index(const kbp_bundle *kb, const char *name);
KBP_INTERNAL kbp_status kbpi_section_bytes(kbp_bundle *kb, int idx, const uint8_t **out);

/* ============ msgpack.c: the msgpack subset */

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

KBP_INTERNAL int kbpi_mp_next(mp_cursor *c, mp_value *v);

/* ============ chunks.c: chunk records */

/* The chunk fields kbc reads (FORMAT.md §2.1) and their types; others are ignored. */
enum { F_TEXT, F_CONTEXT, F_SOURCE, F_SEQ, F_PAGE_START, F_PAGE_END, F_CHAR_START, F_CHAR_END, F_TOKENS,
       F_LABEL_START, F_LABEL_END, F_RECORD, N_FIELDS };
typedef struct {
  mp_value value[N_FIELDS];
  unsigned present; /* bit f: the map holds field f (its last occurrence is in value[f]) */
} chunk_fields;

KBP_INTERNAL kbp_status kbpi_check_offsets(kbp_bundle *kb);
/* By source (1.8): chunk_blocks' first ids rise from 0 below count, at most block_size apart, its sources
 * int64; checked once, on first use. KBP_OK at once for the fixed layout. */
KBP_INTERNAL kbp_status kbpi_check_block_table(kbp_bundle *kb);
/* The block holding chunk id < count, and the chunk's position in it. */
KBP_INTERNAL kbp_status kbpi_block_of(kbp_bundle *kb, uint64_t id, uint64_t *block, uint64_t *position);
KBP_INTERNAL const char *kbpi_read_chunk_map(mp_cursor *c, chunk_fields *out, int checking);
KBP_INTERNAL kbp_status kbpi_load_block(kbp_bundle *kb, uint64_t b);
/* Chunk id's fields (its block loaded, and checked, first); valid until another block is loaded. */
KBP_INTERNAL kbp_status kbpi_chunk_fields(kbp_bundle *kb, uint64_t id, chunk_fields *f);
KBP_INTERNAL kbp_string kbpi_put_string(char *area, size_t *used, const void *p, size_t n);

/* ============ kernels.c: the dense scan's int8 and float16 inner products */
/* A finite IEEE half as a float, exactly (as numpy converts it): the magnitude's bits shifted into
 * place read as a float 2^112 too small, and the multiplication rebases the exponent exactly, half
 * subnormals included (unless the caller's FPU flushes denormals to zero). No branch, so a loop of
 * them vectorises; the vectors are checked finite before any search reads them. Inline here so that
 * dense.c's row conversion and kernels.c's portable loops both vectorise it. */
static inline float kbpi_half_to_float(uint16_t h) {
  uint32_t magnitude = (uint32_t)(h & 0x7fffu) << 13, bits;
  float f;
  memcpy(&f, &magnitude, 4);
  f *= 0x1p112f;
  memcpy(&bits, &f, 4);
  bits |= (uint32_t)(h & 0x8000u) << 16;
  memcpy(&f, &bits, 4);
  return f;
}

/* Which code computes them: the widest this CPU runs (BEST), or one named (the tests compare them). */
typedef enum {
  KBPI_KERNEL_BEST = -1,
  KBPI_KERNEL_PORTABLE = 0, /* plain C */
  KBPI_KERNEL_AVX2 = 1,     /* x86-64, chosen at run time */
  KBPI_KERNEL_AVX512 = 2,   /* x86-64 AVX-512F, chosen at run time */
  KBPI_KERNEL_NEON = 3,     /* aarch64 */
  KBPI_KERNEL_WASM_SIMD = 4 /* WebAssembly built with -msimd128 */
} kbpi_kernel;

/* 1 if this build and this CPU run `kernel`. */
KBP_INTERNAL int kbpi_kernel_available(kbpi_kernel kernel);
/* Σ w[d] x row[d] over n elements in float32, summed in kernels.c's fixed order: every kernel returns
 * the same float. A kernel not available runs the portable one. f16: n little-endian finite halves. */
KBP_INTERNAL float kbpi_dot_i8(const int8_t *v, const float *w, size_t n, kbpi_kernel kernel);
KBP_INTERNAL float kbpi_dot_f16(const uint8_t *p, const float *w, size_t n, kbpi_kernel kernel);

/* ============ dense.c: dense search and ranked lists */

/* A query ready to score rows with: the checked vectors and what each row is multiplied with (the
 * query itself, or for int8 the query times the scales, computed once per search in float32). */
typedef struct {
  const uint8_t *vectors;
  const float *q, *w;
} dense_query;

typedef struct {
  double score;
  uint64_t id;
} scored;

/* The k best of a stream: a min-heap whose root is the worst kept. */
typedef struct {
  scored *items;
  size_t n, k;
} top_k;

/* Best first, lower id first on equal scores: the order of every ranked list here. */
static inline int better(scored a, scored b) { return a.score > b.score || (a.score == b.score && a.id < b.id); }

KBP_INTERNAL int64_t kbpi_first_non_finite_row(const uint8_t *p, uint64_t rows, uint64_t dim, size_t item);
KBP_INTERNAL kbp_status kbpi_vectors_bytes(kbp_bundle *kb, const uint8_t **out);
KBP_INTERNAL kbp_status kbpi_check_code_padding(kbp_bundle *kb);
KBP_INTERNAL kbp_status kbpi_prepare_query(kbp_bundle *kb, const float *q, dense_query *dq);
KBP_INTERNAL float kbpi_row_score(kbp_bundle *kb, const dense_query *dq, uint64_t r);
KBP_INTERNAL int kbpi_by_rank(const void *pa, const void *pb);
KBP_INTERNAL void kbpi_top_k_offer(top_k *t, double score, uint64_t id);
KBP_INTERNAL void kbpi_top_k_sort(top_k *t);
KBP_INTERNAL kbp_status kbpi_check_query_vector(kbp_bundle *kb, const float *q);
/* The k best rows (among the filter's when f is not NULL, FORMAT.md §2.10.2). */
KBP_INTERNAL kbp_status kbpi_dense_top(kbp_bundle *kb, const dense_query *dq, uint64_t k, const kbp_filter *f, scored **out,
                                       size_t *n);

/* ============ lexical.c: the lexical index */

/* Term t's postings: `visit` (when not NULL) gets each (id, tf) after its pair is checked;
 * *df gets their count. Refuses what Python's postings_of / check_all refuse. */
typedef void (*posting_visitor)(void *ctx, uint64_t id, uint64_t tf);

KBP_INTERNAL kbp_status kbpi_lexical_ready(kbp_bundle *kb);
KBP_INTERNAL kbp_status kbpi_walk_postings(kbp_bundle *kb, uint64_t t, uint64_t *df, posting_visitor visit, void *ctx);
/* keep: NULL, or one byte per chunk (a filter's): postings of chunks with 0 are skipped. */
KBP_INTERNAL kbp_status kbpi_score_lexical(kbp_bundle *kb, const char *question, const uint8_t *keep);
KBP_INTERNAL kbp_status kbpi_lexical_top(kbp_bundle *kb, uint64_t k, scored **out, size_t *n);
/* The context match (FORMAT.md §2.9): the question kbpi_score_lexical scored last (its terms in the
 * vocabulary with their idf); for a text (a part of a chunk's context, its first MAX_CONTEXT_CHARS
 * code points), the idf summed over those terms found in it, in the question's order. */
typedef struct context_query context_query;
KBP_INTERNAL context_query *kbpi_scored_question(kbp_bundle *kb);
KBP_INTERNAL kbp_status kbpi_context_sum(kbp_bundle *kb, context_query *cq, const uint8_t *text, size_t n, double *sum);
KBP_INTERNAL void kbpi_context_query_free(context_query *cq);

/* ============ attributes.c: attributes and filters */

KBP_INTERNAL kbp_status kbpi_attributes_ready(kbp_bundle *kb);
KBP_INTERNAL void kbpi_attributes_free(kbp_bundle *kb);
/* KBP_ERR_ARGUMENT unless f is NULL or was compiled on this handle. */
KBP_INTERNAL kbp_status kbpi_check_filter(kbp_bundle *kb, const kbp_filter *f);
/* One byte per chunk, 1 when kept (NULL for no filter); the kept ids, increasing, and their number. */
KBP_INTERNAL const uint8_t *kbpi_filter_keep(const kbp_filter *f);
KBP_INTERNAL const uint64_t *kbpi_filter_ids(const kbp_filter *f, uint64_t *m);

/* ============ search.c: retrieval settings */

KBP_INTERNAL kbp_status kbpi_retrieval_ready(kbp_bundle *kb);

/* ============ probes.c: probes */

KBP_INTERNAL kbp_status kbpi_probes_ready(kbp_bundle *kb);

/* ============ onnx_check.c: the encoder graph walk */

/* Refuses (KBP_ERR_INVALID, with `part`) the ONNX ModelProto buf[0..n) that check_graph refuses. */
KBP_INTERNAL kbp_status kbpi_check_graph(kbp_bundle *kb, const char *part, const uint8_t *buf, uint64_t n);

/* ============ encoder.c: the query encoder */

/* kbp_open's screen: refuses a bundle whose encoder graph or tokenizer kbp_encoder_get would refuse. */
KBP_INTERNAL kbp_status kbpi_screen_encoder(kbp_bundle *kb);

/* ============ faiss_index.c: the FAISS index walk */

KBP_INTERNAL kbp_status kbpi_verify_index(kbp_bundle *kb);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif /* KBPACK_INTERNAL_H */
