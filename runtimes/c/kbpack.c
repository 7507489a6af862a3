/* libkbpack, kbpack.c: opening a bundle (FORMAT.md §5, steps 1-5) and what it says about itself.
 * kbp_open maps the file (kbp_open_memory copies the caller's bytes), then checks the header
 * (magic, version, checksum, length), the section table (names, bounds, overlaps, the required
 * sections) and the manifest: the counts, dtype and encodings everything else relies on, the
 * int8 scales and binary codes of format 1.4, the JSON types of the objects kbc reads, the
 * sources and the embedder, and screens the query encoder (encoder.c). A section's bytes are checked against its SHA-256 on first use
 * (kbpi_section_bytes). kbp_close frees what every unit allocated; the accessors (kbp_count,
 * kbp_dim, kbp_section_at, ...) report what opening found. */
#include "kbpack_internal.h"

/* The names of the sections this library reads, by their S_ index (kbpack_internal.h). */
KBP_INTERNAL const char *const kbpi_known_sections[N_KNOWN] = {
    "manifest", "vectors", "chunks", "chunk_offsets", "index", "probes", "probe_vectors",
    "lex_vocab", "lex_vocab_offsets", "lex_postings", "lex_postings_offsets", "lex_doc_lengths",
    "encoder_graph", "encoder_tokenizer", /* the encoder's are the names kbc gives; the manifest names them */
    "vector_scales", "vectors_binary",    /* 1.4: the only names the manifest may give them (FORMAT.md §2.7) */
    "attributes",                         /* 1.7: document attributes (FORMAT.md §2.10) */
    "chunk_blocks"};                      /* 1.8: the by-source chunk layout's block table (FORMAT.md §2.1) */

KBP_INTERNAL int kbpi_section_index(const kbp_bundle *kb, const char *name) {
  for (size_t i = 0; i < kb->n_sections; i++)
    if (strcmp(kb->sections[i].name, name) == 0) return (int)i;
  return -1;
}

/* A section's bytes, checked against its SHA-256 on first use. */
KBP_INTERNAL kbp_status kbpi_section_bytes(kbp_bundle *kb, int idx, const uint8_t **out) {
  section *s = &kb->sections[idx];
  if (s->state == UNCHECKED) {
    uint8_t digest[32];
    kbpi_sha256(kb->data + s->offset, s->length, digest);
    s->state = memcmp(digest, s->sha256, 32) == 0 ? CHECKED : DAMAGED;
  }
  if (s->state == DAMAGED) return kbpi_invalid(kb, s->name, "sha256 mismatch: section content is damaged");
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
    if (errno == ENOENT) return kbpi_fail(kb, KBP_ERR_IO, "", "%s: no such file", path);
    if (errno == EISDIR) return kbpi_fail(kb, KBP_ERR_IO, "", "%s: is a directory, not a bundle", path);
    return kbpi_fail(kb, KBP_ERR_IO, "", "%s: cannot open: %s", path, strerror(errno));
  }
  struct stat st;
  kbp_status status = KBP_OK;
  if (fstat(fd, &st) != 0) status = kbpi_fail(kb, KBP_ERR_IO, "", "%s: cannot stat: %s", path, strerror(errno));
  else if (S_ISDIR(st.st_mode)) status = kbpi_fail(kb, KBP_ERR_IO, "", "%s: is a directory, not a bundle", path);
  else if (!S_ISREG(st.st_mode)) status = kbpi_fail(kb, KBP_ERR_IO, "", "%s: not a regular file (a FIFO or device), not a bundle", path);
  else if ((uint64_t)st.st_size < HEADER_SIZE)
    status = kbpi_invalid(kb, "header", "file is %lld bytes, shorter than the %u-byte header (truncated or not a bundle)",
                     (long long)st.st_size, HEADER_SIZE);
  else if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX)
    status = kbpi_fail(kb, KBP_ERR_IO, "", "%s: too large for this address space", path);
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
    if (!copy) status = kbpi_out_of_memory(kb);
    else if (got != kb->size) status = kbpi_fail(kb, KBP_ERR_IO, "", "%s: read error", path);
    if (status != KBP_OK) free(copy);
    else kb->data = copy;
  }
  close(fd);
  return status;
}

static kbp_status read_header(kbp_bundle *kb) {
  const uint8_t *h = kb->data;
  uint8_t digest[32];
  if (memcmp(h, "KBPACK\0\0", 8) != 0) return kbpi_invalid(kb, "header", "bad magic: not a .kbpack file");
  kb->major = (unsigned)le(h + 8, 2);
  kb->minor = (unsigned)le(h + 10, 2);
  if (kb->major > KBP_FORMAT_MAJOR)
    return kbpi_invalid(kb, "header", "format version %u.%u is newer than this reader supports (%d.%d); upgrade libkbpack",
                   kb->major, kb->minor, KBP_FORMAT_MAJOR, KBP_FORMAT_MINOR);
  if (kb->major != KBP_FORMAT_MAJOR)
    return kbpi_invalid(kb, "header", "format version %u.%u is not supported by this reader (%d.%d)", kb->major, kb->minor,
                   KBP_FORMAT_MAJOR, KBP_FORMAT_MINOR);
  kbpi_sha256(h, 96, digest);
  if (memcmp(digest, h + 96, 32) != 0) return kbpi_invalid(kb, "header", "header checksum mismatch: the header is damaged");
  uint64_t count = le(h + 12, 4), table_offset = le(h + 16, 8), file_length = le(h + 24, 8);
  if (file_length != kb->size)
    return kbpi_invalid(kb, "file", "file is %llu bytes but its header says %llu: %s", (unsigned long long)kb->size,
                   (unsigned long long)file_length, kb->size < file_length ? "truncated" : "trailing bytes added");
  if (count > MAX_SECTIONS)
    return kbpi_invalid(kb, "header", "section count %llu exceeds the limit of %u", (unsigned long long)count, MAX_SECTIONS);
  if (table_offset % ALIGN || table_offset < HEADER_SIZE || table_offset > file_length ||
      file_length - table_offset != count * ENTRY_SIZE)
    return kbpi_invalid(kb, "header", "table at offset %llu with %llu entries does not end at the end of the file",
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
  kbpi_sha256(table, kb->n_sections * ENTRY_SIZE, digest);
  if (memcmp(digest, kb->table_sha, 32) != 0) return kbpi_invalid(kb, "table", "section table checksum mismatch: the table is damaged");
  kb->sections = calloc(kb->n_sections ? kb->n_sections : 1, sizeof *kb->sections);
  kb->file_order = calloc(kb->n_sections ? kb->n_sections : 1, sizeof *kb->file_order);
  if (!kb->sections || !kb->file_order) return kbpi_out_of_memory(kb);
  for (size_t i = 0; i < kb->n_sections; i++) {
    const uint8_t *e = table + i * ENTRY_SIZE;
    section *s = &kb->sections[i];
    if (!fixed_ascii(e, 32, s->name) || !fixed_ascii(e + 32, 16, s->encoding))
      return kbpi_invalid(kb, "table", "entry %zu has a malformed name or encoding", i);
    for (int j = 96; j < 128; j++)
      if (e[j]) return kbpi_invalid(kb, "table", "entry %zu (%s) has non-zero reserved bytes", i, s->name);
    for (size_t j = 0; j < i; j++)
      if (strcmp(kb->sections[j].name, s->name) == 0) return kbpi_invalid(kb, "table", "section '%s' appears twice", s->name);
    s->offset = le(e + 48, 8);
    s->length = le(e + 56, 8);
    memcpy(s->sha256, e + 64, 32);
    if (s->offset % ALIGN || s->offset < HEADER_SIZE || s->offset > kb->table_offset || s->length > kb->table_offset - s->offset)
      return kbpi_invalid(kb, s->name, "offset %llu / length %llu lies outside the data area or is misaligned",
                     (unsigned long long)s->offset, (unsigned long long)s->length);
  }
  order_by_offset(kb);
  for (size_t i = 1; i < kb->n_sections; i++) {
    const section *a = &kb->sections[kb->file_order[i - 1]], *b = &kb->sections[kb->file_order[i]];
    if (a->offset + a->length > b->offset) return kbpi_invalid(kb, b->name, "overlaps section '%s'", a->name);
  }
  for (int k = 0; k < N_KNOWN; k++) kb->known[k] = kbpi_section_index(kb, kbpi_known_sections[k]);
  for (int k = S_MANIFEST; k <= S_CHUNK_OFFSETS; k++)
    if (kb->known[k] < 0) return kbpi_invalid(kb, "table", "required section '%s' is missing", kbpi_known_sections[k]);
  return KBP_OK;
}

/* A copy of a JSON string value, NUL-terminated (malloc'd). */
static char *jstrdup(const char *v, const char *end) {
  size_t cap = kbpi_jdecoded_bound(v, end);
  char *out = malloc(cap + 1);
  if (!out) return NULL;
  long n = kbpi_jdecode(v, end, (uint8_t *)out, cap);
  out[n < 0 ? 0 : n] = 0;
  return out;
}

static const char *dtype_encoding(vector_dtype t) { return t == DTYPE_INT8 ? "i8" : t == DTYPE_FLOAT16 ? "f16le" : "f32le"; }

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
    if (!kbpi_jstreq(kbpi_jget(vec, end, "scales"), end, kbpi_known_sections[S_VECTOR_SCALES]))
      return kbpi_invalid(kb, "manifest", "int8 vectors need vectors.scales = \"vector_scales\"");
    if (kb->known[S_VECTOR_SCALES] < 0) return kbpi_invalid(kb, "vector_scales", "section is missing (int8 vectors need it)");
    const section *s = &kb->sections[kb->known[S_VECTOR_SCALES]];
    if (strcmp(s->encoding, "f32le") != 0 || s->length != kb->dim * 4)
      return kbpi_invalid(kb, "vector_scales", "expected %llu f32le values, found %llu bytes (%s)", (unsigned long long)kb->dim,
                     (unsigned long long)s->length, s->encoding);
  }
  const char *binary = kbpi_jget(vec, end, "binary");
  if (!binary || kbpi_jtype(binary) == J_NULL) return KBP_OK; /* Python: vec.get("binary") is None */
  const char *name = kbpi_jget(binary, end, "section"), *c = kbpi_jget(binary, end, "candidates"), *m = kbpi_jget(binary, end, "multiplier");
  if (kbpi_jtype(binary) != J_OBJECT || !kbpi_jstreq(name, end, kbpi_known_sections[S_VECTORS_BINARY]))
    return kbpi_invalid(kb, "manifest", "vectors.binary must be an object naming section \"vectors_binary\"");
  if (kbpi_juint(c, end, &kb->candidates) || kb->candidates < 1 || kb->candidates > MAX_BINARY_CANDIDATES ||
      kbpi_juint(m, end, &kb->multiplier) || kb->multiplier < 1 || kb->multiplier > MAX_BINARY_MULTIPLIER)
    return kbpi_invalid(kb, "manifest", "vectors.binary: candidates must be an integer within [1, %u], multiplier within [1, %u]",
                   MAX_BINARY_CANDIDATES, MAX_BINARY_MULTIPLIER);
  if (kb->known[S_VECTORS_BINARY] < 0) return kbpi_invalid(kb, "vectors_binary", "section is missing (the manifest names it)");
  const section *s = &kb->sections[kb->known[S_VECTORS_BINARY]];
  kb->code_bytes = (size_t)(kb->dim / 8 + (kb->dim % 8 != 0));
  if (strcmp(s->encoding, "b1") != 0 || !is_table(s->length, kb->count, kb->code_bytes))
    return kbpi_invalid(kb, "vectors_binary", "expected %llu x %zu b1 bytes, found %llu bytes (%s)", (unsigned long long)kb->count,
                   kb->code_bytes, (unsigned long long)s->length, s->encoding);
  if (kb->known[S_INDEX] >= 0) /* the codes are the index: two answers to one search would disagree */
    return kbpi_invalid(kb, "index", "a bundle with binary codes stores no FAISS index (FORMAT.md §2.7)");
  kb->binary = 1;
  return KBP_OK;
}

/* The by-source layout's chunk_blocks section (FORMAT.md §2.1): present, u64le pairs, at most one block
 * per chunk and at least one when there are chunks (Python: _block_table_shape). Its values are
 * checked on first use (chunks.c, kbpi_check_block_table). */
static kbp_status block_table_shape(kbp_bundle *kb) {
  if (kb->known[S_CHUNK_BLOCKS] < 0)
    return kbpi_invalid(kb, "chunk_blocks", "missing although the chunks are by source (encoding 'zstd-msgpack-src')");
  const section *t = &kb->sections[kb->known[S_CHUNK_BLOCKS]];
  uint64_t n = t->length / 16;
  if (strcmp(t->encoding, "u64le") != 0 || t->length % 16 || n > kb->count || (kb->count > 0) != (n > 0))
    return kbpi_invalid(kb, "chunk_blocks", "expected 1 to %llu pairs of u64le (none for no chunks), found %llu bytes (%s)",
                        (unsigned long long)kb->count, (unsigned long long)t->length, t->encoding);
  kb->n_blocks = n;
  return KBP_OK;
}

/* format.major/minor, vectors, chunks: the counts everything else relies on (Python: _read_manifest). */
static kbp_status read_counts(kbp_bundle *kb) {
  const char *end = kb->manifest_end, *root = kb->manifest_root;
  const char *fmt = kbpi_jget(root, end, "format"), *vec = kbpi_jget(root, end, "vectors"), *chunks = kbpi_jget(root, end, "chunks");
  const char *fmt_major = kbpi_jget(fmt, end, "major"), *fmt_minor = kbpi_jget(fmt, end, "minor");
  const char *count = kbpi_jget(vec, end, "count"), *dim = kbpi_jget(vec, end, "dim"), *dtype = kbpi_jget(vec, end, "dtype");
  const char *block_size = kbpi_jget(chunks, end, "block_size"), *chunk_count = kbpi_jget(chunks, end, "count");
  if (!fmt_major || !fmt_minor || !count || !dim || !dtype || !block_size || !chunk_count)
    return kbpi_invalid(kb, "manifest", "missing or malformed field: format, vectors or chunks");
  if (!kbpi_jequals_count(fmt_major, end, kb->major) || !kbpi_jequals_count(fmt_minor, end, kb->minor))
    return kbpi_invalid(kb, "manifest", "format disagrees with header %u.%u", kb->major, kb->minor);
  if (kbpi_juint(count, end, &kb->count) || kbpi_juint(dim, end, &kb->dim) || kbpi_juint(block_size, end, &kb->block_size))
    return kbpi_invalid(kb, "manifest", "counts, dim and block_size must be integers >= 0");
  if (!kbpi_jequals_count(chunk_count, end, kb->count)) return kbpi_invalid(kb, "manifest", "chunk count differs from vector count");
  if (kb->dim == 0 || kb->block_size == 0) return kbpi_invalid(kb, "manifest", "counts must be >= 0, dim and block_size > 0");
  if (kbpi_jstreq(dtype, end, "float32")) kb->dtype = DTYPE_FLOAT32;
  else if (kbpi_jstreq(dtype, end, "float16")) kb->dtype = DTYPE_FLOAT16;
  else if (kbpi_jstreq(dtype, end, "int8")) kb->dtype = DTYPE_INT8;
  else return kbpi_invalid(kb, "manifest", "unknown vector dtype"); /* never guessed (FORMAT.md §2.7) */
  if (kb->dim > SIZE_MAX / 4) return kbpi_invalid(kb, "manifest", "dim %llu is too large", (unsigned long long)kb->dim);

  const section *v = &kb->sections[kb->known[S_VECTORS]];
  uint64_t item = dtype_size(kb->dtype);
  if (strcmp(v->encoding, dtype_encoding(kb->dtype)) != 0)
    return kbpi_invalid(kb, "vectors", "encoding '%s' disagrees with manifest dtype %s", v->encoding, kbp_dtype(kb));
  if (!is_table(v->length, kb->count, kb->dim * item))
    return kbpi_invalid(kb, "vectors", "length %llu != %llu x %llu x %llu bytes", (unsigned long long)v->length,
                   (unsigned long long)kb->count, (unsigned long long)kb->dim, (unsigned long long)item);
  kbp_status st = read_vector_extras(kb, vec);
  if (st != KBP_OK) return st;
  kb->n_blocks = kb->count / kb->block_size + (kb->count % kb->block_size != 0);
  const char *chunks_encoding = kb->sections[kb->known[S_CHUNKS]].encoding;
  kb->by_source = strcmp(chunks_encoding, "zstd-msgpack-src") == 0;
  if (kb->by_source && (st = block_table_shape(kb)) != KBP_OK) return st; /* it says how many blocks there are */
  const section *o = &kb->sections[kb->known[S_CHUNK_OFFSETS]];
  if (strcmp(o->encoding, "u64le") != 0 || o->length % 8 || o->length / 8 != kb->n_blocks + 1)
    return kbpi_invalid(kb, "chunk_offsets", "expected %llu u64le entries, found %llu bytes (%s)",
                   (unsigned long long)(kb->n_blocks + 1), (unsigned long long)o->length, o->encoding);
  if (!kb->by_source && strcmp(chunks_encoding, "zstd-msgpack") != 0)
    return kbpi_invalid(kb, "chunks", "unknown encoding '%s'", chunks_encoding);
  if (!kb->by_source && kb->known[S_CHUNK_BLOCKS] >= 0)
    return kbpi_invalid(kb, "chunk_blocks", "present although the chunks are not by source (encoding '%s')", chunks_encoding);
  return KBP_OK;
}

/* The manifest objects kbc reads must have their JSON type when present (Python: _MANIFEST_TYPES). */
static kbp_status check_manifest_types(kbp_bundle *kb) {
  static const char *const objects[] = {"embedder", "chunking", "index", "counts", "lexical", "retrieval", "extraction"};
  static const char *const arrays[] = {"sources", "skipped", "degraded"};
  const char *end = kb->manifest_end, *root = kb->manifest_root;
  for (size_t i = 0; i < sizeof objects / sizeof *objects; i++) {
    const char *v = kbpi_jget(root, end, objects[i]);
    if (v && kbpi_jtype(v) != J_OBJECT) return kbpi_invalid(kb, "manifest", "'%s' is not an object", objects[i]);
  }
  for (size_t i = 0; i < sizeof arrays / sizeof *arrays; i++) {
    const char *v = kbpi_jget(root, end, arrays[i]);
    if (v && kbpi_jtype(v) != J_ARRAY) return kbpi_invalid(kb, "manifest", "'%s' is not an array", arrays[i]);
  }
  kb->m_embedder = kbpi_jget(root, end, "embedder");
  kb->m_lexical = kbpi_jget(root, end, "lexical");
  kb->m_retrieval = kbpi_jget(root, end, "retrieval");
  kb->m_index = kbpi_jget(root, end, "index");
  return KBP_OK;
}

/* Every source must be an object with a path string; their paths are kept for kbp_chunk_get. */
static kbp_status read_sources(kbp_bundle *kb) {
  const char *end = kb->manifest_end, *sources = kbpi_jget(kb->manifest_root, end, "sources"), *entry;
  jcur it;
  size_t n = 0;
  if (!kbpi_jopen(sources, end, '[', &it)) return KBP_OK;
  while (kbpi_jarray_next(&it, &entry)) n++;
  kb->source_paths = calloc(n ? n : 1, sizeof *kb->source_paths);
  if (!kb->source_paths) return kbpi_out_of_memory(kb);
  kbpi_jopen(sources, end, '[', &it);
  while (kbpi_jarray_next(&it, &entry)) {
    const char *path = kbpi_jget(entry, end, "path");
    if (kbpi_jtype(path) != J_STRING)
      return kbpi_invalid(kb, "manifest", "every entry of 'sources' must be an object with a 'path' string");
    kb->source_paths[kb->n_sources++] = path;
  }
  return KBP_OK;
}

static kbp_status read_embedder(kbp_bundle *kb) {
  static const char *const prompts[2] = {"query_prompt", "document_prompt"};
  const char *end = kb->manifest_end, *e = kb->m_embedder;
  for (int i = 0; i < 2; i++) {
    const char *p = kbpi_jget(e, end, prompts[i]);
    /* every query is tokenised with the prompt: a 30 MB one would abort a tokenizer */
    if (p && (kbpi_jtype(p) != J_STRING || kbpi_jstring_chars(p, end) > MAX_PROMPT_CHARS))
      return kbpi_invalid(kb, "manifest", "embedder.%s must be a string of at most %u characters", prompts[i], MAX_PROMPT_CHARS);
  }
  const char *dim = kbpi_jget(e, end, "dim");
  if (dim && !kbpi_jequals_count(dim, end, kb->dim))
    return kbpi_invalid(kb, "manifest", "embedder.dim disagrees with the %llu-d vectors", (unsigned long long)kb->dim);
  const char *name = kbpi_jget(e, end, "name");
  kb->embedder_name = kbpi_jtype(name) == J_STRING ? jstrdup(name, end) : calloc(1, 1);
  return kb->embedder_name ? KBP_OK : kbpi_out_of_memory(kb);
}

static kbp_status read_manifest(kbp_bundle *kb) {
  int idx = kb->known[S_MANIFEST];
  const section *s = &kb->sections[idx];
  const uint8_t *bytes = NULL;
  kbp_status st;
  if (strcmp(s->encoding, "json") != 0) return kbpi_invalid(kb, "manifest", "unknown encoding '%s'", s->encoding);
  if (s->length > MAX_MANIFEST_BYTES)
    return kbpi_invalid(kb, "manifest", "%llu bytes exceeds the %llu-byte limit", (unsigned long long)s->length,
                   (unsigned long long)MAX_MANIFEST_BYTES);
  if ((st = kbpi_section_bytes(kb, idx, &bytes)) != KBP_OK) return st;
  kb->manifest = (const char *)bytes;
  kb->manifest_end = kb->manifest + s->length;
  if (kbpi_json_check(kb->manifest, s->length, &kb->manifest_root)) return kbpi_invalid(kb, "manifest", "invalid JSON (or not UTF-8)");
  if (kbpi_jtype(kb->manifest_root) != J_OBJECT) return kbpi_invalid(kb, "manifest", "is not a JSON object");
  if ((st = read_counts(kb)) != KBP_OK) return st;
  if ((st = check_manifest_types(kb)) != KBP_OK) return st;
  if ((st = read_sources(kb)) != KBP_OK) return st;
  return read_embedder(kb);
}

/* kbp_open and kbp_open_memory after the bytes are in kb->data: the checks of FORMAT.md §5 steps 1-5,
 * then the encoder's screen (§5.1: a bundle whose encoder would be refused opens for nothing, as in
 * Python, where a lexical search still answered). */
static kbp_status open_checked(kbp_bundle *kb, kbp_status st, kbp_bundle **out, kbp_error *err) {
  if (st == KBP_OK) st = read_header(kb);
  if (st == KBP_OK) st = read_table(kb);
  if (st == KBP_OK) st = read_manifest(kb);
  if (st == KBP_OK) st = kbpi_screen_encoder(kb);
  if (st == KBP_OK && !(kb->dctx = ZSTD_createDCtx())) st = kbpi_out_of_memory(kb);
  *err = kb->err;
  if (st != KBP_OK) {
    kbp_close(kb);
    return st;
  }
  kbpi_clear_error(&kb->err);
  kbpi_clear_error(err);
  *out = kb;
  return KBP_OK;
}

kbp_status kbp_open(const char *path, kbp_bundle **out, kbp_error *err) {
  kbp_error scratch;
  if (!err) err = &scratch;
  if (out) *out = NULL;
  if (!path || !out) return kbpi_report(err, KBP_ERR_ARGUMENT, "", "kbp_open: path and out must not be NULL");
  kbp_bundle *kb = calloc(1, sizeof *kb);
  if (!kb) return kbpi_report(err, KBP_ERR_MEMORY, "", "out of memory");
  kb->block.index = -1;
  return open_checked(kb, map_file(kb, path), out, err);
}

kbp_status kbp_open_memory(const void *data, size_t len, kbp_bundle **out, kbp_error *err) {
  kbp_error scratch;
  if (!err) err = &scratch;
  if (out) *out = NULL;
  if ((!data && len) || !out) return kbpi_report(err, KBP_ERR_ARGUMENT, "", "kbp_open_memory: data and out must not be NULL");
  kbp_bundle *kb = calloc(1, sizeof *kb);
  if (!kb) return kbpi_report(err, KBP_ERR_MEMORY, "", "out of memory");
  kb->block.index = -1;
  kbp_status st = KBP_OK;
  if (len < HEADER_SIZE) /* the message kbp_open gives a file this short */
    st = kbpi_invalid(kb, "header", "file is %zu bytes, shorter than the %u-byte header (truncated or not a bundle)", len, HEADER_SIZE);
  else if (!(kb->data = malloc(len))) /* a copy of exactly len bytes: the caller's buffer stays the caller's */
    st = kbpi_out_of_memory(kb);
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
  free(kb->lex.summed[0]);
  free(kb->lex.summed[1]);
  kbpi_context_query_free(kb->lex.question);
  free(kb->probes.items);
  free(kb->probe_strings);
  free(kb->page_strings);
  kbpi_attributes_free(kb);
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
