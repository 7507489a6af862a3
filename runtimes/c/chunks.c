/* libkbpack, chunks.c: the chunks section (FORMAT.md §2.1). Each block is one zstd frame holding
 * a msgpack array of exactly `block_size` maps (the last block: the remainder). The subset kbc
 * writes and reads (Python: _unpack_block, _block): one array, maps of at most 64 entries with
 * str (or bin, ignored) keys and scalar values, strings valid UTF-8, no extension types, nothing
 * after the array. A frame must declare its decompressed size, bounded before any allocation;
 * the last block read stays decompressed, with where each record starts. kbp_chunk_get copies
 * one chunk's fields out.
 *
 * Two layouts (by the chunks section's encoding). zstd-msgpack: block b holds chunks
 * [b x block_size, (b + 1) x block_size). zstd-msgpack-src (1.8, "by source"): a block holds one
 * source's chunks, the chunk_blocks table names each block's first chunk id and its source, and the
 * records hold no `source` (the table's is handed out as theirs): adding or removing a document
 * leaves every other document's blocks byte for byte as they were, so an update's delta is small. */
#include "kbpack_internal.h"

KBP_INTERNAL kbp_status kbpi_check_block_table(kbp_bundle *kb) {
  if (!kb->by_source) return KBP_OK;
  const uint8_t *t = NULL;
  kbp_status st = kbpi_section_bytes(kb, kb->known[S_CHUNK_BLOCKS], &t);
  if (st != KBP_OK || kb->blocks_checked) return st;
  int ok = kb->n_blocks == 0 || le(t, 8) == 0; /* no blocks only for no chunks (kbpack.c, block_table_shape) */
  for (uint64_t b = 0; ok && b < kb->n_blocks; b++) { /* each block holds 1 to block_size chunks */
    uint64_t first = le(t + 16 * b, 8), next = b + 1 < kb->n_blocks ? le(t + 16 * (b + 1), 8) : kb->count;
    ok = next > first && next - first <= kb->block_size;
  }
  if (!ok)
    return kbpi_invalid(kb, "chunk_blocks", "first chunk ids must rise from 0, each block holding 1 to %llu of the %llu chunks",
                        (unsigned long long)kb->block_size, (unsigned long long)kb->count);
  for (uint64_t b = 0; b < kb->n_blocks; b++) /* one out of range of the sources names none, as in a record */
    if (le(t + 16 * b + 8, 8) > (uint64_t)INT64_MAX) return kbpi_invalid(kb, "chunk_blocks", "a source index is past 2^63-1");
  kb->blocks_checked = 1;
  return KBP_OK;
}

/* Block b's first chunk id and number of chunks (by source: the table checked first). */
static void block_span(const kbp_bundle *kb, const uint8_t *table, uint64_t b, uint64_t *first, uint64_t *n) {
  if (!kb->by_source) {
    *first = b * kb->block_size;
    *n = kb->block_size < kb->count - *first ? kb->block_size : kb->count - *first;
    return;
  }
  *first = le(table + 16 * b, 8);
  *n = (b + 1 < kb->n_blocks ? le(table + 16 * (b + 1), 8) : kb->count) - *first;
}

static const uint8_t *block_table(const kbp_bundle *kb) {
  return kb->by_source ? kb->data + kb->sections[kb->known[S_CHUNK_BLOCKS]].offset : NULL;
}

KBP_INTERNAL kbp_status kbpi_block_of(kbp_bundle *kb, uint64_t id, uint64_t *block, uint64_t *position) {
  if (!kb->by_source) {
    *block = id / kb->block_size;
    *position = id % kb->block_size;
    return KBP_OK;
  }
  kbp_status st = kbpi_check_block_table(kb);
  if (st != KBP_OK) return st;
  const uint8_t *t = block_table(kb);
  uint64_t lo = 0, hi = kb->n_blocks; /* the last block whose first id is <= id: first ids rise from 0 */
  while (hi - lo > 1) {
    uint64_t mid = lo + (hi - lo) / 2;
    if (le(t + 16 * mid, 8) <= id) lo = mid;
    else hi = mid;
  }
  *block = lo;
  *position = id - le(t + 16 * lo, 8);
  return KBP_OK;
}

/* By source: the block's source stands in each record's `source` field, as Python's reader adds it. */
static void add_block_source(const kbp_bundle *kb, chunk_fields *f) {
  if (!kb->by_source) return;
  uint64_t source = le(block_table(kb) + 16 * (uint64_t)kb->block.index + 8, 8); /* <= INT64_MAX, checked */
  f->value[F_SOURCE] = (mp_value){MP_INT, (int64_t)source, NULL, 0};
  f->present |= 1u << F_SOURCE;
}

KBP_INTERNAL kbp_status kbpi_check_offsets(kbp_bundle *kb) {
  const uint8_t *o = NULL;
  kbp_status st = kbpi_section_bytes(kb, kb->known[S_CHUNK_OFFSETS], &o);
  if (st != KBP_OK || kb->offsets_checked) return st;
  uint64_t chunks_len = kb->sections[kb->known[S_CHUNKS]].length, prev = 0;
  int ok = le(o, 8) == 0 && le(o + 8 * kb->n_blocks, 8) == chunks_len;
  for (uint64_t b = 1; ok && b <= kb->n_blocks; b++) {
    uint64_t v = le(o + 8 * b, 8);
    ok = v > prev;
    prev = v;
  }
  if (!ok) return kbpi_invalid(kb, "chunk_offsets", "block offsets are not strictly increasing from 0 to the chunks length");
  kb->offsets_checked = 1;
  return KBP_OK;
}

static const char *const FIELD_NAMES[N_FIELDS] = {"text", "context", "source", "seq", "page_start", "page_end",
                                                  "char_start", "char_end", "tokens", "label_start", "label_end", "record"};
static const mp_kind FIELD_KINDS[N_FIELDS] = {MP_STR, MP_STR, MP_INT, MP_INT, MP_INT, MP_INT,
                                              MP_INT, MP_INT, MP_INT, MP_STR, MP_STR, MP_STR};

static int field_of(const mp_value *key) {
  if (key->kind != MP_STR) return -1; /* bin keys are bytes in Python: never equal to a str key */
  for (int f = 0; f < N_FIELDS; f++)
    if (strlen(FIELD_NAMES[f]) == key->len && memcmp(FIELD_NAMES[f], key->data, key->len) == 0) return f;
  return -1;
}

/* Reads one chunk map. With `checking`, refuses what Python's reader refuses. */
KBP_INTERNAL const char *kbpi_read_chunk_map(mp_cursor *c, chunk_fields *out, int checking) {
  mp_value map, key, value;
  memset(out, 0, sizeof *out);
  if (kbpi_mp_next(c, &map)) return "truncated";
  if (map.kind != MP_MAP) return map.kind == MP_ARRAY ? "a chunk field holds an array" : "an element is not a map";
  if (map.len > MAX_KEYS_PER_CHUNK) return "a chunk map has more than 64 entries";
  for (uint64_t e = 0; e < map.len; e++) {
    if (kbpi_mp_next(c, &key) || kbpi_mp_next(c, &value)) return "truncated";
    if (checking) {
      if (key.kind != MP_STR && key.kind != MP_BIN) return "a map key is not a string";
      if (value.kind == MP_ARRAY) return "a chunk field holds an array";
      if (value.kind == MP_MAP) return "more maps than chunks (nested objects)";
      if (value.kind == MP_EXT) return "msgpack extension types are not allowed";
      if ((key.kind == MP_STR && !kbpi_utf8_valid(key.data, (size_t)key.len)) ||
          (value.kind == MP_STR && !kbpi_utf8_valid(value.data, (size_t)value.len)))
        return "a string is not UTF-8";
    }
    int f = field_of(&key);
    if (f >= 0) { /* duplicate keys: the last wins, as in a Python dict */
      out->value[f] = value;
      out->present |= 1u << f;
    }
  }
  if (!checking) return NULL;
  if (!(out->present & 1u << F_TEXT) || out->value[F_TEXT].kind != MP_STR) return "a chunk record has no text string";
  for (int f = 0; f < N_FIELDS; f++)
    if (out->present & 1u << f && out->value[f].kind != FIELD_KINDS[f]) return "a chunk field has the wrong type";
  return NULL;
}

/* Checks a decompressed block and records where each of its `expected` maps starts. */
static kbp_status index_block(kbp_bundle *kb, uint64_t b, uint64_t expected) {
  block_cache *bc = &kb->block;
  mp_cursor c = {bc->raw, bc->raw + bc->raw_len};
  mp_value top;
  if (kbpi_mp_next(&c, &top) || top.kind != MP_ARRAY || top.len != expected)
    return kbpi_invalid(kb, "chunks", "block %llu does not hold %llu chunk records", (unsigned long long)b, (unsigned long long)expected);
  if (expected > bc->raw_len / MIN_CHUNK_MAP_BYTES) /* each record takes 7 bytes or more: bound the index first */
    return kbpi_invalid(kb, "chunks", "block %llu is too short for %llu chunk records", (unsigned long long)b, (unsigned long long)expected);
  void *starts = bc->starts;
  if (kbpi_reserve(&starts, &bc->starts_cap, (size_t)expected * sizeof *bc->starts)) return kbpi_out_of_memory(kb);
  bc->starts = starts;
  int names_source = 0;
  for (uint64_t j = 0; j < expected; j++) {
    chunk_fields fields;
    bc->starts[j] = (uint32_t)(c.p - bc->raw);
    const char *why = kbpi_read_chunk_map(&c, &fields, 1);
    if (why) return kbpi_invalid(kb, "chunks", "block %llu cannot be decoded: %s", (unsigned long long)b, why);
    /* FORMAT.md 2.1: an int field is a signed 64-bit integer. A msgpack uint64 past 2^63-1 would be
     * read here as 2^63-1 (saturated, its true value in len) where Python reads the real value, and
     * kbp_chunk/kbp_page_hit cannot hold it: the record is invalid, in Python's words. */
    for (int f = 0; f < N_FIELDS; f++)
      if (fields.present & 1u << f && FIELD_KINDS[f] == MP_INT && fields.value[f].len)
        return kbpi_invalid(kb, "chunks", "block %llu: chunk field '%s' is past 2^63-1", (unsigned long long)b, FIELD_NAMES[f]);
    names_source |= (fields.present & 1u << F_SOURCE) != 0;
  }
  if (c.p != c.end) return kbpi_invalid(kb, "chunks", "block %llu cannot be decoded: extra data after the records", (unsigned long long)b);
  if (kb->by_source && names_source) /* the table names the source: a record naming one too would be a second answer */
    return kbpi_invalid(kb, "chunks", "block %llu: a chunk record holds 'source', which the by-source layout keeps in chunk_blocks",
                        (unsigned long long)b);
  bc->n = (size_t)expected;
  return KBP_OK;
}

KBP_INTERNAL kbp_status kbpi_load_block(kbp_bundle *kb, uint64_t b) {
  block_cache *bc = &kb->block;
  if (bc->index == (int64_t)b) return KBP_OK;
  const uint8_t *offsets = NULL, *chunks = NULL;
  kbp_status st;
  if ((st = kbpi_check_offsets(kb)) != KBP_OK || (st = kbpi_check_block_table(kb)) != KBP_OK ||
      (st = kbpi_section_bytes(kb, kb->known[S_CHUNK_OFFSETS], &offsets)) != KBP_OK ||
      (st = kbpi_section_bytes(kb, kb->known[S_CHUNKS], &chunks)) != KBP_OK)
    return st;
  bc->index = -1;
  uint64_t start = le(offsets + 8 * b, 8), len = le(offsets + 8 * (b + 1), 8) - start;
  const uint8_t *frame = chunks + start;
  uint64_t first, expected;
  block_span(kb, block_table(kb), b, &first, &expected);
  /* A frame must declare its decompressed size, and that size is bounded before any allocation. */
  unsigned long long size = ZSTD_getFrameContentSize(frame, (size_t)len);
  if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR)
    return kbpi_invalid(kb, "chunks", "block %llu cannot be decoded: no zstd frame with a declared size", (unsigned long long)b);
  if (size > MAX_BLOCK_BYTES)
    return kbpi_invalid(kb, "chunks", "block %llu declares %llu decompressed bytes (limit %llu)", (unsigned long long)b, size,
                   (unsigned long long)MAX_BLOCK_BYTES);
  /* Only the first frame counts, as Python's decompressor reads it; bytes after it are ignored. */
  size_t frame_len = ZSTD_findFrameCompressedSize(frame, (size_t)len);
  if (ZSTD_isError(frame_len))
    return kbpi_invalid(kb, "chunks", "block %llu cannot be decoded: %s", (unsigned long long)b, ZSTD_getErrorName(frame_len));
  void *raw = bc->raw;
  if (kbpi_reserve(&raw, &bc->raw_cap, (size_t)size + 1)) return kbpi_out_of_memory(kb);
  bc->raw = raw;
  size_t got = ZSTD_decompressDCtx(kb->dctx, bc->raw, (size_t)size, frame, frame_len);
  if (ZSTD_isError(got) || got != size)
    return kbpi_invalid(kb, "chunks", "block %llu cannot be decoded: %s", (unsigned long long)b,
                   ZSTD_isError(got) ? ZSTD_getErrorName(got) : "shorter than declared");
  bc->raw_len = got;
  if ((st = index_block(kb, b, expected)) != KBP_OK) return st;
  bc->index = (int64_t)b;
  return KBP_OK;
}

/* Appends a NUL-terminated copy of [p, p + n) to the chunk's string area. */
KBP_INTERNAL kbp_string kbpi_put_string(char *area, size_t *used, const void *p, size_t n) {
  kbp_string s = {area + *used, n};
  memcpy(area + *used, p, n);
  area[*used + n] = 0;
  *used += n + 1;
  return s;
}

KBP_INTERNAL kbp_status kbpi_chunk_fields(kbp_bundle *kb, uint64_t id, chunk_fields *f) {
  uint64_t b, j;
  kbp_status st = kbpi_block_of(kb, id, &b, &j);
  if (st != KBP_OK || (st = kbpi_load_block(kb, b)) != KBP_OK) return st;
  const block_cache *bc = &kb->block;
  mp_cursor c = {bc->raw + bc->starts[j], bc->raw + bc->raw_len};
  kbpi_read_chunk_map(&c, f, 0); /* checked when the block was loaded */
  add_block_source(kb, f);
  return KBP_OK;
}

kbp_status kbp_chunk_get(kbp_bundle *kb, uint64_t i, kbp_chunk *out) {
  kbpi_clear_error(&kb->err);
  if (!out) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_chunk_get: out must not be NULL");
  if (i >= kb->count)
    return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "chunk %llu out of range 0..%lld", (unsigned long long)i, (long long)kb->count - 1);
  chunk_fields f;
  kbp_status st = kbpi_chunk_fields(kb, i, &f);
  if (st != KBP_OK) return st;

  int64_t src = f.present & 1u << F_SOURCE ? f.value[F_SOURCE].i : -1;
  const char *path = src >= 0 && (uint64_t)src < kb->n_sources ? kb->source_paths[src] : NULL;
  size_t need = 16 + (path ? kbpi_jdecoded_bound(path, kb->manifest_end) : 0);
  static const int strings[] = {F_TEXT, F_CONTEXT, F_LABEL_START, F_LABEL_END, F_RECORD};
  for (size_t s = 0; s < sizeof strings / sizeof *strings; s++)
    if (f.present & 1u << strings[s]) need += (size_t)f.value[strings[s]].len + 1;
  void *area = kb->chunk_strings;
  if (kbpi_reserve(&area, &kb->chunk_strings_cap, need)) return kbpi_out_of_memory(kb);
  kb->chunk_strings = area;

  size_t used = 0;
  kbp_string none = {NULL, 0};
  memset(out, 0, sizeof *out);
  out->id = i;
  kbp_string *dest[] = {&out->text, &out->context, &out->label_start, &out->label_end, &out->record};
  for (size_t s = 0; s < sizeof strings / sizeof *strings; s++) {
    const mp_value *v = &f.value[strings[s]];
    *dest[s] = f.present & 1u << strings[s] ? kbpi_put_string(kb->chunk_strings, &used, v->data, (size_t)v->len) : none;
  }
  if (path) { /* decoded in place */
    long n = kbpi_jdecode(path, kb->manifest_end, (uint8_t *)kb->chunk_strings + used, need - used - 1);
    out->source_path = (kbp_string){kb->chunk_strings + used, n < 0 ? 0 : (size_t)n};
    kb->chunk_strings[used + out->source_path.len] = 0;
  } else {
    out->source_path = kbpi_put_string(kb->chunk_strings, &used, "?", 1);
  }
  static const int ints[] = {F_SOURCE, F_SEQ, F_PAGE_START, F_PAGE_END, F_CHAR_START, F_CHAR_END, F_TOKENS};
  static const unsigned bits[] = {KBP_FIELD_SOURCE, KBP_FIELD_SEQ, KBP_FIELD_PAGE_START, KBP_FIELD_PAGE_END,
                                  KBP_FIELD_CHAR_START, KBP_FIELD_CHAR_END, KBP_FIELD_TOKENS};
  int64_t *int_dest[] = {&out->source, &out->seq, &out->page_start, &out->page_end, &out->char_start, &out->char_end, &out->tokens};
  for (size_t k = 0; k < sizeof ints / sizeof *ints; k++)
    if (f.present & 1u << ints[k]) {
      *int_dest[k] = f.value[ints[k]].i;
      out->fields |= bits[k];
    }
  return KBP_OK;
}
