/* kbpack_jni.c: the JNI side of dev.kbc.kbpack.KbPack (runtimes/java), over libkbpack's C API
 * (runtimes/c/kbpack.h). Each function maps one kbp_* call: arguments checked again here (the
 * Java side checks first, with friendlier messages, but a caller of the natives through reflection
 * must not crash the JVM either), errors thrown as dev.kbc.kbpack.KbPackException with libkbpack's
 * status, part and one-line message. Strings cross as byte[] of UTF-8, never through JNI's
 * NewStringUTF: that takes modified UTF-8, which a chunk's NULs and 4-byte characters are not.
 * No state is kept here; the handle is the kbp_bundle pointer in a Java long. */
#include <jni.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kbpack.h"

#define EXC "dev/kbc/kbpack/KbPackException"

static kbp_bundle *bundle_of(jlong h) { return (kbp_bundle *)(intptr_t)h; }
static const kbp_filter *filter_of(jlong f) { return (const kbp_filter *)(intptr_t)f; } /* 0: no filter */

static jbyteArray bytes(JNIEnv *env, const char *s, size_t len) {
  if (!s) return NULL;
  if (len > INT32_MAX) len = INT32_MAX; /* a Java array holds at most 2^31-1 bytes */
  jbyteArray out = (*env)->NewByteArray(env, (jsize)len);
  if (out) (*env)->SetByteArrayRegion(env, out, 0, (jsize)len, (const jbyte *)s);
  return out;
}

/* Throws KbPackException(status, part, message) through its factory; returns nothing useful. */
static void throw_error(JNIEnv *env, int status, const char *part, const char *message) {
  if ((*env)->ExceptionCheck(env)) return; /* an OutOfMemoryError already pending says more */
  jclass cls = (*env)->FindClass(env, EXC);
  if (!cls) return;
  jmethodID make = (*env)->GetStaticMethodID(env, cls, "fromNative", "(I[B[B)L" EXC ";");
  if (!make) return;
  jbyteArray p = bytes(env, part, strlen(part)), m = bytes(env, message, strlen(message));
  if (!p || !m) return;
  jobject exc = (*env)->CallStaticObjectMethod(env, cls, make, (jint)status, p, m);
  if (exc) (*env)->Throw(env, (jthrowable)exc);
}

static void throw_last(JNIEnv *env, kbp_bundle *kb) {
  const kbp_error *e = kbp_last_error(kb);
  throw_error(env, e->status, e->part, e->message);
}

static void throw_argument(JNIEnv *env, const char *message) { throw_error(env, KBP_ERR_ARGUMENT, "", message); }

/* The handle, or NULL with KbPackException(CLOSED) thrown */
static kbp_bundle *live(JNIEnv *env, jlong h) {
  if (h == 0) throw_error(env, -1, "", "kbpack: the bundle is closed");
  return bundle_of(h);
}

JNIEXPORT jlong JNICALL Java_dev_kbc_kbpack_KbPack_nOpenPath(JNIEnv *env, jclass cls, jbyteArray path) {
  (void)cls;
  if (!path) return throw_argument(env, "kbpack: open: the path is null"), 0;
  jsize n = (*env)->GetArrayLength(env, path);
  char *text = malloc((size_t)n + 1);
  if (!text) return throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory"), 0;
  (*env)->GetByteArrayRegion(env, path, 0, n, (jbyte *)text);
  text[n] = '\0';
  if (memchr(text, '\0', (size_t)n)) {
    free(text);
    return throw_argument(env, "kbpack: open: the path holds a NUL byte"), 0;
  }
  kbp_bundle *kb = NULL;
  kbp_error err;
  kbp_status st = kbp_open(text, &kb, &err);
  free(text);
  if (st != KBP_OK) return throw_error(env, err.status, err.part, err.message), 0;
  return (jlong)(intptr_t)kb;
}

JNIEXPORT jlong JNICALL Java_dev_kbc_kbpack_KbPack_nOpenMemory(JNIEnv *env, jclass cls, jobject direct, jbyteArray heap,
                                                              jint offset, jint length) {
  (void)cls;
  static const char empty = 0; /* kbp_open_memory wants a pointer even for 0 bytes */
  kbp_bundle *kb = NULL;
  kbp_error err;
  kbp_status st;
  if (offset < 0 || length < 0) return throw_argument(env, "kbpack: open: negative offset or length"), 0;
  if (direct) {
    const char *base = (*env)->GetDirectBufferAddress(env, direct);
    jlong capacity = (*env)->GetDirectBufferCapacity(env, direct);
    if (!base || capacity < 0) return throw_argument(env, "kbpack: open: the buffer is not a direct buffer"), 0;
    if ((jlong)offset + length > capacity) return throw_argument(env, "kbpack: open: offset + length exceed the buffer"), 0;
    st = kbp_open_memory(length ? base + offset : &empty, (size_t)length, &kb, &err);
  } else if (heap) {
    if ((jlong)offset + length > (*env)->GetArrayLength(env, heap))
      return throw_argument(env, "kbpack: open: offset + length exceed the array"), 0;
    jbyte *data = (*env)->GetByteArrayElements(env, heap, NULL);
    if (!data) return 0; /* OutOfMemoryError pending */
    st = kbp_open_memory(length ? (const char *)data + offset : &empty, (size_t)length, &kb, &err);
    (*env)->ReleaseByteArrayElements(env, heap, data, JNI_ABORT); /* read only: nothing to copy back */
  } else {
    return throw_argument(env, "kbpack: open: no buffer"), 0;
  }
  if (st != KBP_OK) return throw_error(env, err.status, err.part, err.message), 0;
  return (jlong)(intptr_t)kb;
}

JNIEXPORT void JNICALL Java_dev_kbc_kbpack_KbPack_nClose(JNIEnv *env, jclass cls, jlong h) {
  (void)env, (void)cls;
  kbp_close(bundle_of(h));
}

JNIEXPORT void JNICALL Java_dev_kbc_kbpack_KbPack_nVerify(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (kb && kbp_verify(kb) != KBP_OK) throw_last(env, kb);
}

JNIEXPORT jlong JNICALL Java_dev_kbc_kbpack_KbPack_nCount(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  return kb ? (jlong)kbp_count(kb) : 0;
}

JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nDim(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  return kb ? (jint)kbp_dim(kb) : 0;
}

JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nFormat(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  unsigned major = 0, minor = 0;
  if (kb) kbp_format_version(kb, &major, &minor);
  return (jint)((major & 0xffffu) << 16 | (minor & 0xffffu));
}

JNIEXPORT jbyteArray JNICALL Java_dev_kbc_kbpack_KbPack_nDtype(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  const char *s = kb ? kbp_dtype(kb) : NULL;
  return s ? bytes(env, s, strlen(s)) : NULL;
}

JNIEXPORT jbyteArray JNICALL Java_dev_kbc_kbpack_KbPack_nEmbedderName(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  const char *s = kb ? kbp_embedder_name(kb) : NULL;
  return s ? bytes(env, s, strlen(s)) : NULL;
}

JNIEXPORT jbyteArray JNICALL Java_dev_kbc_kbpack_KbPack_nManifestJson(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  size_t len = 0;
  const char *s = kb ? kbp_manifest_json(kb, &len) : NULL;
  return s ? bytes(env, s, len) : NULL;
}

JNIEXPORT jboolean JNICALL Java_dev_kbc_kbpack_KbPack_nHasLexical(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  return kb && kbp_has_lexical(kb) ? JNI_TRUE : JNI_FALSE;
}

JNIEXPORT jboolean JNICALL Java_dev_kbc_kbpack_KbPack_nBinary(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  return kb && kbp_binary(kb, NULL, NULL) ? JNI_TRUE : JNI_FALSE;
}

static int mode_of(JNIEnv *env, jint mode, kbp_mode *out) {
  if (mode < KBP_MODE_DEFAULT || mode > KBP_MODE_HYBRID) return throw_argument(env, "kbpack: no such search mode"), 0;
  *out = (kbp_mode)mode;
  return 1;
}

JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nResolveMode(JNIEnv *env, jclass cls, jlong h, jint mode) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  kbp_mode requested, used = KBP_MODE_DEFAULT;
  if (!kb || !mode_of(env, mode, &requested)) return 0;
  if (kbp_resolve_mode(kb, requested, &used) != KBP_OK) return throw_last(env, kb), 0;
  return (jint)used;
}

JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nDefaultUnit(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  kbp_unit unit = KBP_UNIT_CHUNK;
  if (!kb) return 0;
  if (kbp_default_unit(kb, &unit) != KBP_OK) return throw_last(env, kb), 0;
  return (jint)unit;
}

/* The query's vector (NULL when the Java side passed none) and question (NUL-terminated, NULL
 * when none), copied out of the Java heap: a search may hash sections for a second, too long to
 * hold a critical region. Returns 0 with an exception pending. */
static int query_of(JNIEnv *env, kbp_bundle *kb, jfloatArray vector, jbyteArray question, float **v, char **q) {
  *v = NULL, *q = NULL;
  if (vector) {
    jsize n = (*env)->GetArrayLength(env, vector);
    if ((size_t)n != kbp_dim(kb)) return throw_argument(env, "kbpack: search: the query vector's length is not the bundle's dim"), 0;
    *v = malloc(n ? (size_t)n * sizeof(float) : 1);
    if (!*v) return throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory"), 0;
    (*env)->GetFloatArrayRegion(env, vector, 0, n, *v);
  }
  if (question) {
    jsize n = (*env)->GetArrayLength(env, question);
    *q = malloc((size_t)n + 1);
    if (!*q) return free(*v), *v = NULL, throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory"), 0;
    (*env)->GetByteArrayRegion(env, question, 0, n, (jbyte *)*q);
    (*q)[n] = '\0'; /* a NUL inside ends the question for libkbpack */
  }
  return 1;
}

JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nSearch(JNIEnv *env, jclass cls, jlong h, jfloatArray vector,
                                                         jbyteArray question, jint k, jint mode, jlong filter,
                                                         jlongArray ids, jdoubleArray scores) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  kbp_mode m;
  if (!kb || !mode_of(env, mode, &m)) return 0;
  if (k < 1 || !ids || !scores) return throw_argument(env, "kbpack: search: k must be at least 1"), 0;
  /* at most `count` hits come back: the Java side's arrays hold min(k, count) */
  jsize room = (*env)->GetArrayLength(env, ids);
  if ((*env)->GetArrayLength(env, scores) < room) return throw_argument(env, "kbpack: search: no room for scores"), 0;
  size_t want = (size_t)k < kbp_count(kb) ? (size_t)k : (size_t)kbp_count(kb);
  if (want > (size_t)room) return throw_argument(env, "kbpack: search: no room for k hits"), 0;
  float *v;
  char *q;
  if (!query_of(env, kb, vector, question, &v, &q)) return 0;
  kbp_hit *hits = malloc((want ? want : 1) * sizeof *hits);
  size_t n = 0;
  /* a filter compiled on another handle is libkbpack's to refuse (KBP_ERR_ARGUMENT) */
  kbp_status st = hits ? kbp_search_filtered(kb, v, q, want, m, filter_of(filter), hits, &n) : KBP_ERR_MEMORY;
  free(v), free(q);
  if (st != KBP_OK) {
    free(hits);
    if (st == KBP_ERR_MEMORY && !hits) return throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory"), 0;
    return throw_last(env, kb), 0;
  }
  for (size_t i = 0; i < n; i++) {
    jlong id = (jlong)hits[i].id;
    jdouble score = hits[i].score;
    (*env)->SetLongArrayRegion(env, ids, (jsize)i, 1, &id);
    (*env)->SetDoubleArrayRegion(env, scores, (jsize)i, 1, &score);
  }
  free(hits);
  return (jint)n;
}

JNIEXPORT jobjectArray JNICALL Java_dev_kbc_kbpack_KbPack_nSearchPages(JNIEnv *env, jclass cls, jlong h,
                                                                      jfloatArray vector, jbyteArray question, jint k,
                                                                      jint mode, jlong filter) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  kbp_mode m;
  if (!kb || !mode_of(env, mode, &m)) return NULL;
  if (k < 1) return throw_argument(env, "kbpack: search: k must be at least 1"), NULL;
  size_t depth = 0;
  if (kbp_page_settings(kb, &depth, NULL, NULL) != KBP_OK) return throw_last(env, kb), NULL;
  /* at most page_depth pages come back (kbpack.h), each ~1.6 kB: room for min(k, depth) */
  size_t want = (size_t)k < depth ? (size_t)k : depth;
  float *v;
  char *q;
  if (!query_of(env, kb, vector, question, &v, &q)) return NULL;
  kbp_page_hit *pages = malloc((want ? want : 1) * sizeof *pages);
  size_t n = 0;
  kbp_status st = pages ? kbp_search_pages_filtered(kb, v, q, want, m, filter_of(filter), pages, &n) : KBP_ERR_MEMORY;
  free(v), free(q);
  if (st != KBP_OK) {
    free(pages);
    if (st == KBP_ERR_MEMORY && !pages) return throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory"), NULL;
    return throw_last(env, kb), NULL;
  }
  jclass page_cls = (*env)->FindClass(env, "dev/kbc/kbpack/PageHit");
  jmethodID make = page_cls ? (*env)->GetMethodID(env, page_cls, "<init>", "(DJ[BJ[J[D)V") : NULL;
  jobjectArray out = make ? (*env)->NewObjectArray(env, (jsize)n, page_cls, NULL) : NULL;
  for (size_t i = 0; out && i < n; i++) {
    const kbp_page_hit *p = &pages[i];
    jsize c = (jsize)p->n_chunks;
    jlongArray ids = (*env)->NewLongArray(env, c);
    jdoubleArray scores = ids ? (*env)->NewDoubleArray(env, c) : NULL;
    jbyteArray record = p->record.s ? bytes(env, p->record.s, p->record.len) : NULL;
    if (!scores || (p->record.s && !record)) {
      out = NULL;
      break;
    }
    for (jsize j = 0; j < c; j++) {
      jlong id = (jlong)p->chunk_ids[j];
      (*env)->SetLongArrayRegion(env, ids, j, 1, &id);
    }
    (*env)->SetDoubleArrayRegion(env, scores, 0, c, p->chunk_scores);
    jobject page = (*env)->NewObject(env, page_cls, make, p->score, (jlong)p->source, record, (jlong)p->page, ids, scores);
    if (!page) {
      out = NULL;
      break;
    }
    (*env)->SetObjectArrayElement(env, out, (jsize)i, page);
    (*env)->DeleteLocalRef(env, page), (*env)->DeleteLocalRef(env, ids), (*env)->DeleteLocalRef(env, scores);
    if (record) (*env)->DeleteLocalRef(env, record);
  }
  free(pages);
  return out; /* NULL only with an exception (OutOfMemoryError) pending */
}

static jbyteArray string_of(JNIEnv *env, kbp_string s) { return s.s ? bytes(env, s.s, s.len) : NULL; }

JNIEXPORT jobject JNICALL Java_dev_kbc_kbpack_KbPack_nChunk(JNIEnv *env, jclass cls, jlong h, jlong id) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (!kb) return NULL;
  if (id < 0) return throw_argument(env, "kbpack: chunk: a negative id"), NULL;
  kbp_chunk c;
  if (kbp_chunk_get(kb, (uint64_t)id, &c) != KBP_OK) return throw_last(env, kb), NULL;
  jclass chunk_cls = (*env)->FindClass(env, "dev/kbc/kbpack/Chunk");
  jmethodID make = chunk_cls ? (*env)->GetMethodID(env, chunk_cls, "<init>", "(J[B[B[BJJJJJJJ[B[B[BI)V") : NULL;
  if (!make) return NULL;
  /* the strings are valid until the next kbp_chunk_get: copied into Java arrays now */
  jbyteArray text = string_of(env, c.text), context = string_of(env, c.context), path = string_of(env, c.source_path),
             label_start = string_of(env, c.label_start), label_end = string_of(env, c.label_end),
             record = string_of(env, c.record);
  if ((*env)->ExceptionCheck(env)) return NULL;
  return (*env)->NewObject(env, chunk_cls, make, (jlong)c.id, text, context, path, (jlong)c.source, (jlong)c.seq,
                           (jlong)c.page_start, (jlong)c.page_end, (jlong)c.char_start, (jlong)c.char_end,
                           (jlong)c.tokens, label_start, label_end, record, (jint)c.fields);
}

/* ---- the answer strength (kbpack.h: kbp_answer_strength, kbp_min_strength; FORMAT.md §2.11) */

/* Returns confident (1, 0, or -1: no threshold) with strength[0] set; 0 with an exception pending. */
JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nAnswerStrength(JNIEnv *env, jclass cls, jlong h, jfloatArray vector,
                                                                 jlong first_id, jdoubleArray strength) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (!kb) return 0;
  if (!vector || !strength || (*env)->GetArrayLength(env, strength) < 1)
    return throw_argument(env, "kbpack: answer strength: no vector or no room for the strength"), 0;
  if (first_id < 0) return throw_argument(env, "kbpack: answer strength: a negative chunk id"), 0;
  float *v;
  char *q;
  if (!query_of(env, kb, vector, NULL, &v, &q)) return 0;
  double s = 0.0;
  int confident = -1;
  kbp_status st = kbp_answer_strength(kb, v, (uint64_t)first_id, &s, &confident);
  free(v);
  if (st != KBP_OK) return throw_last(env, kb), 0;
  (*env)->SetDoubleArrayRegion(env, strength, 0, 1, &s);
  return (jint)confident;
}

/* JNI_TRUE with threshold[0] set, JNI_FALSE when the bundle records none. */
JNIEXPORT jboolean JNICALL Java_dev_kbc_kbpack_KbPack_nMinStrength(JNIEnv *env, jclass cls, jlong h,
                                                                  jdoubleArray threshold) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (!kb) return JNI_FALSE;
  if (!threshold || (*env)->GetArrayLength(env, threshold) < 1)
    return throw_argument(env, "kbpack: min strength: no room for the threshold"), JNI_FALSE;
  double t = 0.0;
  kbp_status st = kbp_min_strength(kb, &t);
  if (st == KBP_ERR_NOT_PRESENT) return JNI_FALSE;
  if (st != KBP_OK) return throw_last(env, kb), JNI_FALSE;
  (*env)->SetDoubleArrayRegion(env, threshold, 0, 1, &t);
  return JNI_TRUE;
}

JNIEXPORT jint JNICALL Java_dev_kbc_kbpack_KbPack_nProbeCount(JNIEnv *env, jclass cls, jlong h) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  size_t n = 0;
  if (!kb) return 0;
  if (kbp_probe_count(kb, &n) != KBP_OK) return throw_last(env, kb), 0;
  return (jint)(n > INT32_MAX ? INT32_MAX : n);
}

JNIEXPORT jobject JNICALL Java_dev_kbc_kbpack_KbPack_nProbe(JNIEnv *env, jclass cls, jlong h, jint i) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (!kb) return NULL;
  if (i < 0) return throw_argument(env, "kbpack: probe: a negative index"), NULL;
  kbp_probe p;
  if (kbp_probe_get(kb, (size_t)i, &p) != KBP_OK) return throw_last(env, kb), NULL;
  jclass probe_cls = (*env)->FindClass(env, "dev/kbc/kbpack/Probe");
  jmethodID make = probe_cls ? (*env)->GetMethodID(env, probe_cls, "<init>", "([B[B)V") : NULL;
  if (!make) return NULL;
  jbyteArray kind = string_of(env, p.kind), input = string_of(env, p.input);
  if ((*env)->ExceptionCheck(env)) return NULL;
  return (*env)->NewObject(env, probe_cls, make, kind, input);
}

JNIEXPORT jobject JNICALL Java_dev_kbc_kbpack_KbPack_nProbeCheck(JNIEnv *env, jclass cls, jlong h, jfloatArray vectors,
                                                                jint n) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (!kb) return NULL;
  if (!vectors || n < 0) return throw_argument(env, "kbpack: probe check: no vectors"), NULL;
  size_t dim = kbp_dim(kb), total = (size_t)(*env)->GetArrayLength(env, vectors);
  if (total != (size_t)n * dim) return throw_argument(env, "kbpack: probe check: the vectors are not n x dim floats"), NULL;
  float *v = malloc(total ? total * sizeof(float) : 1);
  double *cosines = malloc(n ? (size_t)n * sizeof(double) : 1);
  if (!v || !cosines) {
    free(v), free(cosines);
    return throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory"), NULL;
  }
  (*env)->GetFloatArrayRegion(env, vectors, 0, (jsize)total, v);
  kbp_probe_result r;
  kbp_status st = kbp_probe_check(kb, v, (size_t)n, cosines, &r);
  free(v);
  if (st != KBP_OK) {
    free(cosines);
    return throw_last(env, kb), NULL;
  }
  jdoubleArray cos = (*env)->NewDoubleArray(env, n);
  if (cos) (*env)->SetDoubleArrayRegion(env, cos, 0, n, cosines);
  free(cosines);
  jclass result_cls = cos ? (*env)->FindClass(env, "dev/kbc/kbpack/ProbeResult") : NULL;
  jmethodID make = result_cls ? (*env)->GetMethodID(env, result_cls, "<init>", "(IDDDIZ[D)V") : NULL;
  if (!make) return NULL;
  return (*env)->NewObject(env, result_cls, make, (jint)r.count, r.threshold, r.min_cosine, r.mean_cosine,
                           (jint)r.worst, r.passed ? JNI_TRUE : JNI_FALSE, cos);
}

/* ---- scoped search (kbpack.h: kbp_filter_compile ...): Filter.java holds the pointer, KbPack frees it
 * before kbp_close */

JNIEXPORT jlong JNICALL Java_dev_kbc_kbpack_KbPack_nFilterCompile(JNIEnv *env, jclass cls, jlong h,
                                                                 jobjectArray conditions) {
  (void)cls;
  kbp_bundle *kb = live(env, h);
  if (!kb) return 0;
  jsize n = conditions ? (*env)->GetArrayLength(env, conditions) : 0;
  if (n < 1) return throw_argument(env, "kbpack: filter: no condition"), 0;
  char **texts = calloc((size_t)n, sizeof *texts);
  int ok = texts != NULL;
  for (jsize i = 0; ok && i < n; i++) {
    jbyteArray c = (jbyteArray)(*env)->GetObjectArrayElement(env, conditions, i);
    if (!c) {
      ok = 0;
      throw_argument(env, "kbpack: filter: a condition is null");
      break;
    }
    jsize len = (*env)->GetArrayLength(env, c);
    texts[i] = malloc((size_t)len + 1);
    if (!texts[i]) {
      ok = 0;
      break;
    }
    (*env)->GetByteArrayRegion(env, c, 0, len, (jbyte *)texts[i]);
    texts[i][len] = '\0'; /* a NUL inside ends the condition: KbPack.filter refuses those first */
    (*env)->DeleteLocalRef(env, c);
  }
  kbp_filter *f = NULL;
  kbp_status st = KBP_OK;
  if (ok) st = kbp_filter_compile(kb, (const char *const *)texts, (size_t)n, &f);
  for (jsize i = 0; texts && i < n; i++) free(texts[i]);
  free(texts);
  if (!ok) {
    if (!(*env)->ExceptionCheck(env)) throw_error(env, KBP_ERR_MEMORY, "", "kbpack: out of memory");
    return 0;
  }
  if (st != KBP_OK) return throw_last(env, kb), 0;
  return (jlong)(intptr_t)f;
}

JNIEXPORT jlong JNICALL Java_dev_kbc_kbpack_KbPack_nFilterMatched(JNIEnv *env, jclass cls, jlong f) {
  (void)env, (void)cls;
  return (jlong)kbp_filter_matched(filter_of(f));
}

JNIEXPORT jboolean JNICALL Java_dev_kbc_kbpack_KbPack_nFilterKeeps(JNIEnv *env, jclass cls, jlong f, jlong id) {
  (void)env, (void)cls;
  return f && id >= 0 && kbp_filter_keeps(filter_of(f), (uint64_t)id) ? JNI_TRUE : JNI_FALSE;
}

JNIEXPORT void JNICALL Java_dev_kbc_kbpack_KbPack_nFilterFree(JNIEnv *env, jclass cls, jlong f) {
  (void)env, (void)cls;
  kbp_filter_free((kbp_filter *)(intptr_t)f);
}
