/* libkbpack, answer.c: the answer strength (FORMAT.md §2.11; Python: kbc/query/knowledge_base.py
 * KnowledgeBase.answer). A question's strength is its first hit's inner product with the question's
 * vector: the cosine for the normalised embedders kbc builds with, one meaning across questions and
 * modes, where a hybrid score (normalised per question) would say 1.0 for the best of nothing. Under
 * the manifest's retrieval.min_strength a runtime reports "no confident answer". */
#include "kbpack_internal.h"

kbp_status kbp_answer_strength(kbp_bundle *kb, const float *query_vector, uint64_t first_id, double *strength,
                               int *confident) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  if (!query_vector || !strength || !confident)
    return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "query_vector, strength and confident must not be NULL");
  if (first_id >= kb->count)
    return kbpi_fail(kb, KBP_ERR_ARGUMENT, "", "chunk id %llu out of range (the bundle has %llu chunks)",
                     (unsigned long long)first_id, (unsigned long long)kb->count);
  kbp_status st = kbpi_retrieval_ready(kb);
  if (st != KBP_OK) return st;
  /* a NaN or infinite component is refused as a search refuses it (its row score would be -inf) */
  st = kbpi_check_query_vector(kb, query_vector);
  if (st != KBP_OK) return st;
  dense_query dq;
  st = kbpi_prepare_query(kb, query_vector, &dq); /* the checks every dense search makes first */
  if (st != KBP_OK) return st;
  double s = (double)kbpi_row_score(kb, &dq, first_id); /* exact, in float32, as the dense search scores */
  *strength = s;
  if (!kb->rs.has_min_strength) *confident = -1;
  else *confident = isfinite(s) && s >= kb->rs.min_strength;
  return KBP_OK;
}

kbp_status kbp_min_strength(kbp_bundle *kb, double *min_strength) {
  if (!kb) return KBP_ERR_ARGUMENT;
  kbpi_clear_error(&kb->err);
  kbp_status st = kbpi_retrieval_ready(kb);
  if (st != KBP_OK) return st;
  if (!kb->rs.has_min_strength) return kbpi_fail(kb, KBP_ERR_NOT_PRESENT, "", "the bundle records no min_strength");
  if (min_strength) *min_strength = kb->rs.min_strength;
  return KBP_OK;
}
