/* libkbpack, msgpack.c: one msgpack object at a time (kbpi_mp_next), enough for the subset chunk
 * blocks hold: nil, booleans, integers (saturated to int64, with what saturated kept, so that
 * chunks.c refuses it), floats (skipped), str, bin and ext payloads, and the counts of arrays and maps. Every
 * read is bounded by the buffer; truncation and the unused byte 0xc1 are errors. What the
 * objects must be is chunks.c's to say. */
#include "kbpack_internal.h"

static int mp_take(mp_cursor *c, uint64_t n, const uint8_t **at) {
  if ((uint64_t)(c->end - c->p) < n) return -1;
  *at = c->p;
  c->p += n;
  return 0;
}

static int mp_uint(mp_cursor *c, int bytes, uint64_t *out) { /* big-endian, as msgpack stores it */
  const uint8_t *at;
  if (mp_take(c, (uint64_t)bytes, &at)) return -1;
  uint64_t v = 0;
  for (int i = 0; i < bytes; i++) v = v << 8 | at[i];
  *out = v;
  return 0;
}

static int mp_payload(mp_cursor *c, mp_value *v, mp_kind kind, uint64_t len) {
  v->kind = kind;
  v->len = len;
  return mp_take(c, len, &v->data);
}

/* One object's header (and, for str/bin/ext, its payload). -1 on truncation or byte 0xc1. */
KBP_INTERNAL int kbpi_mp_next(mp_cursor *c, mp_value *v) {
  const uint8_t *at;
  uint64_t u;
  if (mp_take(c, 1, &at)) return -1;
  uint8_t t = *at;
  memset(v, 0, sizeof *v);
  if (t <= 0x7f) { v->kind = MP_INT; v->i = t; return 0; }
  if (t >= 0xe0) { v->kind = MP_INT; v->i = (int8_t)t; return 0; }
  if (t >= 0x80 && t <= 0x8f) { v->kind = MP_MAP; v->len = t & 0x0f; return 0; }
  if (t >= 0x90 && t <= 0x9f) { v->kind = MP_ARRAY; v->len = t & 0x0f; return 0; }
  if (t >= 0xa0 && t <= 0xbf) return mp_payload(c, v, MP_STR, t & 0x1f);
  switch (t) {
  case 0xc0: v->kind = MP_NIL; return 0;
  case 0xc2: case 0xc3: v->kind = MP_BOOL; v->i = t == 0xc3; return 0;
  case 0xc4: case 0xc5: case 0xc6:
    return mp_uint(c, 1 << (t - 0xc4), &u) ? -1 : mp_payload(c, v, MP_BIN, u);
  case 0xc7: case 0xc8: case 0xc9: /* ext 8/16/32: length, type byte, data */
    return mp_uint(c, 1 << (t - 0xc7), &u) ? -1 : mp_payload(c, v, MP_EXT, u + 1);
  case 0xca: v->kind = MP_FLOAT; return mp_take(c, 4, &at);
  case 0xcb: v->kind = MP_FLOAT; return mp_take(c, 8, &at);
  case 0xcc: case 0xcd: case 0xce: case 0xcf:
    if (mp_uint(c, 1 << (t - 0xcc), &u)) return -1;
    v->kind = MP_INT;
    v->i = u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
    v->len = u > (uint64_t)INT64_MAX ? u : 0; /* what saturated: chunks.c refuses it (FORMAT.md 2.1) */
    return 0;
  case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
    int bytes = 1 << (t - 0xd0);
    if (mp_uint(c, bytes, &u)) return -1;
    v->kind = MP_INT;
    if (bytes < 8 && (u >> (8 * bytes - 1))) u |= ~(uint64_t)0 << (8 * bytes); /* sign-extend */
    memcpy(&v->i, &u, sizeof u);
    return 0;
  }
  case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1..16 */
    return mp_payload(c, v, MP_EXT, ((uint64_t)1 << (t - 0xd4)) + 1);
  case 0xd9: case 0xda: case 0xdb:
    return mp_uint(c, 1 << (t - 0xd9), &u) ? -1 : mp_payload(c, v, MP_STR, u);
  case 0xdc: case 0xdd:
    if (mp_uint(c, 2 << (t - 0xdc), &u)) return -1;
    v->kind = MP_ARRAY; v->len = u;
    return 0;
  case 0xde: case 0xdf:
    if (mp_uint(c, 2 << (t - 0xde), &u)) return -1;
    v->kind = MP_MAP; v->len = u;
    return 0;
  default: return -1; /* 0xc1: never used */
  }
}
