/* Errors, tar-split records and tar fields of the native layer extractor (layer_extract.c). */
#define _GNU_SOURCE
#include "layer_extract.h"

/* ---- errors and records ---- */

bool fail(Extractor *x, const char *kind, const char *fmt, ...) {
  if (x->error != NULL) return false;
  char message[1200];
  va_list args;
  va_start(args, fmt);
  vsnprintf(message, sizeof message, fmt, args);
  va_end(args);
  size_t size = strlen(kind) + strlen(message) + 2;
  x->error = malloc(size);
  if (x->error != NULL) snprintf(x->error, size, "%s\t%s", kind, message);
  return false;
}

bool sys_fail(Extractor *x, const char *what, const char *path) {
  int err = errno;
  return fail(x, "environment", "%s %s: %s", what, path, strerror(err));
}

/* A name for messages: the bytes as they are, cut short. */
const char *shown(const unsigned char *bytes, size_t len, char out[300]) {
  size_t n = len < 290 ? len : 290;
  memcpy(out, bytes, n);
  out[n] = 0;
  if (n < len) strcpy(out + n, "...");
  return out;
}

bool rec_reserve(Extractor *x, size_t more) {
  if (x->rec_len + more <= x->rec_cap) return true;
  size_t cap = x->rec_cap ? x->rec_cap : 64 * 1024;
  while (cap < x->rec_len + more) cap *= 2;
  unsigned char *grown = realloc(x->rec, cap);
  if (grown == NULL) return fail(x, "environment", "out of memory");
  x->rec = grown;
  x->rec_cap = cap;
  return true;
}

void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

bool rec_segment(Extractor *x, const unsigned char *bytes, size_t len) {
  if (len == 0) return true;
  if (!rec_reserve(x, 5 + len)) return false;
  x->rec[x->rec_len] = 'S';
  put_u32(x->rec + x->rec_len + 1, (uint32_t)len);
  memcpy(x->rec + x->rec_len + 5, bytes, len);
  x->rec_len += 5 + len;
  return true;
}

bool rec_file(Extractor *x, const unsigned char *name, size_t name_len, uint64_t size, bool has_crc, uint64_t crc) {
  if (!rec_reserve(x, 1 + 4 + name_len + 8 + 1 + 8)) return false;
  unsigned char *p = x->rec + x->rec_len;
  *p++ = 'F';
  put_u32(p, (uint32_t)name_len);
  p += 4;
  memcpy(p, name, name_len);
  p += name_len;
  for (int i = 0; i < 8; i++) *p++ = (unsigned char)(size >> (8 * i));
  *p++ = has_crc;
  if (has_crc)
    for (int i = 0; i < 8; i++) *p++ = (unsigned char)(crc >> (56 - 8 * i));
  x->rec_len = (size_t)(p - x->rec);
  x->entries++;
  return true;
}

/* ---- tar fields (imagebuilder/tar/fields.ts) ---- */

/* An octal field (NUL- or space-padded) or base-256; false when it is neither. */
bool parse_numeric(const unsigned char *f, size_t len, int64_t *out) {
  if (f[0] & 0x80) {
    bool negative = (f[0] & 0x40) != 0;
    unsigned inv = negative ? 0xff : 0;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
      unsigned b = (f[i] ^ inv) & 0xff;
      if (i == 0) b &= 0x7f;
      if (v >> 55) return false; /* beyond 2^63: not a safe number either */
      v = (v << 8) | b;
    }
    if (v > (1ULL << 53)) return false;
    *out = negative ? -(int64_t)v - 1 : (int64_t)v;
    return true;
  }
  size_t start = 0, end = len;
  while (start < end && (f[start] == ' ' || f[start] == 0)) start++;
  while (end > start && (f[end - 1] == ' ' || f[end - 1] == 0)) end--;
  uint64_t v = 0;
  for (size_t i = start; i < end; i++) {
    if (f[i] < '0' || f[i] > '7') return false;
    v = v * 8 + (uint64_t)(f[i] - '0');
    if (v > (1ULL << 53)) return false;
  }
  *out = (int64_t)v;
  return true;
}

bool is_zero_block(const unsigned char *b) {
  for (int i = 0; i < BLOCK; i++)
    if (b[i]) return false;
  return true;
}

bool checksum_matches(const unsigned char *b) {
  int64_t stored;
  if (!parse_numeric(b + 148, 8, &stored)) return false;
  int64_t sum = 8 * 0x20, high = 0;
  for (int i = 0; i < BLOCK; i++) {
    if (i >= 148 && i < 156) continue;
    sum += b[i];
    high += b[i] >> 7;
  }
  return stored == sum || stored == sum - 256 * high;
}

size_t field_len(const unsigned char *f, size_t len) {
  const unsigned char *nul = memchr(f, 0, len);
  return nul ? (size_t)(nul - f) : len;
}

uint64_t padding_of(uint64_t size) { return (BLOCK - size % BLOCK) % BLOCK; }

/* ustar and star put a prefix before the name; GNU and v7 headers have none. Into a new buffer. */
unsigned char *header_name(const unsigned char *b, size_t *len) {
  size_t n = field_len(b, 100);
  size_t p = 0;
  if (memcmp(b + 257, "ustar\0", 6) == 0) p = field_len(b + 345, memcmp(b + 508, "tar\0", 4) == 0 ? 131 : 155);
  unsigned char *out = malloc(p + 1 + n + 1);
  if (out == NULL) return NULL;
  size_t at = 0;
  if (p) {
    memcpy(out, b + 345, p);
    out[p] = '/';
    at = p + 1;
  }
  memcpy(out + at, b, n);
  *len = at + n;
  out[*len] = 0;
  return out;
}

/* PAX records "LEN KEY=VALUE\n": checked once, then looked up. */
bool pax_check(Extractor *x, const unsigned char *d, size_t len) {
  size_t pos = 0;
  while (pos < len) {
    if (d[pos] == 0) break;
    const unsigned char *space = memchr(d + pos, ' ', len - pos);
    if (space == NULL) return fail(x, "format", "malformed PAX record (no length)");
    uint64_t rec = 0;
    if ((size_t)(space - d) == pos) return fail(x, "format", "malformed PAX record (length \"\")");
    for (const unsigned char *c = d + pos; c < space; c++) {
      if (*c < '0' || *c > '9') return fail(x, "format", "malformed PAX record (length)");
      rec = rec * 10 + (uint64_t)(*c - '0');
      if (rec > len) break;
    }
    size_t s = (size_t)(space - d);
    if (pos + rec > len || pos + rec <= s + 1 || d[pos + rec - 1] != '\n') return fail(x, "format", "malformed PAX record (length does not match)");
    const unsigned char *eq = memchr(d + s + 1, '=', pos + rec - 1 - (s + 1));
    if (eq == NULL) return fail(x, "format", "malformed PAX record (no \"=\")");
    if ((size_t)(eq - d) == s + 1) return fail(x, "format", "malformed PAX record (empty key)");
    pos += rec;
  }
  return true;
}


/* The next record at *pos (already checked), false at the end. */
bool pax_next(const unsigned char *d, size_t len, size_t *pos, PaxRecord *r) {
  if (*pos >= len || d[*pos] == 0) return false;
  const unsigned char *space = memchr(d + *pos, ' ', len - *pos);
  uint64_t rec = 0;
  for (const unsigned char *c = d + *pos; c < space; c++) rec = rec * 10 + (uint64_t)(*c - '0');
  const unsigned char *key = space + 1;
  const unsigned char *eq = memchr(key, '=', (size_t)(d + *pos + rec - 1 - key));
  r->key = key;
  r->key_len = (size_t)(eq - key);
  r->value = eq + 1;
  r->value_len = (size_t)(d + *pos + rec - 1 - r->value);
  *pos += rec;
  return true;
}

bool key_is(const PaxRecord *r, const char *key) { return r->key_len == strlen(key) && memcmp(r->key, key, r->key_len) == 0; }

/* The last record with this key, unless its value is empty (Go keeps the header's value then). */
bool pax_value(const unsigned char *d, size_t len, const char *key, const unsigned char **value, size_t *value_len) {
  PaxRecord r;
  size_t pos = 0;
  bool found = false;
  while (pax_next(d, len, &pos, &r)) {
    if (key_is(&r, key)) {
      *value = r.value;
      *value_len = r.value_len;
      found = true;
    }
  }
  return found && *value_len > 0;
}

bool pax_decimal(Extractor *x, const unsigned char *v, size_t len, const char *key, uint64_t *out) {
  uint64_t n = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return fail(x, "format", "invalid PAX %s \"%.*s\"", key, (int)(len < 40 ? len : 40), v);
    n = n * 10 + (uint64_t)(v[i] - '0');
    if (n > (1ULL << 53)) return fail(x, "unsupported", "PAX %s %.*s is too large", key, (int)(len < 40 ? len : 40), v);
  }
  *out = n;
  return true;
}

/* "SEC[.FRACTION]" with an optional "-": floor semantics. */
bool pax_time(Extractor *x, const unsigned char *v, size_t len, struct timespec *out) {
  size_t i = 0;
  bool negative = len > 0 && v[0] == '-';
  if (negative) i++;
  size_t digits = i;
  int64_t sec = 0;
  while (i < len && v[i] >= '0' && v[i] <= '9') {
    sec = sec * 10 + (v[i] - '0');
    if (sec > (1LL << 53)) return fail(x, "unsupported", "PAX time out of range");
    i++;
  }
  if (i == digits) return fail(x, "format", "invalid PAX time \"%.*s\"", (int)(len < 40 ? len : 40), v);
  long nsec = 0;
  if (i < len) {
    if (v[i] != '.') return fail(x, "format", "invalid PAX time \"%.*s\"", (int)(len < 40 ? len : 40), v);
    i++;
    int taken = 0;
    for (; i < len; i++) {
      if (v[i] < '0' || v[i] > '9') return fail(x, "format", "invalid PAX time \"%.*s\"", (int)(len < 40 ? len : 40), v);
      if (taken < 9) nsec = nsec * 10 + (v[i] - '0'), taken++;
    }
    for (; taken < 9; taken++) nsec *= 10;
  }
  if (!negative) out->tv_sec = sec, out->tv_nsec = nsec;
  else if (nsec == 0) out->tv_sec = -sec, out->tv_nsec = 0;
  else out->tv_sec = -sec - 1, out->tv_nsec = 1000000000L - nsec;
  return true;
}

