/* kbpack_wasm.c: what kbpack.mjs needs from the WebAssembly build besides libkbpack's own API.
 *
 * JavaScript reads libkbpack's structs (kbp_chunk, kbp_page_hit, kbp_error, ...) straight out of
 * the module's memory. Rather than copy their field offsets into kbpack.mjs by hand, where a field
 * added to kbpack.h would shift them silently, the module reports them: kbpjs_layout() is a table of
 * sizeof/offsetof values the compiler computed, in the order LAYOUT_FIELDS in kbpack.mjs names them,
 * ending with the table's own length so the two sides cannot drift apart unnoticed. */
#include <stddef.h>
#include <stdint.h>

#include "kbpack.h"

#define OFF(type, field) (uint32_t) offsetof(type, field)

static const uint32_t layout[] = {
    /* kbp_error */
    (uint32_t)sizeof(kbp_error), OFF(kbp_error, status), OFF(kbp_error, part), OFF(kbp_error, message),
    /* kbp_hit */
    (uint32_t)sizeof(kbp_hit), OFF(kbp_hit, id), OFF(kbp_hit, score),
    /* kbp_string */
    (uint32_t)sizeof(kbp_string), OFF(kbp_string, s), OFF(kbp_string, len),
    /* kbp_chunk */
    (uint32_t)sizeof(kbp_chunk), OFF(kbp_chunk, id), OFF(kbp_chunk, text), OFF(kbp_chunk, context),
    OFF(kbp_chunk, source_path), OFF(kbp_chunk, source), OFF(kbp_chunk, seq), OFF(kbp_chunk, page_start),
    OFF(kbp_chunk, page_end), OFF(kbp_chunk, char_start), OFF(kbp_chunk, char_end), OFF(kbp_chunk, tokens),
    OFF(kbp_chunk, label_start), OFF(kbp_chunk, label_end), OFF(kbp_chunk, record), OFF(kbp_chunk, fields),
    /* kbp_page_hit */
    (uint32_t)sizeof(kbp_page_hit), OFF(kbp_page_hit, score), OFF(kbp_page_hit, source), OFF(kbp_page_hit, record),
    OFF(kbp_page_hit, page), OFF(kbp_page_hit, n_chunks), OFF(kbp_page_hit, chunk_ids), OFF(kbp_page_hit, chunk_scores),
    /* kbp_probe */
    (uint32_t)sizeof(kbp_probe), OFF(kbp_probe, kind), OFF(kbp_probe, input),
    /* kbp_probe_result */
    (uint32_t)sizeof(kbp_probe_result), OFF(kbp_probe_result, count), OFF(kbp_probe_result, threshold),
    OFF(kbp_probe_result, min_cosine), OFF(kbp_probe_result, mean_cosine), OFF(kbp_probe_result, worst),
    OFF(kbp_probe_result, passed),
    /* kbp_section */
    (uint32_t)sizeof(kbp_section), OFF(kbp_section, name), OFF(kbp_section, encoding), OFF(kbp_section, offset),
    OFF(kbp_section, length), OFF(kbp_section, sha256), OFF(kbp_section, known),
    /* kbp_encoder */
    (uint32_t)sizeof(kbp_encoder), OFF(kbp_encoder, graph), OFF(kbp_encoder, graph_len), OFF(kbp_encoder, tokenizer_json),
    OFF(kbp_encoder, tokenizer_len), OFF(kbp_encoder, settings_json), OFF(kbp_encoder, settings_len),
    /* pointer and size_t widths: 4 on wasm32, checked by kbpack.mjs which reads them as 32-bit */
    (uint32_t)sizeof(void *), (uint32_t)sizeof(size_t),
    KBP_FORMAT_MAJOR, KBP_FORMAT_MINOR, KBP_MAX_PAGE_CHUNKS,
    0 /* replaced below: the number of entries, the last one */
};

static uint32_t layout_with_length[sizeof layout / sizeof layout[0]];

const uint32_t *kbpjs_layout(void) {
  size_t n = sizeof layout / sizeof layout[0];
  for (size_t i = 0; i < n; i++) layout_with_length[i] = layout[i];
  layout_with_length[n - 1] = (uint32_t)n;
  return layout_with_length;
}
