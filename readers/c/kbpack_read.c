/* kbpack_read: a minimal .kbpack reader in portable C99, written from schemas/FORMAT.md alone.
 *
 * Checks the header (magic, version, header and table SHA-256, lengths), the table entries and
 * the vectors section's SHA-256, then prints dim, count and the first vector's first values:
 *
 *   dim=384 count=42 dtype=f32le
 *   first=0.01234567 -0.07654321 ...
 *
 * Build: cc -O2 -std=c99 -o kbpack_read kbpack_read.c      Exit: 0 ok, 3 invalid, 2 usage/IO.
 * dim and count come from the manifest; to stay dependency-free this reader finds them with a
 * small scan of the canonical JSON (kbc writes sorted keys without spaces). A real runtime
 * would use its JSON library.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- SHA-256 (FIPS 180-4) ---- */
typedef struct { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; } sha256;
static const uint32_t K[64] = {
  0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
  0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
  0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
  0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
  0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
  0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
  0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
  0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha_block(sha256 *s, const uint8_t *p) {
  uint32_t w[64], a, b, c, d, e, f, g, h;
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4*i] << 24 | (uint32_t)p[4*i+1] << 16 | (uint32_t)p[4*i+2] << 8 | p[4*i+3];
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i-15], 7) ^ ROR(w[i-15], 18) ^ (w[i-15] >> 3);
    uint32_t s1 = ROR(w[i-2], 17) ^ ROR(w[i-2], 19) ^ (w[i-2] >> 10);
    w[i] = w[i-16] + s0 + w[i-7] + s1;
  }
  a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3]; e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
  for (int i = 0; i < 64; i++) {
    uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}
static void sha_init(sha256 *s) {
  static const uint32_t iv[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
  memcpy(s->h, iv, sizeof iv); s->len = 0; s->n = 0;
}
static void sha_update(sha256 *s, const uint8_t *p, size_t n) {
  s->len += n;
  while (n) {
    size_t take = 64 - s->n < n ? 64 - s->n : n;
    memcpy(s->buf + s->n, p, take); s->n += take; p += take; n -= take;
    if (s->n == 64) { sha_block(s, s->buf); s->n = 0; }
  }
}
static void sha_final(sha256 *s, uint8_t out[32]) {
  uint64_t bits = s->len * 8; uint8_t pad = 0x80, zero = 0, lenb[8];
  sha_update(s, &pad, 1);
  while (s->n != 56) sha_update(s, &zero, 1);
  for (int i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
  sha_update(s, lenb, 8);
  for (int i = 0; i < 8; i++) { out[4*i] = s->h[i] >> 24; out[4*i+1] = s->h[i] >> 16; out[4*i+2] = s->h[i] >> 8; out[4*i+3] = s->h[i]; }
}
static void sha(const uint8_t *p, size_t n, uint8_t out[32]) { sha256 s; sha_init(&s); sha_update(&s, p, n); sha_final(&s, out); }

/* ---- little-endian field access (the file is little-endian whatever the host) ---- */
static uint64_t le(const uint8_t *p, int n) { uint64_t v = 0; for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i]; return v; }

static int fail(const char *where, const char *what) { fprintf(stderr, "kbpack_read: %s: %s\n", where, what); return 3; }

/* find "key":<integer> inside an object that starts at `obj` (canonical JSON, no spaces) */
static long long json_int(const char *obj, const char *end, const char *key) {
  char pat[64]; snprintf(pat, sizeof pat, "\"%s\":", key);
  size_t pl = strlen(pat);
  for (const char *p = obj; p + pl < end; p++)
    if (memcmp(p, pat, pl) == 0) return strtoll(p + pl, NULL, 10);
  return -1;
}
static const char *json_obj(const char *js, const char *end, const char *key) {
  char pat[64]; snprintf(pat, sizeof pat, "\"%s\":{", key);
  size_t pl = strlen(pat);
  for (const char *p = js; p + pl < end; p++) if (memcmp(p, pat, pl) == 0) return p + pl;
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) { fprintf(stderr, "usage: kbpack_read FILE.kbpack\n"); return 2; }
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror(argv[1]); return 2; }
  fseek(f, 0, SEEK_END); long fsize = ftell(f); fseek(f, 0, SEEK_SET);
  if (fsize < 128) return fail("header", "file shorter than the 128-byte header");
  uint8_t *d = malloc((size_t)fsize);
  if (!d || fread(d, 1, (size_t)fsize, f) != (size_t)fsize) { fclose(f); return fail("file", "read error"); }
  fclose(f);
  uint8_t dig[32];
  if (memcmp(d, "KBPACK\0\0", 8) != 0) return fail("header", "bad magic");
  unsigned major = (unsigned)le(d + 8, 2), minor = (unsigned)le(d + 10, 2);
  if (major != 1) { fprintf(stderr, "kbpack_read: header: format %u.%u is not supported (1.x)\n", major, minor); return 3; }
  sha(d, 96, dig);
  if (memcmp(dig, d + 96, 32)) return fail("header", "header sha256 mismatch");
  uint64_t count = le(d + 12, 4), toff = le(d + 16, 8), flen = le(d + 24, 8);
  if (flen != (uint64_t)fsize) return fail("file", "length differs from header (truncated?)");
  if (count > 1024 || toff % 64 || toff < 128 || toff + count * 128 != flen) return fail("header", "bad table bounds");
  sha(d + toff, count * 128, dig);
  if (memcmp(dig, d + 32, 32)) return fail("table", "table sha256 mismatch");
  const uint8_t *vec = NULL, *man = NULL; uint64_t vlen = 0, mlen = 0; char venc[17] = {0};
  for (uint64_t i = 0; i < count; i++) {
    const uint8_t *e = d + toff + 128 * i;
    uint64_t off = le(e + 48, 8), len = le(e + 56, 8);
    if (off % 64 || off < 128 || off > toff || len > toff - off) return fail("table", "section out of bounds");
    if (strncmp((const char *)e, "vectors", 32) == 0) {
      sha(d + off, len, dig);
      if (memcmp(dig, e + 64, 32)) return fail("vectors", "sha256 mismatch");
      vec = d + off; vlen = len; memcpy(venc, e + 32, 16);
    } else if (strncmp((const char *)e, "manifest", 32) == 0) {
      sha(d + off, len, dig);
      if (memcmp(dig, e + 64, 32)) return fail("manifest", "sha256 mismatch");
      man = d + off; mlen = len;
    }
  }
  if (!vec || !man) return fail("table", "vectors or manifest section missing");
  const char *js = (const char *)man, *jend = js + mlen;
  const char *vobj = json_obj(js, jend, "vectors");
  if (!vobj) return fail("manifest", "no vectors object");
  long long dim = json_int(vobj, jend, "dim"), n = json_int(vobj, jend, "count");
  int f16 = strcmp(venc, "f16le") == 0;
  if (dim <= 0 || n < 0 || (uint64_t)(n * dim * (f16 ? 2 : 4)) != vlen) return fail("vectors", "length does not match count x dim");
  printf("dim=%lld count=%lld dtype=%s\n", dim, n, venc);
  if (n > 0) {
    printf("first=");
    for (int j = 0; j < dim && j < 8; j++) {
      float x;
      if (f16) {  /* IEEE half -> float */
        uint16_t h = (uint16_t)le(vec + 2 * j, 2); uint32_t s = (uint32_t)(h & 0x8000) << 16, ex = (h >> 10) & 0x1f, m = h & 0x3ff, u;
        if (ex == 0) { if (m == 0) u = s; else { ex = 127 - 15 + 1; while (!(m & 0x400)) { m <<= 1; ex--; } u = s | ex << 23 | (m & 0x3ff) << 13; } }
        else if (ex == 31) u = s | 0x7f800000 | m << 13; else u = s | (ex + 127 - 15) << 23 | m << 13;
        memcpy(&x, &u, 4);
      } else { uint32_t u = (uint32_t)le(vec + 4 * j, 4); memcpy(&x, &u, 4); }
      printf(j ? " %.8f" : "%.8f", x);
    }
    printf("\n");
  }
  free(d);
  return 0;
}
