/*
 * A layer's whole way from compressed bytes to files, on libuv's thread pool: gunzip, the
 * layer's diff_id (SHA-256 of the tar), a tar walk that reads the archive exactly as
 * tar-split's fork of Go's archive/tar does (nodepool/prepull/split-tar.ts is the JS reference
 * it follows line for line), every payload's CRC-64, and the files written into an overlay2 diff
 * dir as Docker's applier leaves them (nodepool/prepull/layer-walk.ts: whiteouts as 0:0
 * character devices, opaque markers as trusted.overlay.opaque, the root entry's metadata not
 * applied, directory metadata set last).
 *
 *   layerExtractNew(diffDir, gzip) -> handle
 *   layerExtractPush(handle, buffers[], cb(err, records))   the next compressed bytes, in order
 *   layerExtractFinish(handle, cb(err, { diffId, entries, sizeOnDisk, records }))
 *   layerExtractAbort(handle)                                the running or next call fails
 *
 * `records` is what tar-split records, for the JS recorder that writes tar-split.json.gz:
 *   'S' u32 length, bytes                     raw bytes that are no payload
 *   'F' u32 length, name, u64 size, u8 hasCrc[, 8 bytes CRC-64 big-endian]   an entry
 *   'E'                                       the end-of-archive blocks have passed
 * (little-endian lengths). An error is "kind\tmessage": kind is one of format, unsupported
 * (BuildfleetError kinds), layer (an UnsupportedLayer: the runtime's own pull does the image)
 * or environment; the caller names the layer.
 *
 * Every path is resolved below the diff dir with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS):
 * the dir starts empty, so a symlink or non-directory met on the way was made by this layer,
 * which is where the JS walk sends the layer to the runtime too; nothing is written outside.
 */
#define _GNU_SOURCE
#include "layer_extract.h"

/* ---- the tar walk (split-tar.ts) ---- */

static void forget_extensions(Extractor *x) {
  free(x->pax);
  free(x->long_name);
  free(x->long_link);
  x->pax = x->long_name = x->long_link = NULL;
  x->pax_len = x->long_name_len = x->long_link_len = 0;
  x->has_long_name = x->has_long_link = false;
}

static bool pax_has_sparse(const unsigned char *d, size_t len) {
  PaxRecord r;
  size_t pos = 0;
  while (pax_next(d, len, &pos, &r))
    if (r.key_len >= 11 && memcmp(r.key, "GNU.sparse.", 11) == 0) return true;
  return false;
}

/* An extension header's data is complete. */
static bool end_meta(Extractor *x) {
  if (!rec_segment(x, x->meta, x->meta_size)) return false;
  x->left = padding_of(x->meta_size);
  char type = (char)x->meta_hdr[156];
  unsigned char *data = x->meta;
  size_t size = x->meta_size;
  x->meta = NULL;
  x->state = x->left ? T_PADDING : T_HEADER;
  if (type == 'L' || type == 'K') {
    size_t n = field_len(data, size);
    if (type == 'L') free(x->long_name), x->long_name = data, x->long_name_len = n, x->has_long_name = true;
    else free(x->long_link), x->long_link = data, x->long_link_len = n, x->has_long_link = true;
    return true;
  }
  if (!pax_check(x, data, size)) return free(data), false;
  if (type == 'x') {
    free(x->pax);
    x->pax = data;
    x->pax_len = size;
    return true;
  }
  /* A global header is an entry of its own (size 0) to Go's reader; what was read before it goes with it. */
  const unsigned char *path;
  size_t path_len;
  bool ok;
  if (pax_value(data, size, "path", &path, &path_len)) ok = rec_file(x, path, path_len, 0, false, 0);
  else {
    size_t n;
    unsigned char *name = header_name(x->meta_hdr, &n);
    ok = name != NULL && rec_file(x, name, n, 0, false, 0);
    free(name);
  }
  free(data);
  forget_extensions(x);
  return ok;
}

static bool end_entry(Extractor *x) {
  if (!close_file(x)) return false;
  bool ok = rec_file(x, x->name, x->name_len, x->entry_size, x->entry_crc, ~x->crc);
  free(x->name);
  free(x->xattrs);
  x->name = x->xattrs = NULL;
  return ok;
}

/* A whole header block. */
static bool on_header(Extractor *x) {
  const unsigned char *b = x->blk;
  if (!rec_segment(x, b, BLOCK)) return false;
  if (is_zero_block(b)) {
    x->state = T_END2;
    return true;
  }
  if (!checksum_matches(b)) return fail(x, "format", "bad header checksum at byte %llu", (unsigned long long)(x->offset - BLOCK));
  char type = (char)b[156];
  int64_t size, unused;
  static const int fields[][2] = {{100, 8}, {108, 8}, {116, 8}, {136, 12}};
  if (!parse_numeric(b + 124, 12, &size) || size < 0) return fail(x, "format", "invalid numeric tar field (size)");
  for (int i = 0; i < 4; i++)
    if (!parse_numeric(b + fields[i][0], (size_t)fields[i][1], &unused)) return fail(x, "format", "invalid numeric tar field");
  if (type == 'x' || type == 'g' || type == 'L' || type == 'K') {
    if ((uint64_t)size > MAX_META) return fail(x, "format", "extension header of %lld bytes", (long long)size);
    memcpy(x->meta_hdr, b, BLOCK);
    x->meta_size = (size_t)size;
    x->meta_fill = 0;
    x->meta = malloc(x->meta_size + 1);
    if (x->meta == NULL) return fail(x, "environment", "out of memory");
    x->state = T_META;
    return x->meta_size > 0 || end_meta(x);
  }
  size_t hn_len;
  unsigned char *hn = header_name(b, &hn_len);
  if (hn == NULL) return fail(x, "environment", "out of memory");
  if (type == 'S' || (x->pax && pax_has_sparse(x->pax, x->pax_len))) {
    char shown_name[300];
    fail(x, "unsupported", "sparse file \"%s\": tar-split cannot record it as Docker would", shown(hn, hn_len, shown_name));
    free(hn);
    return false;
  }
  const unsigned char *v;
  size_t v_len;
  /* The name: GNU L, else PAX path, else the header's. */
  if (x->has_long_name) {
    free(hn);
    x->name = x->long_name, x->name_len = x->long_name_len, x->long_name = NULL;
  } else if (x->pax && pax_value(x->pax, x->pax_len, "path", &v, &v_len)) {
    free(hn);
    x->name = malloc(v_len + 1);
    if (x->name == NULL) return fail(x, "environment", "out of memory");
    memcpy(x->name, v, v_len);
    x->name_len = v_len;
  } else x->name = hn, x->name_len = hn_len;
  const unsigned char *link = b + 157;
  size_t link_len = field_len(b + 157, 100);
  if (x->has_long_link) link = x->long_link, link_len = x->long_link_len;
  else if (x->pax && pax_value(x->pax, x->pax_len, "linkpath", &v, &v_len)) link = v, link_len = v_len;
  uint64_t entry_size = (uint64_t)size;
  if (x->pax && pax_value(x->pax, x->pax_len, "size", &v, &v_len) && !pax_decimal(x, v, v_len, "size", &entry_size)) return false;
  if (type == 0) type = x->name_len > 0 && x->name[x->name_len - 1] == '/' ? '5' : '0';
  bool header_only = type >= '1' && type <= '6';
  x->entry_size = entry_size;
  x->data_size = x->left = header_only ? 0 : entry_size;
  x->entry_crc = entry_size > 0;
  x->crc = ~0ULL;
  /* The metadata the extractor applies (layer-walk.ts's metaOf). */
  int64_t mode, uid, gid, mtime;
  parse_numeric(b + 100, 8, &mode);
  parse_numeric(b + 108, 8, &uid);
  parse_numeric(b + 116, 8, &gid);
  parse_numeric(b + 136, 12, &mtime);
  x->mode = (unsigned)(mode & 07777);
  uint64_t id = 0;
  x->uid = (unsigned)uid;
  x->gid = (unsigned)gid;
  x->mtime = (struct timespec){mtime, 0};
  if (x->pax) {
    if (pax_value(x->pax, x->pax_len, "uid", &v, &v_len)) {
      if (!pax_decimal(x, v, v_len, "uid", &id)) return false;
      x->uid = (unsigned)id;
    }
    if (pax_value(x->pax, x->pax_len, "gid", &v, &v_len)) {
      if (!pax_decimal(x, v, v_len, "gid", &id)) return false;
      x->gid = (unsigned)id;
    }
    if (pax_value(x->pax, x->pax_len, "mtime", &v, &v_len) && !pax_time(x, v, v_len, &x->mtime)) return false;
  }
  x->xattrs = x->pax, x->xattrs_len = x->pax_len, x->pax = NULL;
  bool placed = place_entry(x, type, link, link_len, b);
  forget_extensions(x);
  if (!placed) return false;
  x->state = T_PAYLOAD;
  if (x->left > 0) return true;
  x->state = T_HEADER; /* no payload, no padding */
  return end_entry(x);
}

/* Feeds uncompressed tar bytes through the walk. */
static bool feed_tar(Extractor *x, const unsigned char *p, size_t n) {
  while (n > 0 && x->error == NULL) {
    size_t take = 0;
    switch (x->state) {
      case T_HEADER:
      case T_END2:
        take = BLOCK - x->blk_fill < n ? BLOCK - x->blk_fill : n;
        memcpy(x->blk + x->blk_fill, p, take);
        x->blk_fill += take;
        x->offset += take;
        if (x->blk_fill == BLOCK) {
          x->blk_fill = 0;
          if (x->state == T_HEADER) {
            if (!on_header(x)) return false;
          } else {
            if (!rec_segment(x, x->blk, BLOCK)) return false;
            if (!is_zero_block(x->blk)) return fail(x, "format", "a zero block followed by a header (corrupt archive)");
            if (!rec_reserve(x, 1)) return false;
            x->rec[x->rec_len++] = 'E';
            x->state = T_TRAILING;
          }
        }
        break;
      case T_META:
        take = x->meta_size - x->meta_fill < n ? x->meta_size - x->meta_fill : n;
        memcpy(x->meta + x->meta_fill, p, take);
        x->meta_fill += take;
        x->offset += take;
        if (x->meta_fill == x->meta_size && !end_meta(x)) return false;
        break;
      case T_PAYLOAD:
        take = x->left < n ? (size_t)x->left : n;
        x->crc = crc64_update_bytes(x->crc, p, take);
        if (x->target == TO_FILE && !write_payload(x, p, take)) return false;
        x->left -= take;
        x->offset += take;
        if (x->left == 0) {
          uint64_t data = x->data_size;
          if (!end_entry(x)) return false;
          x->left = padding_of(data);
          x->state = x->left ? T_PADDING : T_HEADER;
        }
        break;
      case T_PADDING:
        take = x->left < n ? (size_t)x->left : n;
        if (!rec_segment(x, p, take)) return false;
        x->left -= take;
        x->offset += take;
        if (x->left == 0) x->state = T_HEADER;
        break;
      case T_TRAILING:
        take = n < TRAILING_CHUNK ? n : TRAILING_CHUNK;
        if (!rec_segment(x, p, take)) return false;
        x->offset += take;
        break;
    }
    p += take;
    n -= take;
  }
  return x->error == NULL;
}

/* The uncompressed bytes: summed for the diff_id, then walked. */
static bool feed_plain(Extractor *x, const unsigned char *p, size_t n) {
  if (EVP_DigestUpdate(x->sha, p, n) != 1) return fail(x, "environment", "OpenSSL failed");
  return feed_tar(x, p, n);
}

/* A first member up to this size switches decoding to whole members through libdeflate. */
#define MEMBER_MAX_OUT (8u << 20)
/* A member not whole within this many buffered bytes goes back to zlib's streaming. */
#define MEMBER_MAX_IN (32u << 20)

static bool zlib_feed(Extractor *x, const unsigned char *p, size_t n);

static bool cbuf_append(Extractor *x, const unsigned char *p, size_t n) {
  if (x->cbuf_len + n > x->cbuf_cap) {
    size_t cap = x->cbuf_cap ? x->cbuf_cap : (4u << 20);
    while (cap < x->cbuf_len + n) cap *= 2;
    unsigned char *grown = realloc(x->cbuf, cap);
    if (grown == NULL) return fail(x, "environment", "out of memory");
    x->cbuf = grown;
    x->cbuf_cap = cap;
  }
  memcpy(x->cbuf + x->cbuf_len, p, n);
  x->cbuf_len += n;
  return true;
}

/* From `pos` on, zlib streams the rest (and names what is wrong with it, if anything is). */
static bool back_to_zlib(Extractor *x, size_t pos) {
  x->members = false;
  inflateReset(&x->z);
  x->z_member_done = false;
  size_t rest = x->cbuf_len - pos;
  x->cbuf_len = 0;
  return zlib_feed(x, x->cbuf + pos, rest);
}

/* Whole members out of the buffered bytes; with `final`, nothing more comes. */
static bool decode_members(Extractor *x, bool final) {
  size_t pos = 0;
  while (pos < x->cbuf_len && x->error == NULL) {
    size_t avail = x->cbuf_len - pos;
    if (x->cbuf[pos] != 0x1f) {
      x->z_trailing_garbage = true; /* as zlib's path: what follows the last member is ignored */
      pos = x->cbuf_len;
      break;
    }
    if (!final && avail < x->next_try) break;
    size_t in_used = 0, out_used = 0;
    enum libdeflate_result r = libdeflate_gzip_decompress_ex(x->inflater, x->cbuf + pos, avail, x->mout, x->mout_cap, &in_used, &out_used);
    if (r == LIBDEFLATE_SUCCESS) {
      if (!feed_plain(x, x->mout, out_used)) return false;
      pos += in_used;
      x->next_try = in_used + in_used / 2;
      continue;
    }
    if (r == LIBDEFLATE_INSUFFICIENT_SPACE && x->mout_cap < 4 * MEMBER_MAX_OUT) {
      unsigned char *grown = realloc(x->mout, x->mout_cap * 2);
      if (grown == NULL) return fail(x, "environment", "out of memory");
      x->mout = grown;
      x->mout_cap *= 2;
      continue;
    }
    /* Not whole yet: try again once half as many bytes again have come. */
    if (r == LIBDEFLATE_BAD_DATA && !final && avail < MEMBER_MAX_IN) {
      x->next_try = avail + avail / 2 + (64u << 10);
      break;
    }
    return back_to_zlib(x, pos);
  }
  memmove(x->cbuf, x->cbuf + pos, x->cbuf_len - pos);
  x->cbuf_len -= pos;
  return x->error == NULL;
}

static bool zlib_feed(Extractor *x, const unsigned char *p, size_t n) {
  x->z.next_in = (unsigned char *)p;
  x->z.avail_in = (uInt)n;
  while (x->z.avail_in > 0 && x->error == NULL) {
    if (x->z_trailing_garbage) return true;
    if (x->z_member_done) {
      /* Another gzip member follows (parallel compressors write many); anything else is ignored, as Node's gunzip does. */
      if (x->z.next_in[0] != 0x1f) {
        x->z_trailing_garbage = true;
        return true;
      }
      inflateReset(&x->z);
      x->z_member_done = false;
    }
    x->z.next_out = x->out;
    x->z.avail_out = OUT_CHUNK;
    uInt before = x->z.avail_in;
    int rc = inflate(&x->z, Z_NO_FLUSH);
    size_t produced = OUT_CHUNK - x->z.avail_out;
    if (produced && !feed_plain(x, x->out, produced)) return false;
    if (rc == Z_STREAM_END) {
      x->z_member_done = true;
      /* libdeflate decodes a whole member about twice as fast as zlib streams it: worth it where members are small. */
      if (!x->tried_members && x->inflater != NULL && x->z.total_out <= MEMBER_MAX_OUT) {
        x->tried_members = x->members = true;
        x->next_try = x->z.total_in + x->z.total_in / 2;
        x->mout_cap = MEMBER_MAX_OUT;
        x->mout = malloc(x->mout_cap);
        if (x->mout == NULL) return fail(x, "environment", "out of memory");
        return cbuf_append(x, x->z.next_in, x->z.avail_in) && decode_members(x, false);
      }
    } else if ((rc != Z_OK && rc != Z_BUF_ERROR) || (produced == 0 && x->z.avail_in == before))
      return fail(x, "format", "the gzip data is corrupt (%s)", x->z.msg ? x->z.msg : "inflate failed");
  }
  /* Output still held back by inflate (its window) comes with the next input or the finish. */
  return true;
}

static bool feed_compressed(Extractor *x, const unsigned char *p, size_t n) {
  if (!x->gzip) return feed_plain(x, p, n);
  if (x->members) return cbuf_append(x, p, n) && decode_members(x, false);
  return zlib_feed(x, p, n);
}

static bool drain_inflate(Extractor *x) {
  if (!x->gzip) return true;
  if (x->members && !decode_members(x, true)) return false;
  if (x->members) return true;
  for (;;) {
    if (x->z_member_done || x->z_trailing_garbage) return true;
    x->z.next_in = NULL;
    x->z.avail_in = 0;
    x->z.next_out = x->out;
    x->z.avail_out = OUT_CHUNK;
    int rc = inflate(&x->z, Z_NO_FLUSH);
    size_t produced = OUT_CHUNK - x->z.avail_out;
    if (produced && !feed_plain(x, x->out, produced)) return false;
    if (rc == Z_STREAM_END) x->z_member_done = true;
    else if (produced == 0) return fail(x, "format", "unexpected end of file (the gzip stream is truncated)");
  }
}

static const char *const part_names[] = {"header", "extension header", "file's data", "padding", "end-of-archive block", ""};

static bool finish_tar(Extractor *x) {
  bool clean = (x->state == T_HEADER && x->blk_fill == 0) || (x->state == T_END2 && x->blk_fill == 0) || x->state == T_TRAILING;
  if (!clean)
    return fail(x, "format", "truncated tar (the input ended inside a %s at byte %llu)", part_names[x->state], (unsigned long long)x->offset);
  if (x->state != T_TRAILING) {
    if (!rec_reserve(x, 1)) return false;
    x->rec[x->rec_len++] = 'E';
  }
  return restore_dirs(x);
}

/* ---- N-API ---- */

static void extractor_release(Extractor *x) {
  if (x->fd >= 0) close(x->fd);
  if (x->parent_fd >= 0) close(x->parent_fd);
  if (x->root >= 0) close(x->root);
  x->fd = x->parent_fd = x->root = -1;
  if (x->z_ready) inflateEnd(&x->z);
  x->z_ready = false;
  if (x->inflater) libdeflate_free_decompressor(x->inflater);
  x->inflater = NULL;
  free(x->cbuf), free(x->mout);
  x->cbuf = x->mout = NULL;
  x->cbuf_len = x->cbuf_cap = 0;
  for (size_t i = 0; i < x->dirs_len; i++) free(x->dirs[i].path);
  free(x->dirs);
  x->dirs = NULL;
  x->dirs_len = x->dirs_cap = 0;
  forget_extensions(x);
  free(x->meta), free(x->name), free(x->xattrs), free(x->out), free(x->parent_path);
  x->meta = x->name = x->xattrs = x->out = NULL;
  x->parent_path = NULL;
}

static void extractor_free(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  Extractor *x = data;
  extractor_release(x);
  EVP_MD_CTX_free(x->sha);
  free(x->rec);
  free(x->error);
  free(x);
}

/* The process's umask without changing it (umask(2) would, for every thread): 0777 when unknown, so every mode is set. */
static unsigned current_umask(void) {
  FILE *status = fopen("/proc/self/status", "r");
  char line[256];
  unsigned mask = 0777;
  while (status != NULL && fgets(line, sizeof line, status) != NULL)
    if (sscanf(line, "Umask: %o", &mask) == 1) break;
  if (status != NULL) fclose(status);
  return mask;
}

static napi_value layer_extract_new(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  char dir[PATH_MAX];
  size_t dir_len;
  bool gzip = false;
  if (argc < 2 || napi_get_value_string_utf8(env, args[0], dir, sizeof dir, &dir_len) != napi_ok || napi_get_value_bool(env, args[1], &gzip) != napi_ok) {
    napi_throw_type_error(env, NULL, "layerExtractNew(diffDir: string, gzip: boolean)");
    return NULL;
  }
  crc64_ready();
  Extractor *x = calloc(1, sizeof *x);
  if (x == NULL) return napi_throw_error(env, NULL, "layerExtractNew: out of memory"), NULL;
  x->fd = x->parent_fd = -1;
  x->gzip = gzip;
  x->root = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  x->out = malloc(OUT_CHUNK);
  x->sha = EVP_MD_CTX_new();
  if (x->root < 0 || x->out == NULL || x->sha == NULL || EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL) != 1 ||
      (gzip && inflateInit2(&x->z, 15 + 16) != Z_OK)) {
    char message[PATH_MAX + 100];
    snprintf(message, sizeof message, "layerExtractNew: cannot start on %s: %s", dir, x->root < 0 ? strerror(errno) : "out of memory");
    extractor_free(env, x, NULL);
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  x->z_ready = gzip;
  x->inflater = gzip ? libdeflate_alloc_decompressor() : NULL;
  x->euid = geteuid();
  x->egid = getegid();
  x->umask = current_umask();
  struct stat root_stat;
  x->inherit_gid = fstat(x->root, &root_stat) != 0 || (root_stat.st_mode & S_ISGID) != 0;
  napi_value external;
  napi_create_external(env, x, extractor_free, NULL, &external);
  return external;
}

typedef struct {
  Job job;
  Extractor *x;
  Pieces input;
  bool finish;
  char digest[65];
  char *error; /* a copy of x->error for this call */
} ExtractJob;

static void extract_execute(napi_env env, void *data) {
  (void)env;
  ExtractJob *j = data;
  Extractor *x = j->x;
  for (size_t i = 0; i < j->input.count && x->error == NULL; i++) {
    if (__atomic_load_n(&x->aborted, __ATOMIC_RELAXED)) fail(x, "aborted", "aborted");
    else feed_compressed(x, j->input.data[i], j->input.lengths[i]);
  }
  if (j->finish && x->error == NULL && drain_inflate(x) && finish_tar(x)) hex_digest(x->sha, j->digest);
  if (j->finish || x->error != NULL) {
    /* Nothing written after the call returns: files and directories closed now. */
    extractor_release(x);
  }
  if (x->error != NULL) j->error = strdup(x->error);
}

static void extract_complete(napi_env env, napi_status status, void *data) {
  ExtractJob *j = data;
  Extractor *x = j->x;
  x->busy = false;
  napi_value argv[2];
  napi_get_null(env, &argv[0]);
  napi_get_undefined(env, &argv[1]);
  if (status != napi_ok || j->error != NULL) argv[0] = error_value(env, j->error ? j->error : "environment\tcancelled");
  else {
    void *copy;
    napi_value records;
    napi_create_buffer_copy(env, x->rec_len, x->rec_len ? x->rec : (void *)"", &copy, &records);
    if (!j->finish) argv[1] = records;
    else {
      napi_value result, value;
      napi_create_object(env, &result);
      napi_set_named_property(env, result, "records", records);
      napi_create_string_utf8(env, j->digest, 64, &value);
      napi_set_named_property(env, result, "diffId", value);
      napi_create_double(env, (double)x->entries, &value);
      napi_set_named_property(env, result, "entries", value);
      napi_create_double(env, (double)x->size_on_disk, &value);
      napi_set_named_property(env, result, "sizeOnDisk", value);
      argv[1] = result;
    }
  }
  x->rec_len = 0;
  pieces_free(&j->input);
  free(j->error);
  finish_job(env, &j->job, 2, argv);
  free(j);
}

static Extractor *extractor_arg(napi_env env, napi_value value) {
  Extractor *x = NULL;
  napi_valuetype type;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external || napi_get_value_external(env, value, (void **)&x) != napi_ok) return NULL;
  return x;
}

/* layerExtractPush(handle, buffers, cb) and layerExtractFinish(handle, cb): one call at a time, in order. */
static napi_value queue_extract(napi_env env, napi_callback_info info, bool finish) {
  size_t argc = 3;
  napi_value args[3];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  Extractor *x = argc >= 2 ? extractor_arg(env, args[0]) : NULL;
  napi_value callback = finish ? args[1] : args[2];
  napi_valuetype callback_type = napi_undefined;
  if (x != NULL && argc >= (finish ? 2u : 3u)) napi_typeof(env, callback, &callback_type);
  if (x == NULL || callback_type != napi_function) {
    napi_throw_type_error(env, NULL, finish ? "layerExtractFinish(handle, callback)" : "layerExtractPush(handle, buffers, callback)");
    return NULL;
  }
  if (x->busy || x->finished) {
    napi_throw_error(env, NULL, x->busy ? "layerExtract: a call is still running" : "layerExtract: already finished");
    return NULL;
  }
  ExtractJob *j = calloc(1, sizeof *j);
  if (j == NULL || (!finish && !pieces_from(env, args[1], &j->input))) {
    free(j);
    napi_throw_type_error(env, NULL, "layerExtractPush: buffers must be an array of Buffers");
    return NULL;
  }
  j->x = x;
  j->finish = finish;
  x->busy = true;
  x->finished = finish;
  /* Keeps the handle (and the buffers) alive until the job is done. */
  napi_value keep;
  napi_create_array_with_length(env, 2, &keep);
  napi_set_element(env, keep, 0, args[0]);
  if (!finish) napi_set_element(env, keep, 1, args[1]);
  if (!queue_job(env, &j->job, keep, callback, finish ? "buildfleet:layerExtractFinish" : "buildfleet:layerExtractPush", extract_execute, extract_complete)) {
    x->busy = false;
    pieces_free(&j->input);
    free(j);
    napi_throw_error(env, NULL, "layerExtract: could not queue work");
  }
  return NULL;
}

static napi_value layer_extract_push(napi_env env, napi_callback_info info) { return queue_extract(env, info, false); }
static napi_value layer_extract_finish(napi_env env, napi_callback_info info) { return queue_extract(env, info, true); }

static napi_value layer_extract_abort(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value args[1];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  Extractor *x = argc >= 1 ? extractor_arg(env, args[0]) : NULL;
  if (x != NULL) __atomic_store_n(&x->aborted, true, __ATOMIC_RELAXED);
  return NULL;
}

void register_layer_extract(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback fn;
  } functions[] = {{"layerExtractNew", layer_extract_new}, {"layerExtractPush", layer_extract_push}, {"layerExtractFinish", layer_extract_finish}, {"layerExtractAbort", layer_extract_abort}};
  for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++) {
    napi_value value;
    napi_create_function(env, functions[i].name, NAPI_AUTO_LENGTH, functions[i].fn, NULL, &value);
    napi_set_named_property(env, exports, functions[i].name, value);
  }
}
