/* What addon.c shares with layer_extract.c. */
#ifndef BUILDFLEET_NATIVE_H
#define BUILDFLEET_NATIVE_H
#include <node_api.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  napi_async_work work;
  napi_ref keep; /* the input (or array of inputs), alive until the job is done */
  napi_ref callback;
  const char *error;
} Job;

typedef struct {
  size_t count;
  const void **data;
  size_t *lengths;
  size_t total;
} Pieces;

void finish_job(napi_env env, Job *job, size_t argc, napi_value *argv);
napi_value error_value(napi_env env, const char *text);
napi_value job_error(napi_env env, napi_status status, const Job *job, const char *cancelled);
bool queue_job(napi_env env, Job *job, napi_value keep, napi_value callback, const char *name,
               napi_async_execute_callback execute, napi_async_complete_callback complete);
void pieces_free(Pieces *p);
bool pieces_from(napi_env env, napi_value array, Pieces *p);

/* CRC-64/ISO: crc64_ready() once before crc64_update_bytes on an inverted register. */
void crc64_ready(void);
uint64_t crc64_update_bytes(uint64_t crc, const unsigned char *p, size_t n);
void hex_digest(EVP_MD_CTX *ctx, char out[65]);

/* What module.c registers: addon.c's gzip and hashes, layer_extract.c's extractor. */
void register_addon(napi_env env, napi_value exports);
void register_layer_extract(napi_env env, napi_value exports);
#endif
