/* libkbpack: open, verify and search .kbpack knowledge bases (schemas/FORMAT.md) from C, C++,
 * JNI or Swift. C99; depends on libzstd, libc and libm only.
 *
 *   kbp_bundle *kb; kbp_error err;
 *   if (kbp_open("kb.kbpack", &kb, &err) != KBP_OK) { fprintf(stderr, "%s\n", err.message); return 1; }
 *   kbp_hit hits[5]; size_t n;
 *   if (kbp_search(kb, query_vector, "How do I rotate the logs?", 5, KBP_MODE_DEFAULT, hits, &n) == KBP_OK)
 *     for (size_t i = 0; i < n; i++) {
 *       kbp_chunk c;
 *       if (kbp_chunk_get(kb, hits[i].id, &c) == KBP_OK) printf("%.3f %s: %s\n", hits[i].score, c.source_path.s, c.text.s);
 *     }
 *   kbp_close(kb);
 *
 * Trust. A bundle is untrusted input (FORMAT.md §5.1). Whatever its bytes, every function returns
 * in bounded time and memory with KBP_OK or an error; none crashes on a malformed file. kbp_open
 * checks the header, the table, the manifest and the section lengths; every other section's
 * SHA-256 is checked the first time it is used, so nothing unverified is ever handed out, and
 * kbp_verify checks everything at once (what `kbc inspect --verify` checks). The one thing the
 * library cannot guard against is the file changing under it: the vectors are mmap'd, and a file
 * truncated by another process while mapped raises SIGBUS, as with any mmap reader.
 *
 * Errors. Functions that can fail return a kbp_status. On failure the handle's error
 * (kbp_last_error) holds the status, the damaged part ("header", "table", a section name such as
 * "chunks" or "lex_postings", or "file" for damage outside every section) and one line of text
 * beginning with that part: "chunks: block 3 cannot be decoded: ...". kbp_open, which has no
 * handle yet, fills the kbp_error it is given instead. A damaged section stays damaged: later
 * calls that need it fail the same way without hashing it again. Every function taking a
 * kbp_bundle * needs a handle from kbp_open (kbp_close, kbp_search and kbp_verify accept NULL).
 *
 * Ownership. The library owns everything it returns through pointers (strings, chunk fields,
 * probe inputs); each is valid until the call the function's comment names, or kbp_close. Arrays
 * the caller passes in (query vectors, hit buffers) stay the caller's and are only read or
 * written during the call.
 *
 * Threads. A handle is not thread-safe: it caches the last chunk block and keeps scratch
 * buffers. Use one handle per thread (handles on the same file share its pages through mmap,
 * so a second handle costs little) or serialise calls on a shared one. Distinct handles never
 * share mutable state; the library has no globals.
 *
 * Floating point. BM25 scores are bit-identical to kbc's Python reader when both use the same
 * libm `log` (FORMAT.md §2.4). Build without -ffast-math and without FMA contraction (-std=c99
 * keeps GCC's off; the source turns clang's off).
 */
#ifndef KBPACK_H
#define KBPACK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The newest format version this library reads; it reads every 1.x file and skips sections
 * it does not know (FORMAT.md §4). */
#define KBP_FORMAT_MAJOR 1
#define KBP_FORMAT_MINOR 8

typedef struct kbp_bundle kbp_bundle; /* an open bundle; opaque */

typedef enum kbp_status {
  KBP_OK = 0,
  KBP_ERR_IO = 1,          /* the file cannot be opened or read, or is not a regular file */
  KBP_ERR_INVALID = 2,     /* the bundle is damaged or malformed; the error names the part */
  KBP_ERR_ARGUMENT = 3,    /* the caller passed something wrong: NULL, an id out of range, ... */
  KBP_ERR_NOT_PRESENT = 4, /* the bundle lacks what was asked for: a lexical index, probes */
  KBP_ERR_MEMORY = 5       /* an allocation failed */
} kbp_status;

#define KBP_PART_MAX 33     /* a section name is at most 32 ASCII characters, plus NUL */
#define KBP_MESSAGE_MAX 256 /* longer messages are cut */

typedef struct kbp_error {
  kbp_status status;
  char part[KBP_PART_MAX];       /* "header", "table", a section name, "file"; "" when not the bundle's fault */
  char message[KBP_MESSAGE_MAX]; /* one line without a newline, starting with "part: " when part is set */
} kbp_error;

/* A short English name of a status ("ok", "invalid bundle", ...); a static string. */
const char *kbp_status_name(kbp_status status);

/* ---------------------------------------------------------------- opening and verifying */

/* Opens and maps `path` and runs the cheap checks of FORMAT.md §5 (steps 1-5): header, table,
 * manifest (JSON, types, limits), the lengths of vectors, chunk_offsets and (format 1.4)
 * vector_scales and vectors_binary, the binary search settings, and a stored query encoder (format
 * 1.3) walked as kbp_encoder_get walks it, so a bundle kbc refuses is refused here too, for every
 * call (FORMAT.md §5.1). On success *out is a new
 * handle to free with kbp_close. On failure *out is NULL and `err` (when not NULL) says why:
 * KBP_ERR_IO (missing, a directory, a FIFO, unreadable) or KBP_ERR_INVALID. */
kbp_status kbp_open(const char *path, kbp_bundle **out, kbp_error *err);

/* kbp_open for a bundle already in memory (an app asset, a download buffer, a fuzzer's input):
 * the same checks and errors, on a private copy of data[0..len) that the handle owns, so the caller
 * may free or reuse its buffer as soon as this returns. The copy costs len bytes of heap until
 * kbp_close; for a large bundle on disk prefer kbp_open, which maps the file instead. */
kbp_status kbp_open_memory(const void *data, size_t len, kbp_bundle **out, kbp_error *err);

/* Unmaps the file and frees everything the handle owns. NULL is allowed. */
void kbp_close(kbp_bundle *kb);

/* The error of the last call on this handle (status KBP_OK if it succeeded: every call that can
 * fail clears it first). Valid until the next call on the handle. */
const kbp_error *kbp_last_error(const kbp_bundle *kb);

/* Every check `kbc inspect --verify` makes: each section's SHA-256 (again, in file order),
 * the whole-body SHA-256, chunk_offsets strictly increasing, every chunk block decoding to
 * exactly its chunk count, the probes and the lexical index well formed, float vectors and probe
 * vectors finite, int8's scales >= 0 with 128 x scale finite, the binary codes' unused bits zero,
 * the query encoder (format 1.3): its manifest record field by field (manifest.schema.json) and
 * tokenizer.json's size, depth and shape, the ONNX graph walked as runtimes/python/kbpack_runtime/guard.py walks it
 * (allowed fields, operators and domains only, no external data or subgraphs, sizes held), the stored FAISS
 * index walked as kbc/format/faiss_guard.py walks it (the types kbc writes, every declared size against the
 * bytes and FORMAT.md §5.1's budgets, ids each row once, graph links within the vectors; it is never
 * loaded, so a caller may hand a verified bundle's index to FAISS) with search parameters of its
 * type, and the retrieval settings. KBP_OK means intact; KBP_ERR_INVALID names the first damaged
 * part. Reads the whole file: seconds for a large bundle. */
kbp_status kbp_verify(kbp_bundle *kb);

/* ---------------------------------------------------------------- what the bundle holds */

void kbp_format_version(const kbp_bundle *kb, unsigned *major, unsigned *minor);
uint64_t kbp_count(const kbp_bundle *kb);      /* number of chunks (= vectors) */
size_t kbp_dim(const kbp_bundle *kb);          /* vector dimension */
const char *kbp_dtype(const kbp_bundle *kb);   /* "float32", "float16" or (format 1.4) "int8" */
uint64_t kbp_block_size(const kbp_bundle *kb); /* chunks per compressed block */

/* 1 if the bundle has binary codes (format 1.4, section vectors_binary), which make every dense
 * search two-stage (see kbp_search), else 0; *candidates and *multiplier (each may be NULL) get
 * the manifest's C (1..65536) and M (1..1024), or 0 without codes. */
int kbp_binary(const kbp_bundle *kb, unsigned *candidates, unsigned *multiplier);

/* manifest.embedder.name, NUL-terminated ("" when absent or not a string). Valid until kbp_close.
 * The text is the bundle author's: escape control characters before printing it to a terminal. */
const char *kbp_embedder_name(const kbp_bundle *kb);

/* The manifest's JSON text, checked (UTF-8, one JSON object), NOT NUL-terminated; *len gets its
 * length. Points into the mapped file; valid until kbp_close. For keys this API does not expose. */
const char *kbp_manifest_json(const kbp_bundle *kb, size_t *len);

/* 1 if the bundle declares a lexical (BM25) index (sections or manifest.lexical), else 0. */
int kbp_has_lexical(const kbp_bundle *kb);

typedef struct kbp_section {
  const char *name;      /* NUL-terminated, printable ASCII */
  const char *encoding;  /* NUL-terminated, printable ASCII */
  uint64_t offset, length;
  const uint8_t *sha256; /* 32 bytes, as the table records it */
  int known;             /* 1 if this library reads it, 0 if it is skipped (FORMAT.md §4) */
} kbp_section;

size_t kbp_section_count(const kbp_bundle *kb);
/* Section i in file order (0 <= i < kbp_section_count). Pointers valid until kbp_close. */
kbp_status kbp_section_at(const kbp_bundle *kb, size_t i, kbp_section *out);

/* ---------------------------------------------------------------- chunks */

/* A string from the bundle: NUL-terminated UTF-8 (which may hold NULs of its own: use len), or
 * s == NULL and len == 0 when the chunk has no such field. */
typedef struct kbp_string {
  const char *s;
  size_t len;
} kbp_string;

/* Which integer fields a chunk record holds (kbp_chunk.fields); absent ones read 0. */
#define KBP_FIELD_SOURCE     (1u << 0)
#define KBP_FIELD_SEQ        (1u << 1)
#define KBP_FIELD_PAGE_START (1u << 2)
#define KBP_FIELD_PAGE_END   (1u << 3)
#define KBP_FIELD_CHAR_START (1u << 4)
#define KBP_FIELD_CHAR_END   (1u << 5)
#define KBP_FIELD_TOKENS     (1u << 6)

typedef struct kbp_chunk {
  uint64_t id;
  kbp_string text;        /* what was embedded, without any prompt; always present */
  kbp_string context;     /* what the chunk cannot say about itself (title, path words), or absent */
  kbp_string source_path; /* manifest sources[source].path; "?" when source is absent or out of range */
  int64_t source;         /* index into manifest sources */
  int64_t seq;            /* ordinal of the chunk within its source */
  int64_t page_start, page_end; /* 1-based physical pages */
  int64_t char_start, char_end; /* span in the source's extracted text, in code points */
  int64_t tokens;         /* embedder tokens, prompt and special tokens included */
  kbp_string label_start, label_end; /* the document's own page labels ("iv"), or absent */
  kbp_string record;      /* record id for JSONL corpora, or absent */
  unsigned fields;        /* KBP_FIELD_* bits of the integer fields present */
} kbp_chunk;

/* Chunk i (0 <= i < kbp_count) with its provenance. Decompresses and checks the block holding it
 * unless that block is the one decoded last (one block is cached). Integers beyond int64 read as
 * INT64_MAX. The strings are valid until the next kbp_chunk_get or kbp_close on the handle. */
kbp_status kbp_chunk_get(kbp_bundle *kb, uint64_t i, kbp_chunk *out);

/* ---------------------------------------------------------------- search */

typedef enum kbp_mode {
  KBP_MODE_DEFAULT = 0, /* the manifest's retrieval.default_mode; dense without a lexical index */
  KBP_MODE_DENSE = 1,   /* inner product with the stored vectors (exact) */
  KBP_MODE_LEXICAL = 2, /* BM25 over the question's words (FORMAT.md §2.4) */
  KBP_MODE_HYBRID = 3   /* both, fused as the manifest's retrieval object says (FORMAT.md §2.5) */
} kbp_mode;

typedef struct kbp_hit {
  uint64_t id;  /* chunk id */
  double score; /* inner product (dense), BM25 (lexical) or fused score (hybrid); higher is better */
} kbp_hit;

/* The mode kbp_search would use for `requested` (resolves KBP_MODE_DEFAULT). Fails with
 * KBP_ERR_NOT_PRESENT for lexical or hybrid on a bundle without a lexical index, and with
 * KBP_ERR_INVALID when the retrieval settings or the lexical index are malformed. */
kbp_status kbp_resolve_mode(kbp_bundle *kb, kbp_mode requested, kbp_mode *used);

/* The k best chunks, best first, lower id first on equal scores, as kbc's Python reader ranks them:
 * writes *n_hits <= k entries to hits[0..k). The dense score of a chunk is the inner product of
 * query_vector with its stored vector, in float32, whatever the dtype: float16 rows are widened,
 * int8 rows (format 1.4) are multiplied with the query times the scales, q[d] x scale[d], computed
 * once per search (the same number to float32 rounding). A score that is no number (only a forged
 * bundle's overflowing values make one) ranks last, as -infinity.
 *   query_vector: kbp_dim floats, the question embedded as the bundle's embedder records (query
 *     prompt, pooling, normalisation); needed by dense and hybrid, ignored (may be NULL) by lexical.
 *   question: NUL-terminated UTF-8 (invalid bytes act as separators), cut at 1,000,000 code
 *     points and 1,024 distinct terms; needed by lexical and hybrid, ignored (may be NULL) by dense.
 * Hybrid search with a question that shares no word with the bundle returns the dense list.
 * With tmm or minmax fusion and the manifest's standout_weighting true (format 1.8, FORMAT.md
 * §2.5.1) the lexical list's weight is set per question from how far each list's best stands out.
 * Without binary codes dense search is exact and reads every vector: 100,000 x 384 take about 9 ms
 * (float32), 3 ms (float16) or 2.3 ms (int8, both with AVX-512; kernels.c) on one core of an AMD EPYC
 * at -O2 (bench/simd_scan.py, 2026-12-07). With codes
 * (format 1.4, kbp_binary) it is two-stage, exactly as FORMAT.md §2.7 says: the Hamming distance
 * of every code to the query's sign bits (q[d] > 0), the R = min(count, max(M x k, C)) nearest rows
 * (lower id first on equal distances) scored as above, the k best of them; hybrid search takes its
 * dense list of max(k, depth) that way. That reads count x dim / 8 bytes of codes and R rows:
 * about 0.7 ms for those 100,000 x 384. The first search also checks the SHA-256 of the sections it
 * reads (vectors, vector_scales, vectors_binary), that every float vector is finite and every
 * scale >= 0 with 128 x scale finite (about 0.6 s for those 100,000 x 384 float32). With codes it keeps 4 bytes
 * per chunk for their distances until kbp_close; lexical search keeps 8 for BM25 scores.
 * Hybrid search with tmm or minmax fusion and a context match (format 1.6, FORMAT.md §2.9: the
 * manifest's path_weight or heading_weight above 0) also reads every candidate's chunk record (its
 * block decompressed and checked, as kbp_chunk_get does: a damaged chunks section fails the search)
 * and each candidate source's path once, its first 4,096 code points tokenised. */
kbp_status kbp_search(kbp_bundle *kb, const float *query_vector, const char *question, size_t k,
                      kbp_mode mode, kbp_hit *hits, size_t *n_hits);

/* ---------------------------------------------------------------- pages as the unit (FORMAT.md §2.8) */

typedef enum kbp_unit {
  KBP_UNIT_DEFAULT = 0, /* the manifest's retrieval.unit (what kbp_default_unit says) */
  KBP_UNIT_CHUNK = 1,   /* the best chunks, each on its own: kbp_search */
  KBP_UNIT_PAGE = 2     /* the best pages, each once with its best chunks: kbp_search_pages */
} kbp_unit;

/* The unit a query of this bundle returns unless it asks for one: the manifest's retrieval.unit
 * (format 1.5), KBP_UNIT_CHUNK when absent (bundles before 1.5, or without a retrieval object).
 * Fails with KBP_ERR_INVALID when the retrieval settings are malformed (as kbp_resolve_mode does). */
kbp_status kbp_default_unit(kbp_bundle *kb, kbp_unit *unit);

/* The manifest's page settings (each pointer may be NULL): retrieval.page_depth P (1..10000,
 * default 100), page_share s (0..1, default 0) and page_chunks C (1..100, default 3). Fails like
 * kbp_default_unit. */
kbp_status kbp_page_settings(kbp_bundle *kb, size_t *page_depth, double *page_share, size_t *page_chunks);

#define KBP_MAX_PAGE_CHUNKS 100 /* the largest retrieval.page_chunks */

typedef struct kbp_page_hit {
  double score;      /* the page's score: its first chunk's plus page_share x the others' (each >= 0) */
  int64_t source;    /* the chunks' `source`: index into manifest sources (0 when the chunk has none) */
  kbp_string record; /* their `record` (JSONL corpora), or s == NULL and len == 0 when they have none */
  int64_t page;      /* their `page_start`: the 1-based physical page (0 when absent; beyond int64: INT64_MAX) */
  size_t n_chunks;   /* 1 .. page_chunks */
  uint64_t chunk_ids[KBP_MAX_PAGE_CHUNKS];  /* the page's best chunks among the ranked ones, best first */
  double chunk_scores[KBP_MAX_PAGE_CHUNKS]; /* their scores, as kbp_search gives them */
} kbp_page_hit;

/* The k best pages, best first, as kbc's Python reader ranks them (KnowledgeBase.rank_pages,
 * FORMAT.md §2.8): writes *n_pages <= k entries to pages[0..k). A chunk's page is the triple
 * (source, record or none, page_start) of its record. The mode's best P = page_depth chunks are
 * taken as kbp_search(kb, query_vector, question, P, mode) takes them (hybrid: the fused list of P,
 * each list giving max(P, depth) candidates), whatever k is, so at most P pages come back; they
 * are grouped by page, each page's members ordered by score (higher first, lower id first on
 * equal scores); a page scores m1 + s x (max(m2, 0) + max(m3, 0) + ...), summed left to right in
 * double precision (exactly m1 when s is 0); pages rank by score, higher first, the page whose
 * first chunk has the lower id first on equal scores; each comes with its first C members.
 * Arguments, modes and errors are kbp_search's (the question and query vector the mode needs); the
 * chunk blocks holding the P chunks are read too (KBP_ERR_INVALID "chunks: ..." when one is damaged).
 * The record strings are the library's, valid until the next kbp_search_pages or kbp_close on the
 * handle; kbp_chunk_get(kb, pages[i].chunk_ids[0], ...) gives the page's source path, labels and
 * text. Besides kbp_search's memory, it allocates about 100 bytes per ranked chunk during the call
 * and keeps the returned pages' records. */
kbp_status kbp_search_pages(kbp_bundle *kb, const float *query_vector, const char *question, size_t k,
                            kbp_mode mode, kbp_page_hit *pages, size_t *n_pages);

/* ---------------------------------------------------------------- scoped search: attributes and filters (FORMAT.md §2.10)
 *
 * A bundle of format 1.7 records attributes of its documents (kind, title, front matter, JSONL
 * metadata, what the builder declared). A filter is one or more conditions, all of which a chunk
 * must meet, each one string as `kbc query --where` takes it:
 *   "path:GLOB"             its source's path matches GLOB, segment by segment: a segment of two
 *                           stars matches any number of folders, `*` and `?` match within one
 *                           (the glob "manuals/x200/" followed by two stars: everything under it)
 *   "product=x200"          equal (a list attribute: holds it); "product=x200,x300": any of them
 *   "year>=2022"            >=, <=, >, < on integer and date (YYYY-MM-DD) attributes
 * The filter applies inside the search: dense scores only matching rows, lexical skips other
 * chunks' postings, hybrid fuses lists drawn from matching chunks, pages group matching chunks; so
 * whenever at least k chunks match, dense and hybrid return k hits (lexical: k among those that
 * share a word with the question), as kbc's Python reader does, hit for hit.
 *
 *   const char *where[] = {"product=x200", "year>=2022"};
 *   kbp_filter *f;
 *   if (kbp_filter_compile(kb, where, 2, &f) != KBP_OK) { puts(kbp_last_error(kb)->message); ... }
 *   kbp_search_filtered(kb, q, question, 5, KBP_MODE_DEFAULT, f, hits, &n);  (n = min(5, matched))
 *   kbp_filter_free(f);
 *
 * For bindings (JNI, Swift): compile once per scope and reuse it across questions; a filter belongs
 * to the handle it was compiled on (another handle refuses it) and must be freed before kbp_close. */

typedef struct kbp_filter kbp_filter; /* a compiled filter; opaque */

/* The bundle's attribute keys: *n gets their number. KBP_ERR_NOT_PRESENT for a bundle without
 * attributes (before format 1.7); KBP_ERR_INVALID, naming "attributes" or "manifest", when the
 * attributes section or its manifest object is malformed (checked whole on first use). */
kbp_status kbp_attribute_count(kbp_bundle *kb, size_t *n);

/* Key i (0 <= i < kbp_attribute_count): its name and its type ("string", "list", "integer" or
 * "date"); NUL-terminated, valid until kbp_close. Either pointer may be NULL. */
kbp_status kbp_attribute_key(kbp_bundle *kb, size_t i, const char **name, const char **type);

/* Compiles n conditions (1..64, NUL-terminated UTF-8; ANDed) against the bundle's attributes. On
 * success *out is a new filter to free with kbp_filter_free. A condition the bundle cannot apply
 * is KBP_ERR_ARGUMENT with one line naming it (an unknown key also lists the bundle's keys; a bundle
 * without attributes is refused, never silently searched whole): a bad operator, an empty key or
 * value, an operator other than = on a string or list key, a value that is no integer or date where
 * the key is one. A damaged attributes section is KBP_ERR_INVALID. Time and memory: one pass over
 * the attribute rows, plus one byte and 8 bytes per chunk kept with the filter. */
kbp_status kbp_filter_compile(kbp_bundle *kb, const char *const *conditions, size_t n, kbp_filter **out);

/* How many chunks the filter keeps (m); 0 for NULL. */
uint64_t kbp_filter_matched(const kbp_filter *f);

/* 1 when the filter keeps chunk id, else 0. */
int kbp_filter_keeps(const kbp_filter *f, uint64_t id);

/* Frees a filter; NULL is allowed. */
void kbp_filter_free(kbp_filter *f);

/* kbp_search and kbp_search_pages within a filter (NULL: the whole bundle, exactly kbp_search and
 * kbp_search_pages): the same arguments, errors and ranking over the filter's chunks only
 * (FORMAT.md §2.10.2). Dense search scores only the m kept rows (with binary codes: the
 * R = min(m, max(M x k, C)) kept rows nearest by Hamming distance, rescored); BM25 scores keep the
 * whole bundle's N, df and average length, so a chunk scores the same with or without a filter. A
 * filter compiled on another handle is KBP_ERR_ARGUMENT. */
kbp_status kbp_search_filtered(kbp_bundle *kb, const float *query_vector, const char *question, size_t k,
                               kbp_mode mode, const kbp_filter *filter, kbp_hit *hits, size_t *n_hits);
kbp_status kbp_search_pages_filtered(kbp_bundle *kb, const float *query_vector, const char *question, size_t k,
                                     kbp_mode mode, const kbp_filter *filter, kbp_page_hit *pages, size_t *n_pages);

/* ---------------------------------------------------------------- answer strength (FORMAT.md §2.11) */

/* How strongly the bundle answers a question: *strength gets the inner product of query_vector with
 * chunk first_id's stored vector (the cosine, for the normalised embedders kbc builds with), where
 * first_id is the first hit of any search (a page's first chunk). A hybrid score is normalised per
 * question (its best is about 1 whatever it found); this one means the same across questions.
 * *confident gets 1 when it reaches the manifest's retrieval.min_strength, 0 under it ("no confident
 * answer": the bundle may have nothing on this; the hits are still the best there are), -1 when the
 * bundle records no threshold (built with another embedder than kbc's default and no --min-score).
 * Fails with KBP_ERR_ARGUMENT (NULL pointer, id out of range) or as a dense search does. */
kbp_status kbp_answer_strength(kbp_bundle *kb, const float *query_vector, uint64_t first_id, double *strength,
                               int *confident);
/* The manifest's retrieval.min_strength (format 1.8); KBP_ERR_NOT_PRESENT when it records none. */
kbp_status kbp_min_strength(kbp_bundle *kb, double *min_strength);

/* ---------------------------------------------------------------- probes (FORMAT.md §2.3) */

/* Number of embedder probes; KBP_ERR_NOT_PRESENT for bundles without them (format 1.0). */
kbp_status kbp_probe_count(kbp_bundle *kb, size_t *n);

typedef struct kbp_probe {
  kbp_string kind;  /* "short", "at_token_limit", ... */
  kbp_string input; /* prompt + text: exactly what an engine must embed, as it embeds a question */
} kbp_probe;

/* Probe i. The strings are valid until the next kbp_probe_get or kbp_close on the handle. */
kbp_status kbp_probe_get(kbp_bundle *kb, size_t i, kbp_probe *out);

typedef struct kbp_probe_result {
  size_t count;       /* probes compared */
  double threshold;   /* probes.threshold (0.99 when absent; kbp_open refuses one that is not a number in -1..1) */
  double min_cosine;  /* the lowest cosine */
  double mean_cosine;
  size_t worst;       /* index of the probe with the lowest cosine (the first of equals) */
  int passed;         /* 1 when min_cosine >= threshold */
} kbp_probe_result;

/* Compares an engine's probe vectors (n_vectors x kbp_dim float32, row i embedding probe i's
 * input) with the bundle's reference vectors: cosine per probe, in double precision. `cosines`
 * may be NULL or receive n_vectors values. n_vectors must equal kbp_probe_count (else
 * KBP_ERR_ARGUMENT). A failed check is KBP_OK with result->passed == 0. */
kbp_status kbp_probe_check(kbp_bundle *kb, const float *vectors, size_t n_vectors, double *cosines,
                           kbp_probe_result *result);

/* ---------------------------------------------------------------- the query encoder (FORMAT.md §2.6) */

typedef struct kbp_encoder {
  const uint8_t *graph;       /* the ONNX graph that made the vectors (format 1.3, kbc build --with-encoder) */
  size_t graph_len;
  const char *tokenizer_json; /* its Hugging Face tokenizer.json; NOT NUL-terminated */
  size_t tokenizer_len;
  const char *settings_json;  /* the manifest's `encoder` object (inputs, output, query_prompt, ...); NOT NUL-terminated */
  size_t settings_len;
} kbp_encoder;

/* The stored query encoder, checked as kbc checks it: both sections present with encodings onnx and
 * json, their SHA-256, the graph's SHA-256 equal to encoder.graph_sha256, the graph walked as
 * runtimes/python/kbpack_runtime/guard.py walks it (FORMAT.md §5.1: what onnxruntime may be handed), the
 * tokenizer a JSON object within §5.1's bounds.
 * Pointers into the mapped file, valid until kbp_close. KBP_ERR_NOT_PRESENT without an encoder. */
kbp_status kbp_encoder_get(kbp_bundle *kb, kbp_encoder *out);

/* ---------------------------------------------------------------- updates: .kbdelta (FORMAT.md §8) */

/* Rebuilds the new bundle from the old one and a delta made by `kbc delta OLD NEW`, into out_path.
 * Checked in this order, the first failure refused with KBP_ERR_INVALID and err->part naming it (kbc apply
 * refuses with the same part): "header" (magic, version, its SHA-256, method, sizes within 4 GiB),
 * "payload" (length against the file, SHA-256, one zstd frame of the declared size), "base" (old_path is
 * not the bundle the delta was made from: size, then whole-file SHA-256), "result" (the rebuilt bytes fail
 * the new bundle's SHA-256). Nothing exists under out_path's name until the result is verified: it is
 * written to a temporary file in out_path's folder, fsynced, and renamed over out_path (which may be
 * old_path itself); on failure, or a kill, the old bundle is untouched. Bounded memory: both inputs and the
 * output are memory-mapped; the zstd decoder reads the old bundle in place and writes no more than the
 * declared size. KBP_ERR_IO for a missing or unreadable file or an unwritable folder. */
kbp_status kbp_apply_delta(const char *old_path, const char *delta_path, const char *out_path, kbp_error *err);

#ifdef __cplusplus
}
#endif

#endif /* KBPACK_H */
