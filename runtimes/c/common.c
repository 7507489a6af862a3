/* libkbpack, common.c: the helpers every unit uses. Errors: a kbp_error filled in on one line,
 * whatever a message quotes, kbp_status_name, and the bundle's kbpi_fail, kbpi_invalid and
 * kbpi_out_of_memory, which set kb->err and return the status. Growing buffers (kbpi_reserve).
 * UTF-8 as Python's strict decoder reads it: decoding one code point, validating, encoding.
 * Little-endian fields (le) are inline in kbpack_internal.h. */
#include "kbpack_internal.h"

KBP_INTERNAL void kbpi_set_error(kbp_error *err, kbp_status status, const char *part, const char *fmt, va_list ap) {
  if (!err) return;
  err->status = status;
  snprintf(err->part, sizeof err->part, "%s", part ? part : "");
  size_t at = 0;
  if (part && *part) at = (size_t)snprintf(err->message, sizeof err->message, "%s: ", part);
  if (at < sizeof err->message) vsnprintf(err->message + at, sizeof err->message - at, fmt, ap);
  for (char *c = err->message; *c; c++)
    if (*c == '\n' || *c == '\r') *c = ' '; /* one line, whatever a message quotes */
}

KBP_INTERNAL kbp_status kbpi_report(kbp_error *err, kbp_status status, const char *part, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kbpi_set_error(err, status, part, fmt, ap);
  va_end(ap);
  return status;
}

KBP_INTERNAL void kbpi_clear_error(kbp_error *err) {
  err->status = KBP_OK;
  err->part[0] = 0;
  err->message[0] = 0;
}

const char *kbp_status_name(kbp_status status) {
  switch (status) {
  case KBP_OK: return "ok";
  case KBP_ERR_IO: return "cannot read file";
  case KBP_ERR_INVALID: return "invalid bundle";
  case KBP_ERR_ARGUMENT: return "invalid argument";
  case KBP_ERR_NOT_PRESENT: return "not in this bundle";
  case KBP_ERR_MEMORY: return "out of memory";
  }
  return "unknown status";
}

/* One code point at s[0..n): its byte length, or 0 if the bytes there are not well-formed UTF-8
 * (no overlongs, no surrogates, nothing above U+10FFFF: what Python's strict decoder accepts). */
KBP_INTERNAL size_t kbpi_utf8_next(const uint8_t *s, size_t n, uint32_t *cp) {
  uint8_t c = s[0];
  if (c < 0x80) { *cp = c; return 1; }
  size_t len;
  uint32_t v;
  uint8_t lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; }
  else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
  else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
  else return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    uint8_t b = s[i];
    if (b < (i == 1 ? lo : 0x80) || b > (i == 1 ? hi : 0xBF)) return 0;
    v = v << 6 | (b & 0x3F);
  }
  *cp = v;
  return len;
}

KBP_INTERNAL int kbpi_utf8_valid(const uint8_t *s, size_t n) {
  uint32_t cp;
  for (size_t i = 0; i < n;) {
    size_t l = kbpi_utf8_next(s + i, n - i, &cp);
    if (!l) return 0;
    i += l;
  }
  return 1;
}

/* Encodes c (surrogates too: JSON's lone "\ud800" escapes become their 3-byte form). */
KBP_INTERNAL size_t kbpi_utf8_put(uint32_t c, uint8_t *o) {
  if (c < 0x80) { o[0] = (uint8_t)c; return 1; }
  if (c < 0x800) { o[0] = (uint8_t)(0xC0 | c >> 6); o[1] = (uint8_t)(0x80 | (c & 0x3F)); return 2; }
  if (c < 0x10000) {
    o[0] = (uint8_t)(0xE0 | c >> 12); o[1] = (uint8_t)(0x80 | (c >> 6 & 0x3F)); o[2] = (uint8_t)(0x80 | (c & 0x3F));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | c >> 18); o[1] = (uint8_t)(0x80 | (c >> 12 & 0x3F));
  o[2] = (uint8_t)(0x80 | (c >> 6 & 0x3F)); o[3] = (uint8_t)(0x80 | (c & 0x3F));
  return 4;
}

KBP_INTERNAL kbp_status kbpi_fail(kbp_bundle *kb, kbp_status status, const char *part, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kbpi_set_error(&kb->err, status, part, fmt, ap);
  va_end(ap);
  return status;
}

KBP_INTERNAL kbp_status kbpi_invalid(kbp_bundle *kb, const char *part, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kbpi_set_error(&kb->err, KBP_ERR_INVALID, part, fmt, ap);
  va_end(ap);
  return KBP_ERR_INVALID;
}

KBP_INTERNAL kbp_status kbpi_out_of_memory(kbp_bundle *kb) { return kbpi_fail(kb, KBP_ERR_MEMORY, "", "out of memory"); }

/* Grows a buffer to hold at least `need` bytes. */
KBP_INTERNAL int kbpi_reserve(void **buf, size_t *cap, size_t need) {
  if (*cap >= need) return 0;
  size_t grown = need < 64 ? 64 : need;
  void *p = realloc(*buf, grown);
  if (!p) return -1;
  *buf = p;
  *cap = grown;
  return 0;
}
