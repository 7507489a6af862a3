#include <stdio.h>
#include "kbpack.h"
/* Prints the 5 best chunks for a question; query_vector is its embedding (kbp_dim floats). */
int print_top_chunks(const char *path, const float *query_vector, const char *question) {
  kbp_bundle *kb; kbp_error err; kbp_hit hits[5]; kbp_chunk c; size_t n = 0;
  if (kbp_open(path, &kb, &err) != KBP_OK) return fprintf(stderr, "%s\n", err.message), -1;
  if (kbp_search(kb, query_vector, question, 5, KBP_MODE_DEFAULT, hits, &n) != KBP_OK)
    fprintf(stderr, "%s\n", kbp_last_error(kb)->message);
  for (size_t i = 0; i < n && kbp_chunk_get(kb, hits[i].id, &c) == KBP_OK; i++)
    printf("%.3f  %s p.%lld  %s\n", hits[i].score, c.source_path.s ? c.source_path.s : "?", (long long)c.page_start, c.text.s);
  kbp_close(kb);
  return (int)n;
}
