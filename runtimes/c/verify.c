/* libkbpack, verify.c: kbp_verify: what `kbc inspect --verify` checks, in the order
 * Bundle.verify checks it, so that the part named is the same. Every section's checksum and the
 * whole file's, every chunk block, the vectors (finite, or int8's scales) and the binary codes'
 * padding, the query encoder, the probes, every posting list, the FAISS index (faiss_index.c)
 * the retrieval settings and (format 1.7) the attributes. */
#include "kbpack_internal.h"

static kbp_status verify_sections(kbp_bundle *kb, int *body_ok) {
  uint8_t digest[32];
  kbpi_sha256(kb->data + HEADER_SIZE, kb->size - HEADER_SIZE, digest);
  *body_ok = memcmp(digest, kb->body_sha, 32) == 0;
  for (size_t i = 0; i < kb->n_sections; i++) { /* every section's checksum again, in file order */
    int idx = (int)kb->file_order[i];
    const uint8_t *bytes = NULL;
    kb->sections[idx].state = UNCHECKED;
    kbp_status st = kbpi_section_bytes(kb, idx, &bytes);
    if (st != KBP_OK) return st;
  }
  return KBP_OK;
}

static kbp_status verify_chunks(kbp_bundle *kb) {
  kbp_status st = kbpi_check_offsets(kb);
  if (st == KBP_OK) st = kbpi_check_block_table(kb);
  for (uint64_t b = 0; st == KBP_OK && b < kb->n_blocks; b++) st = kbpi_load_block(kb, b);
  return st;
}

static kbp_status verify_probes(kbp_bundle *kb) {
  if (kb->known[S_PROBES] < 0) return KBP_OK;
  kbp_status st = kbpi_probes_ready(kb);
  if (st != KBP_OK) return st;
  if (kbpi_first_non_finite_row(kb->probes.vectors, kb->probes.n, kb->dim, 4) >= 0)
    return kbpi_invalid(kb, "probe_vectors", "holds NaN or infinity");
  return KBP_OK;
}

static kbp_status verify_lexical(kbp_bundle *kb) {
  if (!kbp_has_lexical(kb)) return KBP_OK;
  kbp_status st = kbpi_lexical_ready(kb);
  uint64_t df;
  for (uint64_t t = 0; st == KBP_OK && t < kb->lex.terms; t++) st = kbpi_walk_postings(kb, t, &df, NULL, NULL);
  return st;
}

/* manifest.schema.json's types for what nothing above reads (Python: Bundle._check_manifest_schema):
 * the counts and each source's numbers are JSON integers (not 2.0) from 0 to 2^64-1, kbc_version
 * and created strings; the same order and words, so both readers say "intact" of the same bundles. */
static kbp_status verify_manifest_schema(kbp_bundle *kb) {
  static const char *const strings[] = {"kbc_version", "created"};
  static const char *const numbers[] = {"size", "pages", "chunks"};
  const char *end = kb->manifest_end, *root = kb->manifest_root, *key, *value, *entry;
  uint64_t n;
  jcur it;
  for (size_t k = 0; k < sizeof strings / sizeof *strings; k++) {
    const char *v = kbpi_jget(root, end, strings[k]);
    if (v && kbpi_jtype(v) != J_STRING) return kbpi_invalid(kb, "manifest", "'%s' must be a string", strings[k]);
  }
  if (kbpi_jopen(kbpi_jget(root, end, "counts"), end, '{', &it))
    while (kbpi_jobject_next(&it, &key, &value))
      if (kbpi_juint(value, end, &n) != 0) {
        uint8_t name[64];
        long len = kbpi_jdecode(key, end, name, sizeof name - 1);
        name[len < 0 ? 0 : len] = 0;
        return kbpi_invalid(kb, "manifest", "counts.%s must be an integer from 0 to 2^64-1", (const char *)name);
      }
  if (kbpi_jopen(kbpi_jget(root, end, "sources"), end, '[', &it))
    for (uint64_t i = 0; kbpi_jarray_next(&it, &entry); i++)
      for (size_t k = 0; k < sizeof numbers / sizeof *numbers; k++) {
        const char *v = kbpi_jget(entry, end, numbers[k]);
        if (v && kbpi_juint(v, end, &n) != 0)
          return kbpi_invalid(kb, "manifest", "sources[%llu].%s must be an integer from 0 to 2^64-1",
                              (unsigned long long)i, numbers[k]);
      }
  return KBP_OK;
}

kbp_status kbp_verify(kbp_bundle *kb) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  int body_ok;
  const uint8_t *vectors = NULL;
  kbp_status st = verify_sections(kb, &body_ok);
  if (st == KBP_OK) st = verify_chunks(kb);
  if (st == KBP_OK && !body_ok) st = kbpi_invalid(kb, "file", "whole-file sha256 mismatch (damage outside any section, e.g. padding)");
  if (st == KBP_OK) {
    kb->vectors_checked = 0;
    st = kbpi_vectors_bytes(kb, &vectors); /* finite, or int8's scales */
  }
  if (st == KBP_OK) st = kbpi_check_code_padding(kb);
  if (st == KBP_OK && kbp_encoder_get(kb, NULL) == KBP_ERR_INVALID) st = KBP_ERR_INVALID;
  if (st == KBP_OK) {
    kbpi_clear_error(&kb->err); /* "no query encoder" is no failure here */
    st = verify_probes(kb);
  }
  if (st == KBP_OK) st = verify_lexical(kb);
  if (st == KBP_OK) st = kbpi_verify_index(kb);
  if (st == KBP_OK) st = kbpi_retrieval_ready(kb);
  if (st == KBP_OK) { /* 1.7: the attributes, checked whole (absent is no failure) */
    kb->attributes_state = LOAD_UNKNOWN;
    st = kbpi_attributes_ready(kb);
    if (st == KBP_ERR_NOT_PRESENT) st = KBP_OK;
  }
  if (st == KBP_OK) st = verify_manifest_schema(kb);
  return st;
}
