/* libkbpack, probes.c: the probes (FORMAT.md §2.3; Python: Bundle.probes, kbc/tools/probe.py compare):
 * texts stored with the vectors the build's encoder gave them, so that a device can check that
 * its own encoder agrees. The probes section's JSON and probe_vectors are checked on first use;
 * kbp_probe_get gives each probe's input (prompt and text) and kind, and kbp_probe_check
 * compares a device's vectors with the stored ones by cosine against the threshold. */
#include "kbpack_internal.h"

static kbp_status load_probe_json(kbp_bundle *kb) {
  probe_set *ps = &kb->probes;
  const section *s = &kb->sections[kb->known[S_PROBES]];
  const uint8_t *bytes = NULL;
  kbp_status st;
  if (strcmp(s->encoding, "json") != 0) return kbpi_invalid(kb, "probes", "unexpected encoding '%s'", s->encoding);
  if (s->length > MAX_JSON_SECTION_BYTES) return kbpi_invalid(kb, "probes", "%llu bytes exceeds the JSON section limit", (unsigned long long)s->length);
  if ((st = kbpi_section_bytes(kb, kb->known[S_PROBES], &bytes)) != KBP_OK) return st;
  ps->end = (const char *)bytes + s->length;
  if (kbpi_json_check((const char *)bytes, s->length, &ps->root)) return kbpi_invalid(kb, "probes", "invalid JSON (or not UTF-8)");
  const char *list = kbpi_jget(ps->root, ps->end, "probes"), *item;
  jcur it;
  if (!kbpi_jopen(list, ps->end, '[', &it)) return kbpi_invalid(kb, "probes", "malformed: expected an object with a list of {text} probes");
  size_t n = 0;
  while (kbpi_jarray_next(&it, &item)) n++;
  ps->items = calloc(n ? n : 1, sizeof *ps->items);
  if (!ps->items) return kbpi_out_of_memory(kb);
  kbpi_jopen(list, ps->end, '[', &it);
  while (kbpi_jarray_next(&it, &item)) {
    const char *kind = kbpi_jget(item, ps->end, "kind"), *tokens = kbpi_jget(item, ps->end, "tokens");
    uint64_t u;
    if (kbpi_jtype(kbpi_jget(item, ps->end, "text")) != J_STRING)
      return kbpi_invalid(kb, "probes", "malformed: expected an object with a list of {text} probes");
    /* FORMAT.md §2.3: kind a string, tokens a count; an engine reads both */
    if ((kind && kbpi_jtype(kind) != J_STRING) || (tokens && kbpi_juint(tokens, ps->end, &u)))
      return kbpi_invalid(kb, "probes", "probe %zu: kind must be a string and tokens an integer >= 0", ps->n);
    ps->items[ps->n++] = item;
  }
  /* every field an engine reads has its type, so a verified bundle's probes are all usable */
  const char *prompt = kbpi_jget(ps->root, ps->end, "prompt"), *max_seq = kbpi_jget(ps->root, ps->end, "max_seq_length");
  const char *role = kbpi_jget(ps->root, ps->end, "role"), *version = kbpi_jget(ps->root, ps->end, "version");
  uint64_t u;
  if (prompt && kbpi_jtype(prompt) != J_STRING) return kbpi_invalid(kb, "probes", "prompt is not a string");
  if (role && kbpi_jtype(role) != J_STRING) return kbpi_invalid(kb, "probes", "role is not a string");
  if ((max_seq && (kbpi_juint(max_seq, ps->end, &u) || u < 1)) || (version && kbpi_juint(version, ps->end, &u)))
    return kbpi_invalid(kb, "probes", "version and max_seq_length must be integers (max_seq_length >= 1)");
  double threshold = DEFAULT_PROBE_THRESHOLD;
  const char *stored = kbpi_jget(ps->root, ps->end, "threshold");
  if (stored && !(kbpi_jfinite_number(stored, ps->end, &threshold) && threshold >= -1 && threshold <= 1))
    return kbpi_invalid(kb, "probes", "threshold must be a number from -1 to 1 (a cosine)");
  ps->threshold = threshold;
  return KBP_OK;
}

static kbp_status open_probes(kbp_bundle *kb) {
  if (kb->known[S_PROBES] < 0) return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no probes (format 1.0)");
  kbp_status st = load_probe_json(kb);
  if (st != KBP_OK) return st;
  int idx = kb->known[S_PROBE_VECTORS];
  if (idx < 0) return kbpi_invalid(kb, "probe_vectors", "missing although a probes section is present");
  const section *s = &kb->sections[idx];
  uint64_t n = kb->probes.n;
  int length_ok = n == 0 ? s->length == 0 : kb->dim <= s->length / 4 / n && s->length == n * kb->dim * 4;
  if (strcmp(s->encoding, "f32le") != 0 || !length_ok)
    return kbpi_invalid(kb, "probe_vectors", "expected %llu x %llu f32le, found %llu bytes (%s)", (unsigned long long)n,
                   (unsigned long long)kb->dim, (unsigned long long)s->length, s->encoding);
  return kbpi_section_bytes(kb, idx, &kb->probes.vectors);
}

KBP_INTERNAL kbp_status kbpi_probes_ready(kbp_bundle *kb) {
  if (kb->probes_state == LOAD_READY) return KBP_OK;
  if (kb->probes_state == LOAD_ABSENT) return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "this bundle has no probes (format 1.0)");
  free(kb->probes.items);
  memset(&kb->probes, 0, sizeof kb->probes);
  kbp_status st = open_probes(kb);
  if (st == KBP_OK) kb->probes_state = LOAD_READY;
  if (st == KBP_ERR_NOT_PRESENT) kb->probes_state = LOAD_ABSENT;
  return st;
}

kbp_status kbp_probe_count(kbp_bundle *kb, size_t *n) {
  kbpi_clear_error(&kb->err);
  kbp_status st = kbpi_probes_ready(kb);
  if (st == KBP_OK && n) *n = kb->probes.n;
  return st;
}

kbp_status kbp_probe_get(kbp_bundle *kb, size_t i, kbp_probe *out) {
  kbpi_clear_error(&kb->err);
  kbp_status st = kbpi_probes_ready(kb);
  if (st != KBP_OK) return st;
  const probe_set *ps = &kb->probes;
  if (!out || i >= ps->n) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "probe %zu out of range", i);
  const char *prompt = kbpi_jget(ps->root, ps->end, "prompt"), *text = kbpi_jget(ps->items[i], ps->end, "text");
  const char *kind = kbpi_jget(ps->items[i], ps->end, "kind");
  if (prompt && kbpi_jtype(prompt) != J_STRING) return kbpi_invalid(kb, "probes", "prompt is not a string");
  if (kbpi_jtype(kind) != J_STRING) kind = NULL;
  size_t pb = prompt ? kbpi_jdecoded_bound(prompt, ps->end) : 0, tb = kbpi_jdecoded_bound(text, ps->end);
  size_t kb_len = kind ? kbpi_jdecoded_bound(kind, ps->end) : 1;
  void *area = kb->probe_strings;
  if (kbpi_reserve(&area, &kb->probe_strings_cap, pb + tb + kb_len + 2)) return kbpi_out_of_memory(kb);
  kb->probe_strings = area;
  uint8_t *buf = (uint8_t *)kb->probe_strings;
  long lp = prompt ? kbpi_jdecode(prompt, ps->end, buf, pb) : 0;
  long lt = kbpi_jdecode(text, ps->end, buf + lp, tb);
  buf[lp + lt] = 0;
  out->input = (kbp_string){(const char *)buf, (size_t)(lp + lt)};
  uint8_t *kind_at = buf + lp + lt + 1;
  long lk = kind ? kbpi_jdecode(kind, ps->end, kind_at, kb_len) : 1;
  if (!kind) kind_at[0] = '?';
  kind_at[lk] = 0;
  out->kind = (kbp_string){(const char *)kind_at, (size_t)lk};
  return KBP_OK;
}

static double probe_value(const probe_set *ps, size_t dim, size_t i, size_t j) {
  uint32_t bits = (uint32_t)le(ps->vectors + 4 * (i * dim + j), 4);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

kbp_status kbp_probe_check(kbp_bundle *kb, const float *vectors, size_t n_vectors, double *cosines, kbp_probe_result *result) {
  kbpi_clear_error(&kb->err);
  kbp_status st = kbpi_probes_ready(kb);
  if (st != KBP_OK) return st;
  const probe_set *ps = &kb->probes;
  size_t dim = (size_t)kb->dim;
  if (!result || (n_vectors && !vectors)) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "kbp_probe_check: vectors and result must not be NULL");
  if (n_vectors != ps->n)
    return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "%zu vectors, but the bundle has %zu probes (embed every probe input, in order)", n_vectors, ps->n);
  for (size_t i = 0; i < n_vectors * dim; i++)
    if (!isfinite(vectors[i])) return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "the probe vectors hold NaN or infinity");
  memset(result, 0, sizeof *result);
  result->count = ps->n;
  result->threshold = ps->threshold;
  double sum = 0;
  for (size_t i = 0; i < ps->n; i++) {
    double num = 0, ref_sq = 0, cand_sq = 0;
    for (size_t j = 0; j < dim; j++) {
      double r = probe_value(ps, dim, i, j), c = vectors[i * dim + j];
      num += r * c;
      ref_sq += r * r;
      cand_sq += c * c;
    }
    double den = sqrt(ref_sq) * sqrt(cand_sq);
    double cosine = den > 0 ? num / (den > 1e-300 ? den : 1e-300) : 0.0;
    if (cosines) cosines[i] = cosine;
    if (i == 0 || cosine < result->min_cosine) {
      result->min_cosine = cosine;
      result->worst = i;
    }
    sum += cosine;
  }
  result->mean_cosine = ps->n ? sum / (double)ps->n : 0.0;
  result->passed = ps->n == 0 || result->min_cosine >= result->threshold;
  return KBP_OK;
}
