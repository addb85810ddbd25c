/*
 * Optional accelerators for the image pipeline, run on libuv's thread pool so the main thread
 * only hands out work (see README.md for why they are written here and not taken from npm):
 *
 *   gzipMember(buffers[], level, cb(err, member))      libdeflate: one complete gzip member of
 *                                                       the buffers, one after another
 *   sha256New() -> hasher; sha256Update(hasher, buffers[], cb(err)); sha256Final(hasher) -> hex
 *                                                       SHA-256 by Node's own OpenSSL (SHA-NI)
 *   crc64New() -> hasher; crc64Update(hasher, buffers[], cb(err)); crc64UpdateSync(hasher, buffers[]);
 *   crc64Final(hasher) -> Buffer(8)
 *                                                       CRC-64/ISO (Go's hash/crc64, ISO table;
 *                                                       what tar-split keeps per file), big-endian
 *
 * Every buffer handed in must stay untouched until its callback runs: another thread reads it.
 */
#include <libdeflate.h>
#include <node_api.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "native.h"

#define MAX_LEVEL 12


/* Takes the job's references and work down, then calls back with argc values. */
void finish_job(napi_env env, Job *job, size_t argc, napi_value *argv) {
  napi_value callback, global;
  napi_get_reference_value(env, job->callback, &callback);
  napi_get_global(env, &global);
  napi_delete_reference(env, job->keep);
  napi_delete_reference(env, job->callback);
  napi_delete_async_work(env, job->work);
  napi_call_function(env, global, callback, argc, argv, NULL);
}

napi_value error_value(napi_env env, const char *text) {
  napi_value message, error;
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &error);
  return error;
}

/* The error a finished job reports, or NULL when it succeeded. */
napi_value job_error(napi_env env, napi_status status, const Job *job, const char *cancelled) {
  if (status == napi_ok && job->error == NULL) return NULL;
  return error_value(env, job->error != NULL ? job->error : cancelled);
}

bool queue_job(napi_env env, Job *job, napi_value keep, napi_value callback, const char *name,
                      napi_async_execute_callback execute, napi_async_complete_callback complete) {
  napi_value resource_name;
  napi_create_reference(env, keep, 1, &job->keep);
  napi_create_reference(env, callback, 1, &job->callback);
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  return napi_create_async_work(env, NULL, resource_name, execute, complete, job, &job->work) == napi_ok &&
         napi_queue_async_work(env, job->work) == napi_ok;
}

/* One compressor per level and pool thread: allocating one per call costs as much as a small block. */
static __thread struct libdeflate_compressor *compressors[MAX_LEVEL + 1];

/* ---- arrays of buffers ---- */


void pieces_free(Pieces *p) {
  free(p->data);
  free(p->lengths);
}

/* Reads the data pointers of a Buffer[] (on the main thread, where N-API may be called). */
bool pieces_from(napi_env env, napi_value array, Pieces *p) {
  bool is_array = false;
  uint32_t count = 0;
  memset(p, 0, sizeof(*p));
  if (napi_is_array(env, array, &is_array) != napi_ok || !is_array) return false;
  napi_get_array_length(env, array, &count);
  p->data = calloc(count + 1, sizeof(void *));
  p->lengths = calloc(count + 1, sizeof(size_t));
  if (p->data == NULL || p->lengths == NULL) {
    pieces_free(p);
    return false;
  }
  for (uint32_t i = 0; i < count; i++) {
    napi_value element;
    bool is_buffer = false;
    void *bytes;
    napi_get_element(env, array, i, &element);
    if (napi_is_buffer(env, element, &is_buffer) != napi_ok || !is_buffer) {
      pieces_free(p);
      return false;
    }
    napi_get_buffer_info(env, element, &bytes, &p->lengths[i]);
    p->data[i] = bytes;
    p->total += p->lengths[i];
  }
  p->count = count;
  return true;
}

/* ---- gzipMember ---- */

typedef struct {
  Job job;
  Pieces input;
  int level;
  unsigned char *output;
  size_t output_capacity;
  size_t output_len;
} GzipJob;

/*
 * Work buffers (a block put together, a block's output) shared by all pool threads and reused
 * instead of allocated per block (at most POOL_KEEP wait for reuse): memory stays flat, and no
 * fresh pages are faulted in for every block. The output is then copied into memory V8 counts.
 */
#define POOL_KEEP 4
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { unsigned char *data; size_t size; } pool[POOL_KEEP];
static size_t pooled;

static unsigned char *pool_take(size_t size, size_t *capacity) {
  pthread_mutex_lock(&pool_lock);
  for (size_t i = 0; i < pooled; i++) {
    if (pool[i].size >= size) {
      unsigned char *data = pool[i].data;
      *capacity = pool[i].size;
      pool[i] = pool[--pooled];
      pthread_mutex_unlock(&pool_lock);
      return data;
    }
  }
  pthread_mutex_unlock(&pool_lock);
  *capacity = size;
  return malloc(size > 0 ? size : 1);
}

static void pool_give(unsigned char *data, size_t capacity) {
  if (data == NULL) return;
  pthread_mutex_lock(&pool_lock);
  if (pooled < POOL_KEEP) {
    pool[pooled].data = data;
    pool[pooled].size = capacity;
    pooled++;
    data = NULL;
  }
  pthread_mutex_unlock(&pool_lock);
  free(data);
}

static void gzip_execute(napi_env env, void *data) {
  (void)env;
  GzipJob *g = data;
  struct libdeflate_compressor *compressor = compressors[g->level];
  if (compressor == NULL) compressor = compressors[g->level] = libdeflate_alloc_compressor(g->level);
  if (compressor == NULL) {
    g->job.error = "libdeflate: out of memory for a compressor";
    return;
  }
  const void *input = g->input.count == 1 ? g->input.data[0] : NULL;
  unsigned char *joined = NULL;
  size_t joined_capacity = 0;
  if (input == NULL) {
    joined = pool_take(g->input.total, &joined_capacity);
    if (joined == NULL) {
      g->job.error = "libdeflate: out of memory for the input";
      return;
    }
    size_t at = 0;
    for (size_t i = 0; i < g->input.count; i++) {
      memcpy(joined + at, g->input.data[i], g->input.lengths[i]);
      at += g->input.lengths[i];
    }
    input = joined;
  }
  size_t bound = libdeflate_gzip_compress_bound(compressor, g->input.total);
  g->output = pool_take(bound, &g->output_capacity);
  if (g->output == NULL) {
    pool_give(joined, joined_capacity);
    g->job.error = "libdeflate: out of memory for the output";
    return;
  }
  g->output_len = libdeflate_gzip_compress(compressor, input, g->input.total, g->output, bound);
  pool_give(joined, joined_capacity);
  if (g->output_len == 0) g->job.error = "libdeflate: compressed data did not fit its bound";
}

static void gzip_complete(napi_env env, napi_status status, void *data) {
  GzipJob *g = data;
  napi_value argv[2];
  napi_get_undefined(env, &argv[1]);
  if ((argv[0] = job_error(env, status, &g->job, "gzipMember: cancelled")) == NULL) {
    napi_get_undefined(env, &argv[0]);
    /* Copied into memory V8 allocates and counts: young garbage, collected soon after use. */
    void *copy;
    napi_create_buffer_copy(env, g->output_len, g->output, &copy, &argv[1]);
  }
  pool_give(g->output, g->output_capacity);
  pieces_free(&g->input);
  finish_job(env, &g->job, 2, argv);
  free(g);
}

static napi_value gzip_member(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value args[3];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  int32_t level = -1;
  napi_valuetype callback_type = napi_undefined;
  if (argc == 3) {
    napi_get_value_int32(env, args[1], &level);
    napi_typeof(env, args[2], &callback_type);
  }
  GzipJob *g = calloc(1, sizeof(GzipJob));
  if (g == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (argc != 3 || level < 0 || level > MAX_LEVEL || callback_type != napi_function || !pieces_from(env, args[0], &g->input)) {
    free(g);
    napi_throw_type_error(env, NULL, "gzipMember(input: Buffer[], level: 0..12, callback)");
    return NULL;
  }
  g->level = level;
  if (!queue_job(env, &g->job, args[0], args[2], "buildfleet:gzipMember", gzip_execute, gzip_complete)) {
    napi_throw_error(env, NULL, "gzipMember: could not queue the work");
  }
  return NULL;
}

/* ---- hashes fed on the pool: SHA-256 and CRC-64/ISO ---- */

/*
 * CRC-64/ISO as Go's crc64.MakeTable(crc64.ISO) (what tar-split keeps per file): reflected
 * polynomial 0xD800000000000000, register and result inverted. Slicing-by-8
 * (crc64_table[k][b]: byte b followed by k zero bytes), as Go does it, and on x86-64 with
 * PCLMULQDQ a carry-less folding loop for long runs (below).
 */
#define CRC64_ISO 0xD800000000000000ULL
static uint64_t crc64_table[8][256];
static pthread_once_t crc64_once = PTHREAD_ONCE_INIT;

#if defined(__x86_64__)
static void crc64_fold_init(void);
#endif

static void crc64_make_tables(void) {
#if defined(__x86_64__)
  crc64_fold_init();
#endif
  for (int b = 0; b < 256; b++) {
    uint64_t crc = (uint64_t)b;
    for (int bit = 0; bit < 8; bit++) crc = (crc & 1) ? (crc >> 1) ^ CRC64_ISO : crc >> 1;
    crc64_table[0][b] = crc;
  }
  for (int k = 1; k < 8; k++) {
    for (int b = 0; b < 256; b++) {
      uint64_t prev = crc64_table[k - 1][b];
      crc64_table[k][b] = (prev >> 8) ^ crc64_table[0][prev & 0xff];
    }
  }
}

void crc64_ready(void) { pthread_once(&crc64_once, crc64_make_tables); }

/* Feeds bytes into an already inverted register. */
static uint64_t crc64_feed(uint64_t crc, const unsigned char *p, size_t n) {
  while (n >= 8) {
    uint64_t word;
    memcpy(&word, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    word = __builtin_bswap64(word);
#endif
    crc ^= word;
    crc = crc64_table[7][crc & 0xff] ^ crc64_table[6][(crc >> 8) & 0xff] ^ crc64_table[5][(crc >> 16) & 0xff] ^
          crc64_table[4][(crc >> 24) & 0xff] ^ crc64_table[3][(crc >> 32) & 0xff] ^ crc64_table[2][(crc >> 40) & 0xff] ^
          crc64_table[1][(crc >> 48) & 0xff] ^ crc64_table[0][crc >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = crc64_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
#include <immintrin.h>
/*
 * Carry-less multiplication folding (PCLMULQDQ): 16 bytes per step instead of one table
 * look-up per byte. The 128-bit state is the data still to reduce, reflected (bit m stands for
 * x^(127-m)); a step multiplies its first half by x^192 and its second by x^128 modulo P, so the
 * state stays congruent to what it replaces. The constants are x^191 and x^127 mod P (one less:
 * a carry-less product of reflected halves lands one bit low), reflected. The last state and the
 * bytes after it go through the tables.
 */
static uint64_t crc64_fold_k1, crc64_fold_k2;
static bool crc64_has_clmul;

static uint64_t reflect64(uint64_t v) {
  uint64_t r = 0;
  for (int i = 0; i < 64; i++) r |= ((v >> i) & 1) << (63 - i);
  return r;
}

/* x^n mod P, P = x^64 + x^4 + x^3 + x + 1 (ISO, not reflected), as a reflected 64-bit value. */
static uint64_t crc64_xpow(int n) {
  uint64_t r = 1;
  for (int i = 0; i < n; i++) r = (r << 1) ^ ((r >> 63) ? 0x1BULL : 0);
  return reflect64(r);
}

static void crc64_fold_init(void) {
  crc64_fold_k1 = crc64_xpow(191);
  crc64_fold_k2 = crc64_xpow(127);
  __builtin_cpu_init();
  crc64_has_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
}

__attribute__((target("pclmul,sse4.1"))) static uint64_t crc64_fold(uint64_t crc, const unsigned char *p, size_t n) {
  const __m128i k = _mm_set_epi64x((long long)crc64_fold_k2, (long long)crc64_fold_k1);
  __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi64_si128((long long)crc));
  p += 16;
  n -= 16;
  while (n >= 16) {
    __m128i first = _mm_clmulepi64_si128(x, k, 0x00);
    __m128i second = _mm_clmulepi64_si128(x, k, 0x11);
    x = _mm_xor_si128(_mm_xor_si128(first, second), _mm_loadu_si128((const __m128i *)p));
    p += 16;
    n -= 16;
  }
  unsigned char state[16];
  _mm_storeu_si128((__m128i *)state, x);
  return crc64_feed(crc64_feed(0, state, 16), p, n);
}
#endif

/* The fastest way this CPU has. */
uint64_t crc64_update_bytes(uint64_t crc, const unsigned char *p, size_t n) {
#if defined(__x86_64__)
  if (crc64_has_clmul && n >= 64) return crc64_fold(crc, p, n);
#endif
  return crc64_feed(crc, p, n);
}

void hex_digest(EVP_MD_CTX *ctx, char out[65]) {
  unsigned char digest[32];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx, digest, &length);
  for (unsigned int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

typedef enum { HASH_SHA256, HASH_CRC64 } HashKind;
static const char *const hash_names[] = {"sha256", "crc64"};

/* Every external this addon hands out is a Hasher; its kind keeps one kind's calls off the other. */
typedef struct {
  HashKind kind;
  EVP_MD_CTX *ctx; /* SHA-256 */
  uint64_t crc;    /* CRC-64: the inverted register */
  bool busy;
  bool final;
} Hasher;

typedef struct {
  Job job;
  Hasher *hasher;
  Pieces input;
} HashJob;

static void hasher_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Hasher *h = data;
  EVP_MD_CTX_free(h->ctx);
  free(h);
}

static napi_value hasher_external(napi_env env, Hasher *h) {
  napi_value external;
  napi_create_external(env, h, hasher_free, NULL, &external);
  return external;
}

static napi_value sha256_new(napi_env env, napi_callback_info info) {
  (void)info;
  Hasher *h = calloc(1, sizeof(Hasher));
  if (h == NULL || (h->ctx = EVP_MD_CTX_new()) == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1) {
    if (h != NULL) EVP_MD_CTX_free(h->ctx);
    free(h);
    napi_throw_error(env, NULL, "sha256New: OpenSSL could not start a hash");
    return NULL;
  }
  h->kind = HASH_SHA256;
  return hasher_external(env, h);
}

static napi_value crc64_new(napi_env env, napi_callback_info info) {
  (void)info;
  pthread_once(&crc64_once, crc64_make_tables);
  Hasher *h = calloc(1, sizeof(Hasher));
  if (h == NULL) {
    napi_throw_error(env, NULL, "crc64New: out of memory");
    return NULL;
  }
  h->kind = HASH_CRC64;
  h->crc = ~0ULL;
  return hasher_external(env, h);
}

static Hasher *hasher_arg(napi_env env, napi_value value, HashKind kind) {
  napi_valuetype type;
  void *data = NULL;
  if (napi_typeof(env, value, &type) != napi_ok || type != napi_external) return NULL;
  napi_get_value_external(env, value, &data);
  return data != NULL && ((Hasher *)data)->kind == kind ? data : NULL;
}

static void hash_execute(napi_env env, void *data) {
  (void)env;
  HashJob *j = data;
  Hasher *h = j->hasher;
  for (size_t i = 0; i < j->input.count; i++) {
    if (h->kind == HASH_CRC64) {
      h->crc = crc64_update_bytes(h->crc, j->input.data[i], j->input.lengths[i]);
    } else if (EVP_DigestUpdate(h->ctx, j->input.data[i], j->input.lengths[i]) != 1) {
      j->job.error = "sha256Update: OpenSSL failed";
      return;
    }
  }
}

static void hash_complete(napi_env env, napi_status status, void *data) {
  HashJob *j = data;
  j->hasher->busy = false;
  napi_value argv[1];
  if ((argv[0] = job_error(env, status, &j->job, "hash update: cancelled")) == NULL) napi_get_undefined(env, &argv[0]);
  pieces_free(&j->input);
  finish_job(env, &j->job, 1, argv);
  free(j);
}

static napi_value throw_hash_error(napi_env env, HashKind kind, bool type_error, const char *what) {
  char message[160];
  snprintf(message, sizeof(message), "%s%s", hash_names[kind], what);
  if (type_error) napi_throw_type_error(env, NULL, message);
  else napi_throw_error(env, NULL, message);
  return NULL;
}

/* sha256Update / crc64Update(hasher, buffers: Buffer[], callback): one update at a time. */
static napi_value hash_update(napi_env env, napi_callback_info info, HashKind kind) {
  size_t argc = 3;
  napi_value args[3];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  Hasher *h = argc == 3 ? hasher_arg(env, args[0], kind) : NULL;
  napi_valuetype callback_type = napi_undefined;
  if (argc == 3) napi_typeof(env, args[2], &callback_type);
  if (h == NULL || callback_type != napi_function) return throw_hash_error(env, kind, true, "Update(hasher, buffers: Buffer[], callback)");
  if (h->busy || h->final) return throw_hash_error(env, kind, false, h->final ? "Update: the hash is already final" : "Update: the previous update has not finished");
  HashJob *j = calloc(1, sizeof(HashJob));
  if (j == NULL || !pieces_from(env, args[1], &j->input)) {
    free(j);
    return throw_hash_error(env, kind, true, "Update(hasher, buffers: Buffer[], callback)");
  }
  j->hasher = h;
  h->busy = true;
  if (!queue_job(env, &j->job, args[1], args[2], kind == HASH_CRC64 ? "buildfleet:crc64Update" : "buildfleet:sha256Update", hash_execute, hash_complete)) {
    h->busy = false;
    return throw_hash_error(env, kind, false, "Update: could not queue the work");
  }
  return NULL;
}

/*
 * crc64UpdateSync(hasher, buffers: Buffer[]): on the calling thread. For the many short payloads
 * of a layer of small files, where a trip to the pool costs more than the sum itself.
 */
static napi_value crc64_update_sync(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value args[2];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  Hasher *h = argc == 2 ? hasher_arg(env, args[0], HASH_CRC64) : NULL;
  Pieces input;
  if (h == NULL || !pieces_from(env, args[1], &input)) return throw_hash_error(env, HASH_CRC64, true, "UpdateSync(hasher, buffers: Buffer[])");
  if (h->busy || h->final) {
    pieces_free(&input);
    return throw_hash_error(env, HASH_CRC64, false, h->final ? "UpdateSync: the hash is already final" : "UpdateSync: an update is running");
  }
  for (size_t i = 0; i < input.count; i++) h->crc = crc64_update_bytes(h->crc, input.data[i], input.lengths[i]);
  pieces_free(&input);
  return NULL;
}

static napi_value sha256_update(napi_env env, napi_callback_info info) { return hash_update(env, info, HASH_SHA256); }
static napi_value crc64_update(napi_env env, napi_callback_info info) { return hash_update(env, info, HASH_CRC64); }

/* The hasher for a Final call, marked final; NULL (and thrown) when it cannot be one. */
static Hasher *hash_final_arg(napi_env env, napi_callback_info info, HashKind kind) {
  size_t argc = 1;
  napi_value args[1];
  napi_get_cb_info(env, info, &argc, args, NULL, NULL);
  Hasher *h = argc == 1 ? hasher_arg(env, args[0], kind) : NULL;
  if (h == NULL || h->busy || h->final) {
    throw_hash_error(env, kind, false, "Final(hasher): not a hasher, still updating, or already final");
    return NULL;
  }
  h->final = true;
  return h;
}

static napi_value sha256_final(napi_env env, napi_callback_info info) {
  Hasher *h = hash_final_arg(env, info, HASH_SHA256);
  if (h == NULL) return NULL;
  char hex[65];
  hex_digest(h->ctx, hex);
  napi_value result;
  napi_create_string_utf8(env, hex, 64, &result);
  return result;
}

/* The 8-byte big-endian sum (Go's crc64 Sum(nil)). */
static napi_value crc64_final(napi_env env, napi_callback_info info) {
  Hasher *h = hash_final_arg(env, info, HASH_CRC64);
  if (h == NULL) return NULL;
  uint64_t sum = ~h->crc;
  unsigned char bytes[8];
  for (int i = 0; i < 8; i++) bytes[i] = (unsigned char)(sum >> (56 - 8 * i));
  napi_value result;
  void *copy;
  napi_create_buffer_copy(env, 8, bytes, &copy, &result);
  return result;
}

static void export_function(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value value;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &value);
  napi_set_named_property(env, exports, name, value);
}

void register_addon(napi_env env, napi_value exports) {
  export_function(env, exports, "gzipMember", gzip_member);
  export_function(env, exports, "sha256New", sha256_new);
  export_function(env, exports, "sha256Update", sha256_update);
  export_function(env, exports, "sha256Final", sha256_final);
  export_function(env, exports, "crc64New", crc64_new);
  export_function(env, exports, "crc64Update", crc64_update);
  export_function(env, exports, "crc64UpdateSync", crc64_update_sync);
  export_function(env, exports, "crc64Final", crc64_final);
  napi_value version;
  napi_create_string_utf8(env, LIBDEFLATE_VERSION_STRING, NAPI_AUTO_LENGTH, &version);
  napi_set_named_property(env, exports, "libdeflateVersion", version);
}
