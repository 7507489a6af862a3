/* libkbpack, kernels.c: the inner products of the dense scan's int8 and float16 rows with the float32
 * query (dense.c scores rows with them), written once in portable C and again with the CPU's SIMD
 * instructions, the widest it has picked at run time: x86-64 AVX-512F, else AVX2 (target attributes:
 * the rest of the library stays baseline x86-64); aarch64 NEON; WebAssembly built with -msimd128
 * (runtimes/js) its 128-bit SIMD. Elsewhere the portable code.
 *
 * Same results, bit for bit. Every kernel keeps 64 partial sums, lane j adding w[i + j] x row[i + j]
 * for i = 0, 64, 128, ..., the tail's elements to lanes 0, 1, ..., then folds the lanes pairwise (32,
 * 16, ..., 1), as dense.c's float32 dot does with 16. 64, not 16: an int8 row is read four times
 * faster than a float32 one, so one chain of dependent adds per row (16 lanes in one AVX-512
 * register) would make the add's latency the limit; four registers are four independent chains. Each int8 and each finite half converts to float exactly, and a
 * product and a sum round the same in a SIMD lane as in a scalar register (no FMA: kbpack_internal.h
 * turns contraction off), so a SIMD kernel returns exactly the portable one's float: tolerance 0,
 * tested (tests/test_c_kernels.py) on every path this CPU has and on NEON under QEMU.
 *
 * Why not the CPU's int8 dot-product instructions (AVX-512 VNNI, ARM's SDOT): they multiply int8 by
 * int8, so the query would have to be quantised too, and the score would no longer be FORMAT.md
 * §2.7's Σ (q[d] x scale[d]) x v[d] in float32 that kbc's Python reader computes: rankings could
 * differ. The int8 rows' speed comes from reading a quarter of float32's bytes and widening 16 of
 * them per instruction. */
#include "kbpack_internal.h"

#define LANES 64

/* The tail (n - i < 16 elements) into lanes 0, 1, ..., then the pairwise fold: shared by every kernel. */
static float finish_i8(float *acc, const int8_t *v, const float *w, size_t i, size_t n) {
  for (size_t j = 0; i < n; i++, j++) acc[j] += w[i] * (float)v[i];
  for (size_t width = LANES / 2; width; width /= 2)
    for (size_t j = 0; j < width; j++) acc[j] += acc[j + width];
  return acc[0];
}

static float finish_f16(float *acc, const uint8_t *p, const float *w, size_t i, size_t n) {
  for (size_t j = 0; i < n; i++, j++) {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    acc[j] += w[i] * kbpi_half_to_float(h);
  }
  for (size_t width = LANES / 2; width; width /= 2)
    for (size_t j = 0; j < width; j++) acc[j] += acc[j + width];
  return acc[0];
}

/* ---- portable C: what every other kernel must equal */

static float dot_i8_portable(const int8_t *v, const float *w, size_t n) {
  float acc[LANES] = {0};
  size_t i = 0;
  for (; i + LANES <= n; i += LANES)
    for (size_t j = 0; j < LANES; j++) acc[j] += w[i + j] * (float)v[i + j];
  return finish_i8(acc, v, w, i, n);
}

static float dot_f16_portable(const uint8_t *p, const float *w, size_t n) {
  float acc[LANES] = {0};
  size_t i = 0;
  uint16_t h[LANES];
  for (; i + LANES <= n; i += LANES) {
    memcpy(h, p + 2 * i, sizeof h); /* little-endian halves on a little-endian host (dense.c checks) */
    for (size_t j = 0; j < LANES; j++) acc[j] += w[i + j] * kbpi_half_to_float(h[j]);
  }
  return finish_f16(acc, p, w, i, n);
}

/* ---- SIMD. 64 lanes as the portable code's acc[0..63]: four AVX-512 registers (lanes 16k..16k+15),
 * eight AVX2 ones (8k..8k+7), sixteen NEON ones (4k..4k+3). Each step widens 64 row elements to
 * floats, multiplies them by the query's 64 and adds: a multiply then an add, each rounded, as in C. */
/* -DKBP_PORTABLE_KERNELS builds the portable code only (bench/simd_scan.py's "before") */
/* Accumulators are named variables, not an array: GCC -O2 keeps an array of vectors in memory when
 * its loop over them is not unrolled, and a store and a load per step would cost more than the add. */
#define REPEAT4(X) X(0) X(1) X(2) X(3)
#define REPEAT8(X) REPEAT4(X) X(4) X(5) X(6) X(7)
#define REPEAT16(X) REPEAT8(X) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(KBP_PORTABLE_KERNELS)
#define KBP_X86_KERNELS 1

#define AVX2_ZERO(k) __m256 s##k = _mm256_setzero_ps();
#define AVX2_STORE(k) _mm256_storeu_ps(acc + 8 * k, s##k);
#define AVX2_I8_STEP(k)                                                                                   \
  s##k = _mm256_add_ps(s##k, _mm256_mul_ps(_mm256_loadu_ps(w + i + 8 * k),                                \
                                           _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(                        \
                                               _mm_loadl_epi64((const __m128i *)(const void *)(v + i + 8 * k))))));
#define AVX2_F16_STEP(k) s##k = _mm256_add_ps(s##k, _mm256_mul_ps(_mm256_loadu_ps(w + i + 8 * k), halves8_avx2(p + 2 * (i + 8 * k))));

/* The pairwise fold of finish_i8 (lane j += lane j + width, width 32, 16, ..., 1) done in registers:
 * the same additions of the same lanes, so the same float, without a trip through memory. */
__attribute__((target("avx2"))) static inline float fold8_avx2(__m256 s0, __m256 s1, __m256 s2, __m256 s3, __m256 s4,
                                                               __m256 s5, __m256 s6, __m256 s7) {
  s0 = _mm256_add_ps(s0, s4), s1 = _mm256_add_ps(s1, s5), s2 = _mm256_add_ps(s2, s6), s3 = _mm256_add_ps(s3, s7);
  s0 = _mm256_add_ps(s0, s2), s1 = _mm256_add_ps(s1, s3);
  s0 = _mm256_add_ps(s0, s1);
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)));
}

__attribute__((target("avx2"))) static float dot_i8_avx2(const int8_t *v, const float *w, size_t n) {
  REPEAT8(AVX2_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT8(AVX2_I8_STEP)
  }
  if (i == n) return fold8_avx2(s0, s1, s2, s3, s4, s5, s6, s7);
  float acc[LANES];
  REPEAT8(AVX2_STORE)
  return finish_i8(acc, v, w, i, n);
}

/* 8 halves to floats, exactly, by kbpi_half_to_float's bit rule (F16C would do it too, but clang cannot
 * ask the CPU for F16C at run time; every AVX2 instruction used here is exact) */
__attribute__((target("avx2"))) static inline __m256 halves8_avx2(const uint8_t *p) {
  __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)p));
  __m256i magnitude = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x7fff)), 13);
  __m256 f = _mm256_mul_ps(_mm256_castsi256_ps(magnitude), _mm256_set1_ps(0x1p112f));
  __m256i sign = _mm256_slli_epi32(_mm256_and_si256(h, _mm256_set1_epi32(0x8000)), 16);
  return _mm256_or_ps(f, _mm256_castsi256_ps(sign));
}

__attribute__((target("avx2"))) static float dot_f16_avx2(const uint8_t *p, const float *w, size_t n) {
  REPEAT8(AVX2_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT8(AVX2_F16_STEP)
  }
  if (i == n) return fold8_avx2(s0, s1, s2, s3, s4, s5, s6, s7);
  float acc[LANES];
  REPEAT8(AVX2_STORE)
  return finish_f16(acc, p, w, i, n);
}

#define AVX512_ZERO(k) __m512 s##k = _mm512_setzero_ps();
#define AVX512_STORE(k) _mm512_storeu_ps(acc + 16 * k, s##k);
#define AVX512_I8_STEP(k)                                                                                 \
  s##k = _mm512_add_ps(s##k, _mm512_mul_ps(_mm512_loadu_ps(w + i + 16 * k),                               \
                                           _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(                        \
                                               _mm_loadu_si128((const __m128i *)(const void *)(v + i + 16 * k))))));
/* vcvtph2ps: AVX-512F's exact half-to-float conversion, 16 at a time */
#define AVX512_F16_STEP(k)                                                                                \
  s##k = _mm512_add_ps(s##k, _mm512_mul_ps(_mm512_loadu_ps(w + i + 16 * k),                               \
                                           _mm512_cvtph_ps(_mm256_loadu_si256(                             \
                                               (const __m256i *)(const void *)(p + 2 * (i + 16 * k))))));

/* finish_i8's fold in registers, as fold8_avx2 (AVX-512F only: the upper half through a double cast) */
__attribute__((target("avx512f"))) static inline float fold4_avx512(__m512 s0, __m512 s1, __m512 s2, __m512 s3) {
  s0 = _mm512_add_ps(s0, s2), s1 = _mm512_add_ps(s1, s3);
  s0 = _mm512_add_ps(s0, s1);
  __m256 y = _mm256_add_ps(_mm512_castps512_ps256(s0), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s0), 1)));
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(y), _mm256_extractf128_ps(y, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  return _mm_cvtss_f32(_mm_add_ss(x, _mm_shuffle_ps(x, x, 1)));
}

__attribute__((target("avx512f"))) static float dot_i8_avx512(const int8_t *v, const float *w, size_t n) {
  REPEAT4(AVX512_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT4(AVX512_I8_STEP)
  }
  if (i == n) return fold4_avx512(s0, s1, s2, s3);
  float acc[LANES];
  REPEAT4(AVX512_STORE)
  return finish_i8(acc, v, w, i, n);
}

__attribute__((target("avx512f"))) static float dot_f16_avx512(const uint8_t *p, const float *w, size_t n) {
  REPEAT4(AVX512_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT4(AVX512_F16_STEP)
  }
  if (i == n) return fold4_avx512(s0, s1, s2, s3);
  float acc[LANES];
  REPEAT4(AVX512_STORE)
  return finish_f16(acc, p, w, i, n);
}
#endif

#if defined(__aarch64__) && defined(__ARM_NEON) && !defined(KBP_PORTABLE_KERNELS)
#define KBP_NEON_KERNELS 1

#define NEON_ZERO(k) float32x4_t s##k = vdupq_n_f32(0);
#define NEON_STORE(k) vst1q_f32(acc + 4 * k, s##k);
/* lanes 4k .. 4k + 3: bytes 4k .. 4k + 3 widened int8 -> int16 -> int32 -> float */
#define NEON_I8_STEP(k)                                                                                   \
  {                                                                                                       \
    int16x8_t h16 = vmovl_s8(vld1_s8(v + i + 8 * (k / 2)));                                               \
    int32x4_t i32 = vmovl_s16((k) % 2 ? vget_high_s16(h16) : vget_low_s16(h16));                         \
    s##k = vaddq_f32(s##k, vmulq_f32(vld1q_f32(w + i + 4 * k), vcvtq_f32_s32(i32)));                      \
  }
/* fcvtl: aarch64's exact half-to-float conversion (base ARMv8, no extension needed) */
#define NEON_F16_STEP(k)                                                                                  \
  s##k = vaddq_f32(s##k, vmulq_f32(vld1q_f32(w + i + 4 * k),                                              \
                                   vcvt_f32_f16(vreinterpret_f16_u16(                                     \
                                       vld1_u16((const uint16_t *)(const void *)(p + 2 * (i + 4 * k)))))));

/* finish_i8's fold in registers (lanes 4k..4k+3 in s[k]), as fold8_avx2 */
static inline float fold16_neon(float32x4_t *s) {
  for (int width = 8; width; width /= 2) /* 32, 16, 8, 4 lanes: whole registers */
    for (int k = 0; k < width; k++) s[k] = vaddq_f32(s[k], s[k + width]);
  float32x2_t x = vadd_f32(vget_low_f32(s[0]), vget_high_f32(s[0]));
  return vget_lane_f32(x, 0) + vget_lane_f32(x, 1);
}

static float dot_i8_neon(const int8_t *v, const float *w, size_t n) {
  REPEAT16(NEON_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT16(NEON_I8_STEP)
  }
  if (i == n) {
    float32x4_t all[16] = {s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15};
    return fold16_neon(all);
  }
  float acc[LANES];
  REPEAT16(NEON_STORE)
  return finish_i8(acc, v, w, i, n);
}

static float dot_f16_neon(const uint8_t *p, const float *w, size_t n) {
  REPEAT16(NEON_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT16(NEON_F16_STEP)
  }
  if (i == n) {
    float32x4_t all[16] = {s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15};
    return fold16_neon(all);
  }
  float acc[LANES];
  REPEAT16(NEON_STORE)
  return finish_f16(acc, p, w, i, n);
}
#endif

#if defined(__wasm_simd128__) && !defined(KBP_PORTABLE_KERNELS)
#define KBP_WASM_KERNELS 1

/* WebAssembly SIMD (clang -msimd128; fixed at build time: a module has no run-time choice). Lanes as
 * NEON's, four to a register; halves widened by kbpi_half_to_float's bit rule (wasm has no conversion). */
#define WASM_ZERO(k) v128_t s##k = wasm_f32x4_splat(0.0f);
/* int32 -> float by the bits of 1.5 x 2^23 + x, minus 1.5 x 2^23: exact for |x| < 2^22. Not
 * f32x4.convert: clang 14 folds the widening and the conversion into one it then does lane by lane. */
#define WASM_I8_STEP(k)                                                                                   \
  {                                                                                                       \
    v128_t h16 = wasm_i16x8_load8x8(v + i + 8 * (k / 2));                                                 \
    v128_t i32 = (k) % 2 ? wasm_i32x4_extend_high_i16x8(h16) : wasm_i32x4_extend_low_i16x8(h16);          \
    v128_t f = wasm_f32x4_sub(wasm_i32x4_add(i32, wasm_i32x4_splat(0x4b400000)), wasm_f32x4_splat(12582912.0f)); \
    s##k = wasm_f32x4_add(s##k, wasm_f32x4_mul(wasm_v128_load(w + i + 4 * k), f));                       \
  }
#define WASM_F16_STEP(k)                                                                                  \
  {                                                                                                       \
    v128_t h = wasm_u32x4_load16x4(p + 2 * (i + 4 * k));                                                  \
    v128_t f = wasm_f32x4_mul(wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x7fff)), 13),             \
                              wasm_f32x4_splat(0x1p112f));                                                \
    f = wasm_v128_or(f, wasm_i32x4_shl(wasm_v128_and(h, wasm_i32x4_splat(0x8000)), 16));                  \
    s##k = wasm_f32x4_add(s##k, wasm_f32x4_mul(wasm_v128_load(w + i + 4 * k), f));                        \
  }

static inline float fold16_wasm(v128_t *s) {
  for (int width = 8; width; width /= 2)
    for (int k = 0; k < width; k++) s[k] = wasm_f32x4_add(s[k], s[k + width]);
  v128_t x = wasm_f32x4_add(s[0], wasm_i32x4_shuffle(s[0], s[0], 2, 3, 2, 3));
  return wasm_f32x4_extract_lane(x, 0) + wasm_f32x4_extract_lane(x, 1);
}

static float dot_i8_wasm(const int8_t *v, const float *w, size_t n) {
  REPEAT16(WASM_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT16(WASM_I8_STEP)
  }
  v128_t all[16] = {s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15};
  if (i == n) return fold16_wasm(all);
  float acc[LANES];
  for (int k = 0; k < 16; k++) wasm_v128_store(acc + 4 * k, all[k]);
  return finish_i8(acc, v, w, i, n);
}

static float dot_f16_wasm(const uint8_t *p, const float *w, size_t n) {
  REPEAT16(WASM_ZERO)
  size_t i = 0;
  for (; i + LANES <= n; i += LANES) {
    REPEAT16(WASM_F16_STEP)
  }
  v128_t all[16] = {s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15};
  if (i == n) return fold16_wasm(all);
  float acc[LANES];
  for (int k = 0; k < 16; k++) wasm_v128_store(acc + 4 * k, all[k]);
  return finish_f16(acc, p, w, i, n);
}
#endif

/* ---- choosing one */

KBP_INTERNAL int kbpi_kernel_available(kbpi_kernel kernel) {
  switch (kernel) {
  case KBPI_KERNEL_PORTABLE: return 1;
#ifdef KBP_X86_KERNELS
  case KBPI_KERNEL_AVX2: return __builtin_cpu_supports("avx2");
  case KBPI_KERNEL_AVX512: return __builtin_cpu_supports("avx512f");
#endif
#ifdef KBP_NEON_KERNELS
  case KBPI_KERNEL_NEON: return 1; /* every aarch64 CPU has NEON */
#endif
#ifdef KBP_WASM_KERNELS
  case KBPI_KERNEL_WASM_SIMD: return 1; /* built with -msimd128: the module does not load without it */
#endif
  default: return 0;
  }
}

/* The widest kernel this CPU runs. __builtin_cpu_supports reads a word libgcc (or compiler-rt) fills
 * at start-up: cheap enough to ask per row, and no state of ours shared between handles. */
static kbpi_kernel best_kernel(void) {
#ifdef KBP_X86_KERNELS
  if (__builtin_cpu_supports("avx512f")) return KBPI_KERNEL_AVX512;
  if (__builtin_cpu_supports("avx2")) return KBPI_KERNEL_AVX2;
#endif
#ifdef KBP_NEON_KERNELS
  return KBPI_KERNEL_NEON;
#endif
#ifdef KBP_WASM_KERNELS
  return KBPI_KERNEL_WASM_SIMD;
#endif
  return KBPI_KERNEL_PORTABLE;
}

KBP_INTERNAL float kbpi_dot_i8(const int8_t *v, const float *w, size_t n, kbpi_kernel kernel) {
  if (kernel == KBPI_KERNEL_BEST) kernel = best_kernel();
  else if (!kbpi_kernel_available(kernel)) kernel = KBPI_KERNEL_PORTABLE;
  switch (kernel) {
#ifdef KBP_X86_KERNELS
  case KBPI_KERNEL_AVX2: return dot_i8_avx2(v, w, n);
  case KBPI_KERNEL_AVX512: return dot_i8_avx512(v, w, n);
#endif
#ifdef KBP_NEON_KERNELS
  case KBPI_KERNEL_NEON: return dot_i8_neon(v, w, n);
#endif
#ifdef KBP_WASM_KERNELS
  case KBPI_KERNEL_WASM_SIMD: return dot_i8_wasm(v, w, n);
#endif
  default: return dot_i8_portable(v, w, n);
  }
}

KBP_INTERNAL float kbpi_dot_f16(const uint8_t *p, const float *w, size_t n, kbpi_kernel kernel) {
  if (kernel == KBPI_KERNEL_BEST) kernel = best_kernel();
  else if (!kbpi_kernel_available(kernel)) kernel = KBPI_KERNEL_PORTABLE;
  switch (kernel) {
#ifdef KBP_X86_KERNELS
  case KBPI_KERNEL_AVX2: return dot_f16_avx2(p, w, n);
  case KBPI_KERNEL_AVX512: return dot_f16_avx512(p, w, n);
#endif
#ifdef KBP_NEON_KERNELS
  case KBPI_KERNEL_NEON: return dot_f16_neon(p, w, n);
#endif
#ifdef KBP_WASM_KERNELS
  case KBPI_KERNEL_WASM_SIMD: return dot_f16_wasm(p, w, n);
#endif
  default: return dot_f16_portable(p, w, n);
  }
}
