/* libkbpack, delta.c: kbp_apply_delta, which rebuilds a new bundle from the old one and a .kbdelta
 * (FORMAT.md §8), as kbc/tools/delta.py's apply does, check for check and in the same order, so that both
 * refuse a delta with the same part: header, payload, base or result.
 *
 * Memory stays bounded whatever the bundles' size: the delta and the old bundle are mapped read-only, the
 * zstd decoder refers to the old bundle in place (ZSTD_DCtx_refPrefix: no copy), and it decodes straight
 * into the temporary output file, mapped shared, sized to the declared new size (which is capped, and is
 * all the decoder may write: a decompression bomb stops there). Only the decoder's context (~160 KB) is
 * allocated. Where a file cannot be mapped (some file systems, WASI) it is read into, or written from, a
 * buffer instead. Nothing is created under the output's name until the result's SHA-256 matched: the
 * temporary file in the output's folder is fsynced, then renamed over it; a failure removes it. */
#include "kbpack_internal.h"

#define DELTA_HEADER_SIZE 192u
#define DELTA_METHOD_ZSTD_PREFIX 1u
#define DELTA_MAX_BUNDLE ((uint64_t)1 << 32)
#define DELTA_MAX_FILE (DELTA_HEADER_SIZE + DELTA_MAX_BUNDLE + (DELTA_MAX_BUNDLE >> 7))
#define DELTA_MAX_WINDOW_LOG 31

typedef struct {
  const uint8_t *data;
  uint64_t size;
  int mapped; /* else data is malloc'd (or NULL for an empty file) */
} delta_input;

typedef struct {
  uint64_t old_size, new_size, payload_length;
  const uint8_t *old_sha, *new_sha, *payload_sha;
} delta_header;

static void release(delta_input *in) {
  if (in->mapped) munmap((void *)in->data, (size_t)in->size);
  else free((void *)in->data);
  in->data = NULL;
  in->mapped = 0;
}

/* `path` mapped read-only (or read), refused when larger than `max` bytes. */
static kbp_status map_input(const char *path, const char *role, uint64_t max, delta_input *in, kbp_error *err) {
  int flags = O_RDONLY;
#ifdef O_CLOEXEC
  flags |= O_CLOEXEC;
#endif
  in->data = NULL;
  in->size = 0;
  in->mapped = 0;
  int fd = open(path, flags);
  if (fd < 0) return kbpi_report(err, KBP_ERR_IO, "", "%s: %s: %s", path, role, errno == ENOENT ? "no such file" : strerror(errno));
  struct stat st;
  kbp_status status = KBP_OK;
  if (fstat(fd, &st) != 0) status = kbpi_report(err, KBP_ERR_IO, "", "%s: cannot stat: %s", path, strerror(errno));
  else if (!S_ISREG(st.st_mode)) status = kbpi_report(err, KBP_ERR_IO, "", "%s: %s: not a regular file", path, role);
  else if ((uint64_t)st.st_size > max || (uint64_t)st.st_size > (uint64_t)SIZE_MAX)
    status = kbpi_report(err, KBP_ERR_INVALID, strcmp(role, "delta") == 0 ? "header" : "base",
                         "%s is %llu bytes, over the %llu-byte limit", role, (unsigned long long)st.st_size,
                         (unsigned long long)max);
  if (status != KBP_OK || st.st_size == 0) {
    close(fd);
    return status;
  }
  in->size = (uint64_t)st.st_size;
  void *map = mmap(NULL, (size_t)in->size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map != MAP_FAILED) {
    in->data = map;
    in->mapped = 1;
  } else {
    uint8_t *copy = malloc((size_t)in->size);
    size_t got = 0;
    while (copy && got < in->size) {
      ssize_t r = read(fd, copy + got, (size_t)(in->size - got));
      if (r <= 0 && !(r < 0 && errno == EINTR)) break;
      if (r > 0) got += (size_t)r;
    }
    if (!copy) status = kbpi_report(err, KBP_ERR_MEMORY, "", "out of memory reading %s", path);
    else if (got != in->size) status = kbpi_report(err, KBP_ERR_IO, "", "%s: read error", path);
    if (status != KBP_OK) free(copy);
    else in->data = copy;
  }
  close(fd);
  return status;
}

/* The header's fields, checked alone, in kbc's order (parse_header). */
static kbp_status parse_header(const delta_input *d, delta_header *h, kbp_error *err) {
  const uint8_t *p = d->data;
  uint8_t digest[32];
  if (d->size < DELTA_HEADER_SIZE)
    return kbpi_report(err, KBP_ERR_INVALID, "header", "truncated: %llu bytes, shorter than the %u-byte header",
                       (unsigned long long)d->size, DELTA_HEADER_SIZE);
  if (memcmp(p, "KBDELTA\0", 8) != 0) return kbpi_report(err, KBP_ERR_INVALID, "header", "not a .kbdelta file (wrong magic)");
  if (le(p + 8, 2) != 1)
    return kbpi_report(err, KBP_ERR_INVALID, "header", "format %u.%u is not supported (this reader reads 1.x)",
                       (unsigned)le(p + 8, 2), (unsigned)le(p + 10, 2));
  kbpi_sha256(p, 160, digest);
  if (memcmp(digest, p + 160, 32) != 0) return kbpi_report(err, KBP_ERR_INVALID, "header", "header checksum mismatch");
  if (le(p + 12, 4) != DELTA_METHOD_ZSTD_PREFIX)
    return kbpi_report(err, KBP_ERR_INVALID, "header", "unknown method %u", (unsigned)le(p + 12, 4));
  for (size_t i = 104; i < 128; i++)
    if (p[i]) return kbpi_report(err, KBP_ERR_INVALID, "header", "reserved bytes are not zero");
  h->old_size = le(p + 16, 8);
  h->new_size = le(p + 24, 8);
  h->old_sha = p + 32;
  h->new_sha = p + 64;
  h->payload_length = le(p + 96, 8);
  h->payload_sha = p + 128;
  if (h->old_size > DELTA_MAX_BUNDLE || h->new_size > DELTA_MAX_BUNDLE)
    return kbpi_report(err, KBP_ERR_INVALID, "header", "declares a%s bundle of %llu bytes, over the %llu-byte limit",
                       h->old_size > DELTA_MAX_BUNDLE ? "n old" : " new",
                       (unsigned long long)(h->old_size > DELTA_MAX_BUNDLE ? h->old_size : h->new_size),
                       (unsigned long long)DELTA_MAX_BUNDLE);
  if (h->payload_length == 0 && (h->old_size != h->new_size || memcmp(h->old_sha, h->new_sha, 32) != 0))
    return kbpi_report(err, KBP_ERR_INVALID, "header",
                       "an empty payload says the bundles are identical, but the sizes or SHA-256s differ");
  return KBP_OK;
}

static kbp_status wrong_base(const char *old_path, const delta_header *h, kbp_error *err) {
  char hex[17];
  for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", h->old_sha[i]);
  return kbpi_report(err, KBP_ERR_INVALID, "base", "%s: not the bundle this delta updates (it updates %llu bytes with SHA-256 %s...)",
                     old_path, (unsigned long long)h->old_size, hex);
}

/* The payload against the file, its checksum, then the base's size (kbc's rebuild, in its order). */
static kbp_status check_payload_and_base(const delta_input *d, const delta_header *h, const char *old_path,
                                         delta_input *old, kbp_error *err) {
  uint8_t digest[32];
  uint64_t held = d->size - DELTA_HEADER_SIZE;
  if (held < h->payload_length)
    return kbpi_report(err, KBP_ERR_INVALID, "payload", "truncated: the header declares %llu payload bytes, the file holds %llu",
                       (unsigned long long)h->payload_length, (unsigned long long)held);
  if (held > h->payload_length)
    return kbpi_report(err, KBP_ERR_INVALID, "payload", "%llu bytes after the declared %llu-byte payload",
                       (unsigned long long)(held - h->payload_length), (unsigned long long)h->payload_length);
  kbpi_sha256(d->data + DELTA_HEADER_SIZE, h->payload_length, digest);
  if (memcmp(digest, h->payload_sha, 32) != 0)
    return kbpi_report(err, KBP_ERR_INVALID, "payload", "checksum mismatch (damaged in transit?)");
  kbp_status status = map_input(old_path, "old bundle", DELTA_MAX_BUNDLE, old, err);
  if (status != KBP_OK && !(status == KBP_ERR_INVALID && strcmp(err->part, "base") == 0)) return status;
  if (status != KBP_OK || old->size != h->old_size) return wrong_base(old_path, h, err);
  return KBP_OK; /* the base's SHA-256 is checked only if the result fails its own (rebuild_into) */
}

/* One zstd frame, its declared content size the header's, no dictionary id (kbc's _check_frame). */
static kbp_status check_frame(const uint8_t *payload, size_t n, uint64_t new_size, kbp_error *err) {
  unsigned long long declared = ZSTD_getFrameContentSize(payload, n);
  if (declared == ZSTD_CONTENTSIZE_ERROR) return kbpi_report(err, KBP_ERR_INVALID, "payload", "not a zstd frame");
  if (declared != new_size) {
    char what[32];
    if (declared == ZSTD_CONTENTSIZE_UNKNOWN) snprintf(what, sizeof what, "no size");
    else snprintf(what, sizeof what, "%llu bytes", declared);
    return kbpi_report(err, KBP_ERR_INVALID, "payload", "the frame declares %s, the header %llu", what,
                       (unsigned long long)new_size);
  }
  /* ZSTD_decompressDCtx would go on into a second frame; kbc's decoder refuses data after the first */
  size_t frame_size = ZSTD_findFrameCompressedSize(payload, n);
  if (!ZSTD_isError(frame_size) && frame_size != n)
    return kbpi_report(err, KBP_ERR_INVALID, "payload", "%llu bytes after the zstd frame", (unsigned long long)(n - frame_size));
  unsigned dict_id = ZSTD_getDictID_fromFrame(payload, n);
  if (dict_id != 0)
    return kbpi_report(err, KBP_ERR_INVALID, "payload", "the frame names dictionary %u; a delta's only dictionary is its base",
                       dict_id);
  return KBP_OK;
}

/* Decode into `dst` (new_size bytes), the old bundle as the prefix; the result's SHA-256 checked. */
static kbp_status rebuild_into(const delta_input *d, const delta_header *h, const delta_input *old, const char *old_path,
                               uint8_t *dst, kbp_error *err) {
  const uint8_t *payload = d->data + DELTA_HEADER_SIZE;
  uint8_t digest[32];
  if (h->payload_length == 0) { /* identical bundles */
    if (h->new_size) memcpy(dst, old->data, (size_t)h->new_size);
  } else {
    kbp_status status = check_frame(payload, (size_t)h->payload_length, h->new_size, err);
    if (status != KBP_OK) return status;
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    if (!dctx) return kbpi_report(err, KBP_ERR_MEMORY, "", "out of memory (zstd context)");
    size_t r = ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, DELTA_MAX_WINDOW_LOG);
    if (!ZSTD_isError(r)) r = ZSTD_DCtx_refPrefix(dctx, old->data, (size_t)old->size);
    /* dstCapacity is the declared size: a frame that would write more fails here, having written no more */
    if (!ZSTD_isError(r)) r = ZSTD_decompressDCtx(dctx, dst, (size_t)h->new_size, payload, (size_t)h->payload_length);
    ZSTD_freeDCtx(dctx);
    if (ZSTD_isError(r)) return kbpi_report(err, KBP_ERR_INVALID, "payload", "does not decompress: %s", ZSTD_getErrorName(r));
    if (r != h->new_size)
      return kbpi_report(err, KBP_ERR_INVALID, "payload", "decompresses to %llu bytes, the header declares %llu",
                         (unsigned long long)r, (unsigned long long)h->new_size);
  }
  kbpi_sha256(dst, h->new_size, digest);
  if (memcmp(digest, h->new_sha, 32) == 0) return KBP_OK;
  /* A base of the right size but other bytes decodes to garbage that fails here; its own SHA-256, taken
   * only now, tells that apart from a damaged delta. Hashing it up front would double a good apply's time. */
  kbpi_sha256(old->data, old->size, digest);
  if (memcmp(digest, h->old_sha, 32) != 0) return wrong_base(old_path, h, err);
  return kbpi_report(err, KBP_ERR_INVALID, "result", "the rebuilt bundle fails the SHA-256 the delta names; nothing was written");
}

static int write_all(int fd, const uint8_t *p, uint64_t n) {
  while (n) {
    ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : (size_t)n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (uint64_t)w;
  }
  return 0;
}

/* The folder of `path`, and room for a temporary name in it (open_temporary writes it). */
static char *temp_name_buffer(const char *path, char **dir) {
  const char *slash = strrchr(path, '/');
  size_t dir_len = slash ? (size_t)(slash - path) : 0;
  char *name = malloc(strlen(path) + 32), *d = malloc(dir_len + 2);
  if (!name || !d) {
    free(name);
    free(d);
    return NULL;
  }
  if (slash) {
    memcpy(d, path, dir_len);
    d[dir_len] = 0;
    if (dir_len == 0) strcpy(d, "/");
  } else {
    strcpy(d, ".");
  }
  *dir = d;
  return name;
}

/* A new file ".NAME.apply-N.tmp" beside `path` (kbc's temporaries are ".NAME.*.tmp" too, and its writer
 * clears stale ones). Not mkstemp and fchmod: WASI, which runtimes/js compiles this unit for, has neither;
 * O_EXCL makes the name this call's alone. */
static int open_temporary(const char *path, char *name) {
  const char *slash = strrchr(path, '/');
  int dir_len = slash ? (int)(slash - path) + 1 : 0;
  for (unsigned n = 0; n < 1000; n++) {
    sprintf(name, "%.*s.%s.apply-%u.tmp", dir_len, path, slash ? slash + 1 : path, n);
    int fd = open(name, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd >= 0 || errno != EEXIST) return fd;
  }
  return -1;
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY);
  if (fd >= 0) {
    fsync(fd); /* the rename made durable; some file systems refuse it, which changes nothing here */
    close(fd);
  }
}

/* Rebuild into a temporary file next to out_path; rename it over out_path only when verified. */
static kbp_status write_verified(const delta_input *d, const delta_header *h, const delta_input *old, const char *old_path,
                                 const char *out_path, kbp_error *err) {
  char *dir = NULL, *tmp = temp_name_buffer(out_path, &dir);
  if (!tmp) return kbpi_report(err, KBP_ERR_MEMORY, "", "out of memory");
  int fd = open_temporary(out_path, tmp);
  kbp_status status = KBP_OK;
  if (fd < 0) {
    status = kbpi_report(err, KBP_ERR_IO, "", "%s: cannot create a file in its folder: %s", out_path, strerror(errno));
    free(tmp);
    free(dir);
    return status;
  }
  uint8_t *dst = NULL;
  int mapped = 0;
  if (ftruncate(fd, (off_t)h->new_size) != 0)
    status = kbpi_report(err, KBP_ERR_IO, "", "%s: cannot size the new file: %s", out_path, strerror(errno));
  if (status == KBP_OK && h->new_size) {
    void *map = mmap(NULL, (size_t)h->new_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map != MAP_FAILED) {
      dst = map;
      mapped = 1;
    } else if (!(dst = malloc((size_t)h->new_size))) {
      status = kbpi_report(err, KBP_ERR_MEMORY, "", "out of memory (%llu bytes)", (unsigned long long)h->new_size);
    }
  }
  if (status == KBP_OK) status = rebuild_into(d, h, old, old_path, dst, err);
  if (status == KBP_OK) {
    int failed = mapped ? msync(dst, (size_t)h->new_size, MS_SYNC) != 0 : dst && write_all(fd, dst, h->new_size) != 0;
    if (failed || fsync(fd) != 0)
      status = kbpi_report(err, KBP_ERR_IO, "", "%s: cannot write: %s", out_path, strerror(errno));
  }
  if (mapped) munmap(dst, (size_t)h->new_size);
  else free(dst);
  if (close(fd) != 0 && status == KBP_OK)
    status = kbpi_report(err, KBP_ERR_IO, "", "%s: cannot write: %s", out_path, strerror(errno));
  if (status == KBP_OK && rename(tmp, out_path) != 0)
    status = kbpi_report(err, KBP_ERR_IO, "", "%s: cannot rename into place: %s", out_path, strerror(errno));
  if (status != KBP_OK) unlink(tmp);
  else fsync_dir(dir);
  free(tmp);
  free(dir);
  return status;
}

kbp_status kbp_apply_delta(const char *old_path, const char *delta_path, const char *out_path, kbp_error *err) {
  kbp_error scratch;
  if (!err) err = &scratch;
  kbpi_clear_error(err);
  if (!old_path || !delta_path || !out_path)
    return kbpi_report(err, KBP_ERR_ARGUMENT, "", "kbp_apply_delta: a path is NULL");
  delta_input d, old = {NULL, 0, 0};
  delta_header h = {0, 0, 0, NULL, NULL, NULL};
  kbp_status status = map_input(delta_path, "delta", DELTA_MAX_FILE, &d, err);
  if (status != KBP_OK) return status;
  status = parse_header(&d, &h, err);
  if (status == KBP_OK) status = check_payload_and_base(&d, &h, old_path, &old, err);
  if (status == KBP_OK) status = write_verified(&d, &h, &old, old_path, out_path, err);
  release(&old);
  release(&d);
  return status;
}
