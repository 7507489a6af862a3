/* kbpack: the command-line tool over libkbpack (kbpack.h).
 *
 *   kbpack info FILE            format version, counts, dtype (with int8's scales and the binary
 *                               codes' search settings), embedder, sections
 *   kbpack verify FILE          every check `kbc inspect --verify` makes: "intact", or exit 3
 *   kbpack chunk FILE ID        chunk ID with its provenance, as one JSON object
 *   kbpack search FILE [--mode dense|lexical|hybrid] [--unit chunk|page] [-k N] [--vector Q.f32] [--json] [--] [QUESTION]
 *                               the k best chunks (default 10), for a person: `RANK. SCORE  SOURCE p.PAGES
 *                               [chunk ID]` (SCORE to 4 decimals) and the chunk's first words below;
 *                               Q.f32 is the question's embedding: dim raw little-endian float32.
 *                               --unit page (default: the bundle's retrieval.unit) gives the k best
 *                               pages (FORMAT.md §2.8) instead: `RANK. SCORE  SOURCE p.PAGE [N chunks:
 *                               IDS]` and the first words of the best chunk.
 *                               --json: one JSON object for programs, the exact values (scores as
 *                               %.17g): {"mode", "unit", "hits": [{"id", "score", "source",
 *                               "source_path", "page_start", "page_end", "record"}]} or, by page,
 *                               {"mode", "unit", "pages": [{"score", "source", "page", "source_path",
 *                               "record", "chunks": [{"id", "score"}]}]}; absent values are null
 *                               --where COND (repeatable, FORMAT.md §2.10: path:GLOB, key=v,
 *                               key=v1,v2, key>=N, ...) searches only the chunks meeting every
 *                               condition and says on stderr how many do: `kbpack: filter: M of N chunks match`
 *   kbpack probe FILE VECTORS.f32
 *                               an engine's probe vectors (n_probes x dim float32, in probe order)
 *                               against the bundle's: pass (exit 0) or fail (exit 6)
 *   kbpack apply OLD DELTA -o NEW
 *                               the bundle a .kbdelta (`kbc delta`) makes of OLD, verified against the
 *                               SHA-256 it names, then renamed to NEW (kbp_apply_delta; NEW may be OLD)
 *
 * Exit: 0 ok, 2 usage / IO / not in this bundle, 3 invalid bundle, 6 probe check failed. Errors
 * are one line on stderr: "kbpack: <part>: <what>". Text from the bundle reaches the terminal
 * with control characters replaced by U+FFFD (it is the bundle author's, FORMAT.md §5.1); search
 * results show a source name holding one in double quotes with C escapes ("a\nb.md", as git and
 * kbc do) and a chunk's words with its controls escaped, so that neither can break a line.
 */
#define _POSIX_C_SOURCE 200809L

#include "kbpack.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { EXIT_USAGE = 2, EXIT_INVALID = 3, EXIT_PROBE_FAILED = 6 };

static const char USAGE[] =
    "usage: kbpack info FILE\n"
    "       kbpack verify FILE\n"
    "       kbpack chunk FILE ID\n"
    "       kbpack search FILE [--mode dense|lexical|hybrid] [--unit chunk|page] [-k N] [--vector Q.f32] [--where COND]... [--json] [--] [QUESTION]\n"
    "       kbpack probe FILE VECTORS.f32\n"
    "       kbpack apply OLD DELTA -o NEW\n";

static int usage(void) {
  fputs(USAGE, stderr);
  return EXIT_USAGE;
}

static int exit_code(kbp_status status) { return status == KBP_ERR_INVALID ? EXIT_INVALID : EXIT_USAGE; }

static int complain(const char *fmt, const char *arg) {
  fputs("kbpack: ", stderr);
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  return EXIT_USAGE;
}

static int report(const kbp_error *err) {
  fprintf(stderr, "kbpack: %s\n", err->message);
  return exit_code(err->status);
}

static int report_last(const kbp_bundle *kb) { return report(kbp_last_error(kb)); }

static kbp_bundle *open_bundle(const char *path, int *code) {
  kbp_bundle *kb;
  kbp_error err;
  if (kbp_open(path, &kb, &err) != KBP_OK) {
    *code = report(&err);
    return NULL;
  }
  return kb;
}

/* A decimal number without sign, at most `max`. */
static int parse_count(const char *s, unsigned long long max, unsigned long long *out) {
  unsigned long long v = 0;
  if (!*s) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    unsigned digit = (unsigned)(*s - '0');
    if (v > (max - digit) / 10) return -1;
    v = v * 10 + digit;
  }
  *out = v;
  return 0;
}

/* ---------------------------------------------------------------- printing bundle text */

/* For a terminal: C0 controls other than tab and newline, DEL and C1 controls become U+FFFD,
 * as kbc's CLI prints them. */
static void print_safe(FILE *out, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int c1 = c == 0xC2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 && (unsigned char)s[i + 1] <= 0x9F;
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F || c1) {
      fputs("\xEF\xBF\xBD", out);
      i += (size_t)c1;
    } else {
      fputc(c, out);
    }
  }
}

/* The length of the character at s[i] that a line must not show raw, or 0: C0 controls, DEL, C1
 * controls (U+0080..U+009F), the line and paragraph separators and the bidirectional overrides
 * (U+2028..U+202E, U+2066..U+2069), which kbc's quote_name escapes too. */
static size_t unsafe_at(const char *s, size_t n, size_t i) {
  unsigned char c = (unsigned char)s[i], d = i + 1 < n ? (unsigned char)s[i + 1] : 0, e = i + 2 < n ? (unsigned char)s[i + 2] : 0;
  if (c < 0x20 || c == 0x7F) return 1;
  if (c == 0xC2 && d >= 0x80 && d <= 0x9F) return 2;
  if (c == 0xE2 && ((d == 0x80 && e >= 0xA8 && e <= 0xAE) || (d == 0x81 && e >= 0xA6 && e <= 0xA9))) return 3;
  return 0;
}

/* One unsafe character as C writes it: \n, \t, ..., else its bytes in octal (ESC is \033). */
static void print_escaped(FILE *out, const char *s, size_t len) {
  static const char names[] = "abtnvfr";
  unsigned char c = (unsigned char)s[0];
  if (len == 1 && c >= 7 && c <= 13) {
    fputc('\\', out);
    fputc(names[c - 7], out);
    return;
  }
  for (size_t j = 0; j < len; j++) fprintf(out, "\\%03o", (unsigned char)s[j]);
}

/* A source name for a person: as it is when it holds no unsafe character, else in double quotes
 * with C escapes ("a\nb.md"), so that one name stays one token on one line. */
static void print_name(FILE *out, const char *s, size_t n) {
  int quote = 0;
  for (size_t i = 0; i < n && !quote; i++) quote = unsafe_at(s, n, i) != 0;
  if (!quote) {
    fwrite(s, 1, n, out);
    return;
  }
  fputc('"', out);
  for (size_t i = 0; i < n; i++) {
    size_t len = unsafe_at(s, n, i);
    if (len) {
      print_escaped(out, s + i, len);
      i += len - 1;
    } else {
      if (s[i] == '"' || s[i] == '\\') fputc('\\', out);
      fputc(s[i], out);
    }
  }
  fputc('"', out);
}

/* The first words of a chunk on one line: runs of spaces, tabs and newlines as one space, other
 * unsafe characters escaped, cut after about `max` bytes at a character's start, "..." if cut. */
static void print_words(FILE *out, const char *s, size_t n, size_t max) {
  size_t shown = 0;
  int space = 0;
  size_t i = 0;
  while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\f' || s[i] == '\v')) i++;
  for (; i < n; i++) {
    char c = s[i];
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      space = 1;
      continue;
    }
    if (shown >= max && ((unsigned char)c & 0xC0) != 0x80) {
      fputs("...", out);
      return;
    }
    if (space) {
      fputc(' ', out);
      shown++;
      space = 0;
    }
    size_t len = unsafe_at(s, n, i);
    if (len) {
      print_escaped(out, s + i, len);
      i += len - 1;
      shown += len;
    } else {
      fputc(c, out);
      shown++;
    }
  }
}

/* A JSON string. The bundle's strings are UTF-8, except that a JSON manifest may spell a lone
 * surrogate ("\ud800"), which the library hands on in its 3-byte form: re-escaped here. */
static void print_json_string(FILE *out, const char *s, size_t n) {
  fputc('"', out);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
    else if (c == '\n') fputs("\\n", out);
    else if (c == '\t') fputs("\\t", out);
    else if (c == '\r') fputs("\\r", out);
    else if (c < 0x20) fprintf(out, "\\u%04x", c);
    else if (c == 0xED && i + 2 < n && (unsigned char)s[i + 1] >= 0xA0) {
      unsigned cp = (unsigned)(c & 0x0F) << 12 | (unsigned)(s[i + 1] & 0x3F) << 6 | (unsigned)(s[i + 2] & 0x3F);
      fprintf(out, "\\u%04x", cp);
      i += 2;
    } else fputc(c, out);
  }
  fputc('"', out);
}

static void print_json_field(FILE *out, const char *key, kbp_string value) {
  if (!value.s) return;
  fprintf(out, ",\"%s\":", key);
  print_json_string(out, value.s, value.len);
}

/* A score as JSON: every digit a double holds (%.17g reads back exactly); null if not finite. */
static void print_json_score(FILE *out, double v) {
  if (isfinite(v)) fprintf(out, "%.17g", v);
  else fputs("null", out);
}

static void print_json_string_or_null(FILE *out, kbp_string v) {
  if (v.s) print_json_string(out, v.s, v.len);
  else fputs("null", out);
}

/* ---------------------------------------------------------------- reading float32 files */

/* Exactly `count` little-endian float32 from `path` into a malloc'd array. */
static int read_f32(const char *path, size_t count, float **out) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f) return complain("%s: cannot open", path);
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || (unsigned long long)st.st_size != (unsigned long long)count * 4) {
    fprintf(stderr, "kbpack: %s: expected %zu float32 values (%zu bytes), found %lld bytes\n", path, count, count * 4,
            (long long)st.st_size);
    fclose(f);
    return EXIT_USAGE;
  }
  unsigned char *raw = malloc(count * 4 + 1);
  float *v = malloc(count * sizeof *v + 1);
  int ok = raw && v && fread(raw, 4, count, f) == count;
  fclose(f);
  for (size_t i = 0; ok && i < count; i++) {
    unsigned long bits = (unsigned long)raw[4 * i] | (unsigned long)raw[4 * i + 1] << 8 |
                         (unsigned long)raw[4 * i + 2] << 16 | (unsigned long)raw[4 * i + 3] << 24;
    uint32_t b32 = (uint32_t)bits;
    memcpy(&v[i], &b32, 4);
  }
  free(raw);
  if (!ok) {
    free(v);
    return complain("%s: read error", path);
  }
  *out = v;
  return 0;
}

/* ---------------------------------------------------------------- commands */

static int cmd_info(kbp_bundle *kb) {
  unsigned major, minor;
  size_t manifest_len;
  kbp_format_version(kb, &major, &minor);
  kbp_manifest_json(kb, &manifest_len);
  printf("format: %u.%u\n", major, minor);
  printf("count: %llu\n", (unsigned long long)kbp_count(kb));
  printf("dim: %zu\n", kbp_dim(kb));
  printf("dtype: %s\n", kbp_dtype(kb));
  if (strcmp(kbp_dtype(kb), "int8") == 0) printf("scales: vector_scales (%zu float32, one per dimension)\n", kbp_dim(kb));
  unsigned candidates, multiplier;
  if (kbp_binary(kb, &candidates, &multiplier))
    printf("binary: vectors_binary (%zu bytes per chunk), candidates %u, multiplier %u\n", (kbp_dim(kb) + 7) / 8,
           candidates, multiplier);
  else
    printf("binary: no\n");
  printf("block_size: %llu\n", (unsigned long long)kbp_block_size(kb));
  printf("embedder: ");
  print_safe(stdout, kbp_embedder_name(kb), strlen(kbp_embedder_name(kb)));
  printf("\nlexical: %s\n", kbp_has_lexical(kb) ? "yes" : "no");
  printf("sections:\n");
  for (size_t i = 0; i < kbp_section_count(kb); i++) {
    kbp_section s;
    kbp_section_at(kb, i, &s);
    printf("  %-20s %-12s offset %-10llu length %-10llu sha256 ", s.name, s.encoding, (unsigned long long)s.offset,
           (unsigned long long)s.length);
    for (int b = 0; b < 8; b++) printf("%02x", s.sha256[b]);
    printf("%s\n", s.known ? "" : "  (not read by this reader)");
  }
  return 0;
}

static int cmd_verify(kbp_bundle *kb) {
  if (kbp_verify(kb) != KBP_OK) return report_last(kb);
  printf("intact\n");
  return 0;
}

static int cmd_chunk(kbp_bundle *kb, const char *id_text) {
  unsigned long long id;
  kbp_chunk c;
  if (parse_count(id_text, UINT64_MAX, &id)) return usage();
  if (kbp_chunk_get(kb, id, &c) != KBP_OK) return report_last(kb);
  printf("{\"id\":%llu", (unsigned long long)c.id);
  print_json_field(stdout, "text", c.text);
  print_json_field(stdout, "context", c.context);
  print_json_field(stdout, "source_path", c.source_path);
  static const unsigned bits[] = {KBP_FIELD_SOURCE, KBP_FIELD_SEQ, KBP_FIELD_PAGE_START, KBP_FIELD_PAGE_END,
                                  KBP_FIELD_CHAR_START, KBP_FIELD_CHAR_END, KBP_FIELD_TOKENS};
  static const char *const names[] = {"source", "seq", "page_start", "page_end", "char_start", "char_end", "tokens"};
  const int64_t values[] = {c.source, c.seq, c.page_start, c.page_end, c.char_start, c.char_end, c.tokens};
  for (size_t i = 0; i < sizeof bits / sizeof *bits; i++)
    if (c.fields & bits[i]) printf(",\"%s\":%lld", names[i], (long long)values[i]);
  print_json_field(stdout, "label_start", c.label_start);
  print_json_field(stdout, "label_end", c.label_end);
  print_json_field(stdout, "record", c.record);
  printf("}\n");
  return 0;
}

typedef struct {
  kbp_mode mode;
  kbp_unit unit;
  unsigned long long k;
  const char *vector_path, *question;
  const char *where[64]; /* the filter's conditions (at most 64, as kbp_filter_compile takes) */
  size_t n_where;
  int json; /* --json: one JSON object with the exact values, for programs */
} search_args;

static int parse_search_args(int argc, char **argv, search_args *a) {
  int options_done = 0;
  a->mode = KBP_MODE_DEFAULT;
  a->unit = KBP_UNIT_DEFAULT;
  a->k = 10;
  a->vector_path = a->question = NULL;
  a->n_where = 0;
  a->json = 0;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    int has_value = i + 1 < argc;
    if (!options_done && strcmp(arg, "--") == 0) options_done = 1;
    else if (!options_done && strcmp(arg, "--mode") == 0 && has_value) {
      const char *m = argv[++i];
      if (strcmp(m, "dense") == 0) a->mode = KBP_MODE_DENSE;
      else if (strcmp(m, "lexical") == 0) a->mode = KBP_MODE_LEXICAL;
      else if (strcmp(m, "hybrid") == 0) a->mode = KBP_MODE_HYBRID;
      else return -1;
    } else if (!options_done && strcmp(arg, "--unit") == 0 && has_value) {
      const char *u = argv[++i];
      if (strcmp(u, "chunk") == 0) a->unit = KBP_UNIT_CHUNK;
      else if (strcmp(u, "page") == 0) a->unit = KBP_UNIT_PAGE;
      else return -1;
    } else if (!options_done && strcmp(arg, "-k") == 0 && has_value) {
      if (parse_count(argv[++i], 1000000000ULL, &a->k)) return -1;
    } else if (!options_done && strcmp(arg, "--where") == 0 && has_value) {
      if (a->n_where == sizeof a->where / sizeof a->where[0]) return -1;
      a->where[a->n_where++] = argv[++i];
    } else if (!options_done && strcmp(arg, "--json") == 0) {
      a->json = 1;
    } else if (!options_done && strcmp(arg, "--vector") == 0 && has_value) {
      a->vector_path = argv[++i];
    } else if (!options_done && arg[0] == '-' && arg[1] != 0) {
      return -1;
    } else if (!a->question) {
      a->question = arg;
    } else {
      return -1;
    }
  }
  return 0;
}

static const char *mode_name(kbp_mode mode) {
  return mode == KBP_MODE_LEXICAL ? "lexical" : mode == KBP_MODE_HYBRID ? "hybrid" : "dense";
}

static void print_json_int_or_null(FILE *out, const char *key, const kbp_chunk *c, unsigned bit, int64_t v) {
  fprintf(out, ",\"%s\":", key);
  if (c->fields & bit) fprintf(out, "%lld", (long long)v);
  else fputs("null", out);
}

/* Where a hit is, for a person: SOURCE[#RECORD] p.PAGES (p.N-M across pages, nothing without). */
static void print_place(const kbp_chunk *c, int64_t page, int whole_range) {
  print_name(stdout, c->source_path.s, c->source_path.len);
  if (c->record.s) {
    fputc('#', stdout);
    print_name(stdout, c->record.s, c->record.len);
  }
  if (page > 0 && (!whole_range || !(c->fields & KBP_FIELD_PAGE_END) || c->page_end == page))
    printf(" p.%lld", (long long)page);
  else if (page > 0)
    printf(" p.%lld-%lld", (long long)page, (long long)c->page_end);
}

/* Below a hit: the chunk's context in brackets, then its first words. */
static void print_body(const kbp_chunk *c) {
  if (c->context.s && c->context.len) {
    fputs("   [", stdout);
    print_words(stdout, c->context.s, c->context.len, 120);
    fputs("]\n", stdout);
  }
  fputs("   ", stdout);
  print_words(stdout, c->text.s, c->text.len, 200);
  fputc('\n', stdout);
}

/* The answer strength of the first hit (kbp_answer_strength): in the JSON object's "answer", and on
 * standard error when it is under the bundle's threshold ("no confident answer"). Lexical search has
 * no question vector: no strength, and neither confident nor not (null), as kbc query says, even when
 * --vector was given. */
typedef struct {
  int known;     /* 0: no vector or no hit */
  double strength;
  int confident; /* 1, 0, or -1 when the bundle records no threshold or nothing was measured */
} answer_info;

static int answer_of(kbp_bundle *kb, kbp_mode mode, const float *q, int have_first, uint64_t first, answer_info *a) {
  a->known = 0;
  a->strength = 0.0;
  a->confident = -1;
  if (mode == KBP_MODE_LEXICAL || !q) return 0;
  if (!have_first) {
    double t;
    if (kbp_min_strength(kb, &t) == KBP_OK) a->confident = 0; /* a threshold and no hit: not confident */
    return 0;
  }
  if (kbp_answer_strength(kb, q, first, &a->strength, &a->confident) != KBP_OK) return report_last(kb);
  a->known = 1;
  return 0;
}

static void print_json_answer(const answer_info *a) {
  fputs(",\"answer\":{\"strength\":", stdout);
  if (a->known) print_json_score(stdout, a->strength);
  else fputs("null", stdout);
  printf(",\"confident\":%s}", a->confident < 0 ? "null" : a->confident ? "true" : "false");
}

static void warn_unconfident(kbp_bundle *kb, const answer_info *a) {
  double t;
  if (a->known && a->confident == 0 && kbp_min_strength(kb, &t) == KBP_OK)
    fprintf(stderr, "kbpack: no confident answer: the first hit's strength %.3f is under %.3f (the bundle's "
                    "min_strength); the bundle may have nothing on this\n", a->strength, t);
}

/* The k best pages, each with its chunks (kbp_search_pages). */
static int search_pages(kbp_bundle *kb, const float *q, const char *question, unsigned long long k_asked, kbp_mode mode,
                        const kbp_filter *filter, int json) {
  size_t depth;
  if (kbp_page_settings(kb, &depth, NULL, NULL) != KBP_OK) return report_last(kb);
  size_t k = k_asked < depth ? (size_t)k_asked : depth, n = 0; /* no more than page_depth pages come back */
  kbp_page_hit *pages = malloc((k ? k : 1) * sizeof *pages);
  int code = 0;
  if (!pages) return complain("%s", "out of memory");
  if (kbp_search_pages_filtered(kb, q, question, k, mode, filter, pages, &n) != KBP_OK) code = report_last(kb);
  for (size_t i = 0; code == 0 && i < n; i++) { /* every chunk read before a line is printed: an error prints none */
    kbp_chunk c;
    if (kbp_chunk_get(kb, pages[i].chunk_ids[0], &c) != KBP_OK) code = report_last(kb);
  }
  answer_info answer;
  if (code == 0) code = answer_of(kb, mode, q, n > 0, n ? pages[0].chunk_ids[0] : 0, &answer);
  if (code == 0 && !json) warn_unconfident(kb, &answer);
  if (code == 0 && json) printf("{\"mode\":\"%s\",\"unit\":\"page\",\"pages\":[", mode_name(mode));
  for (size_t i = 0; code == 0 && i < n; i++) {
    kbp_chunk c;
    if (kbp_chunk_get(kb, pages[i].chunk_ids[0], &c) != KBP_OK) { /* its source path, its first words */
      code = report_last(kb);
      break;
    }
    if (json) {
      printf("%s{\"score\":", i ? "," : "");
      print_json_score(stdout, pages[i].score);
      printf(",\"source\":%lld,\"page\":%lld,\"source_path\":", (long long)pages[i].source, (long long)pages[i].page);
      print_json_string(stdout, c.source_path.s, c.source_path.len);
      fputs(",\"record\":", stdout);
      print_json_string_or_null(stdout, pages[i].record);
      fputs(",\"chunks\":[", stdout);
      for (size_t j = 0; j < pages[i].n_chunks; j++) {
        printf("%s{\"id\":%llu,\"score\":", j ? "," : "", (unsigned long long)pages[i].chunk_ids[j]);
        print_json_score(stdout, pages[i].chunk_scores[j]);
        fputc('}', stdout);
      }
      fputs("]}", stdout);
      continue;
    }
    printf("%zu. %.4f  ", i + 1, pages[i].score);
    print_place(&c, pages[i].page, 0);
    printf("  [%zu chunk%s: ", pages[i].n_chunks, pages[i].n_chunks == 1 ? "" : "s");
    for (size_t j = 0; j < pages[i].n_chunks; j++) printf("%s%llu", j ? ", " : "", (unsigned long long)pages[i].chunk_ids[j]);
    fputs("]\n", stdout);
    print_body(&c);
  }
  if (code == 0 && json) {
    fputc(']', stdout);
    print_json_answer(&answer);
    fputs("}\n", stdout);
  }
  free(pages);
  return code;
}

/* The k best chunks (kbp_search). */
static int search_chunks(kbp_bundle *kb, const float *q, const kbp_hit *hits, size_t n, kbp_mode mode, int json) {
  for (size_t i = 0; i < n; i++) { /* every chunk read before a line is printed (a chunk's strings last until
                                      the next read): an error prints none */
    kbp_chunk c;
    if (kbp_chunk_get(kb, hits[i].id, &c) != KBP_OK) return report_last(kb);
  }
  answer_info answer;
  int code = answer_of(kb, mode, q, n > 0, n ? hits[0].id : 0, &answer);
  if (code) return code;
  if (!json) warn_unconfident(kb, &answer);
  if (json) printf("{\"mode\":\"%s\",\"unit\":\"chunk\",\"hits\":[", mode_name(mode));
  for (size_t i = 0; i < n; i++) {
    kbp_chunk c;
    if (kbp_chunk_get(kb, hits[i].id, &c) != KBP_OK) return report_last(kb);
    if (json) {
      printf("%s{\"id\":%llu,\"score\":", i ? "," : "", (unsigned long long)hits[i].id);
      print_json_score(stdout, hits[i].score);
      print_json_int_or_null(stdout, "source", &c, KBP_FIELD_SOURCE, c.source);
      fputs(",\"source_path\":", stdout);
      print_json_string(stdout, c.source_path.s, c.source_path.len);
      print_json_int_or_null(stdout, "page_start", &c, KBP_FIELD_PAGE_START, c.page_start);
      print_json_int_or_null(stdout, "page_end", &c, KBP_FIELD_PAGE_END, c.page_end);
      fputs(",\"record\":", stdout);
      print_json_string_or_null(stdout, c.record);
      fputc('}', stdout);
      continue;
    }
    printf("%zu. %.4f  ", i + 1, hits[i].score);
    print_place(&c, c.fields & KBP_FIELD_PAGE_START ? c.page_start : 0, 1);
    printf("  [chunk %llu]\n", (unsigned long long)hits[i].id);
    print_body(&c);
  }
  if (json) {
    fputc(']', stdout);
    print_json_answer(&answer);
    fputs("}\n", stdout);
  }
  return 0;
}

static int cmd_search(kbp_bundle *kb, search_args a) {
  kbp_mode used;
  if (kbp_resolve_mode(kb, a.mode, &used) != KBP_OK) return report_last(kb);
  if (used != KBP_MODE_LEXICAL && !a.vector_path)
    return complain("%s search needs the question's embedding: --vector Q.f32", used == KBP_MODE_DENSE ? "dense" : "hybrid");
  if (used != KBP_MODE_DENSE && !a.question)
    return complain("%s search needs a QUESTION", used == KBP_MODE_LEXICAL ? "lexical" : "hybrid");
  kbp_unit unit = a.unit;
  if (unit == KBP_UNIT_DEFAULT && kbp_default_unit(kb, &unit) != KBP_OK) return report_last(kb);
  kbp_filter *filter = NULL;
  if (a.n_where && kbp_filter_compile(kb, a.where, a.n_where, &filter) != KBP_OK) return report_last(kb);
  if (filter)
    fprintf(stderr, "kbpack: filter: %llu of %llu chunks match\n", (unsigned long long)kbp_filter_matched(filter),
            (unsigned long long)kbp_count(kb));
  float *q = NULL;
  int code = a.vector_path ? read_f32(a.vector_path, kbp_dim(kb), &q) : 0;
  if (code == 0 && unit == KBP_UNIT_PAGE) {
    code = search_pages(kb, q, a.question, a.k, used, filter, a.json);
  } else if (code == 0) {
    size_t k = a.k < kbp_count(kb) ? (size_t)a.k : (size_t)kbp_count(kb), n = 0;
    kbp_hit *hits = malloc((k ? k : 1) * sizeof *hits);
    if (!hits) code = complain("%s", "out of memory");
    else if (kbp_search_filtered(kb, q, a.question, k, used, filter, hits, &n) != KBP_OK) code = report_last(kb);
    else code = search_chunks(kb, q, hits, n, used, a.json);
    free(hits);
  }
  kbp_filter_free(filter);
  free(q);
  return code;
}

static int cmd_probe(kbp_bundle *kb, const char *vectors_path) {
  size_t n;
  if (kbp_probe_count(kb, &n) != KBP_OK) return report_last(kb);
  float *v = NULL;
  double *cosines = malloc((n ? n : 1) * sizeof *cosines);
  int code = cosines ? read_f32(vectors_path, n * kbp_dim(kb), &v) : complain("%s", "out of memory");
  kbp_probe_result r;
  if (code == 0 && kbp_probe_check(kb, v, n, cosines, &r) != KBP_OK) code = report_last(kb);
  for (size_t i = 0; code == 0 && i < n; i++) {
    kbp_probe p;
    if (kbp_probe_get(kb, i, &p) != KBP_OK) {
      code = report_last(kb);
      break;
    }
    print_safe(stdout, p.kind.s, p.kind.len);
    printf("%*s %.6f%s\n", p.kind.len < 18 ? (int)(18 - p.kind.len) : 0, "", cosines[i],
           cosines[i] >= r.threshold ? "" : "  < threshold");
  }
  if (code == 0) {
    kbp_probe worst;
    printf("min %.6f (probe %zu", r.min_cosine, r.worst);
    if (n && kbp_probe_get(kb, r.worst, &worst) == KBP_OK) {
      printf(", ");
      print_safe(stdout, worst.kind.s, worst.kind.len);
    }
    printf("), mean %.6f, threshold %g: %s\n", r.mean_cosine, r.threshold, r.passed ? "PASS" : "FAIL");
    code = r.passed ? 0 : EXIT_PROBE_FAILED;
  }
  free(v);
  free(cosines);
  return code;
}

/* No bundle is opened: kbp_apply_delta checks the old one by its SHA-256, the new one too. */
static int cmd_apply(int argc, char **argv) {
  if (argc != 6 || strcmp(argv[4], "-o") != 0) return usage();
  kbp_error err;
  if (kbp_apply_delta(argv[2], argv[3], argv[5], &err) != KBP_OK) return report(&err);
  printf("%s: verified\n", argv[5]);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) return usage();
  if (strcmp(argv[1], "apply") == 0) return cmd_apply(argc, argv);
  const char *command = argv[1], *path = argv[2];
  int known = strcmp(command, "info") == 0 || strcmp(command, "verify") == 0 || strcmp(command, "chunk") == 0 ||
              strcmp(command, "search") == 0 || strcmp(command, "probe") == 0;
  if (!known) return usage();
  int takes_one_more = strcmp(command, "chunk") == 0 || strcmp(command, "probe") == 0;
  search_args search = {KBP_MODE_DEFAULT, KBP_UNIT_DEFAULT, 10, NULL, NULL, {NULL}, 0, 0};
  if (strcmp(command, "search") == 0 ? parse_search_args(argc - 3, argv + 3, &search) != 0 : argc != 3 + takes_one_more)
    return usage();
  int code = 0;
  kbp_bundle *kb = open_bundle(path, &code);
  if (!kb) return code;
  if (strcmp(command, "info") == 0) code = cmd_info(kb);
  else if (strcmp(command, "verify") == 0) code = cmd_verify(kb);
  else if (strcmp(command, "chunk") == 0) code = cmd_chunk(kb, argv[3]);
  else if (strcmp(command, "probe") == 0) code = cmd_probe(kb, argv[3]);
  else code = cmd_search(kb, search);
  kbp_close(kb);
  if (fflush(stdout) != 0 && code == 0) code = EXIT_USAGE; /* e.g. a closed pipe */
  return code;
}
