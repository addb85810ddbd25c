/* What the three parts of the native layer extractor share (see layer_extract.c). */
#ifndef BUILDFLEET_LAYER_EXTRACT_H
#define BUILDFLEET_LAYER_EXTRACT_H
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <libdeflate.h>
#include <zlib.h>

#include "native.h"

#define BLOCK 512
#define MAX_META (16u << 20)
#define TRAILING_CHUNK (1u << 20)
#define OUT_CHUNK (256u << 10)

enum TarState { T_HEADER, T_META, T_PAYLOAD, T_PADDING, T_END2, T_TRAILING };
enum Target { TO_NOTHING, TO_FILE };

typedef struct {
  char *path; /* relative to the diff dir */
  unsigned mode, uid, gid;
  struct timespec mtime;
} DelayedDir;

typedef struct {
  /* input */
  bool gzip, z_ready, z_member_done, z_trailing_garbage;
  z_stream z;
  /* Members (what parallel compressors write, 2 MiB each from ours) whole through libdeflate, once the first one turns out small. */
  bool members, tried_members;
  struct libdeflate_decompressor *inflater;
  unsigned char *cbuf, *mout;
  size_t cbuf_len, cbuf_cap, mout_cap, next_try;
  EVP_MD_CTX *sha;
  unsigned char *out;
  /* output records of the running call */
  unsigned char *rec;
  size_t rec_len, rec_cap;
  /* tar */
  enum TarState state;
  unsigned char blk[BLOCK];
  size_t blk_fill;
  uint64_t offset;
  unsigned char meta_hdr[BLOCK];
  unsigned char *meta;
  size_t meta_size, meta_fill;
  uint64_t left; /* payload or padding bytes still to come */
  unsigned char *pax;
  size_t pax_len;
  unsigned char *long_name, *long_link;
  size_t long_name_len, long_link_len;
  bool has_long_name, has_long_link;
  /* the current entry */
  unsigned char *name;
  size_t name_len;
  uint64_t entry_size, data_size;
  bool entry_crc;
  uint64_t crc;
  enum Target target;
  int fd;
  unsigned mode, uid, gid;
  struct timespec mtime;
  unsigned char *xattrs; /* a copy of the entry's PAX records, for SCHILY.xattr.* */
  size_t xattrs_len;
  /* the tree */
  int root;
  char *parent_path;
  int parent_fd;
  /* What a new file already has without fchown / fchmod: the creator's ids, the umask's cut. */
  unsigned euid, egid, umask;
  bool inherit_gid;
  DelayedDir *dirs;
  size_t dirs_len, dirs_cap;
  uint64_t entries, size_on_disk;
  /* control */
  bool busy, finished, aborted;
  char *error;
} Extractor;
typedef struct {
  const unsigned char *key, *value;
  size_t key_len, value_len;
} PaxRecord;

/* layer_fields.c: errors, tar-split records, tar fields (imagebuilder/tar/fields.ts) */
bool fail(Extractor *x, const char *kind, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
bool sys_fail(Extractor *x, const char *what, const char *path);
const char *shown(const unsigned char *bytes, size_t len, char out[300]);
bool rec_reserve(Extractor *x, size_t more);
void put_u32(unsigned char *p, uint32_t v);
bool rec_segment(Extractor *x, const unsigned char *bytes, size_t len);
bool rec_file(Extractor *x, const unsigned char *name, size_t name_len, uint64_t size, bool has_crc, uint64_t crc);
bool parse_numeric(const unsigned char *f, size_t len, int64_t *out);
bool is_zero_block(const unsigned char *b);
bool checksum_matches(const unsigned char *b);
size_t field_len(const unsigned char *f, size_t len);
uint64_t padding_of(uint64_t size);
unsigned char *header_name(const unsigned char *b, size_t *len);
bool pax_check(Extractor *x, const unsigned char *d, size_t len);
bool pax_next(const unsigned char *d, size_t len, size_t *pos, PaxRecord *r);
bool key_is(const PaxRecord *r, const char *key);
bool pax_value(const unsigned char *d, size_t len, const char *key, const unsigned char **value, size_t *value_len);
bool pax_decimal(Extractor *x, const unsigned char *v, size_t len, const char *key, uint64_t *out);
bool pax_time(Extractor *x, const unsigned char *v, size_t len, struct timespec *out);

/* layer_tree.c: the files below the diff dir (layer-walk.ts's Docker semantics) */
int open_beneath(int root, const char *path, int flags);
bool below_non_directory(Extractor *x);
int parent_dir(Extractor *x, const char *parent);
void proc_path(char *out, size_t size, int parent, const char *base);
bool apply_xattrs(Extractor *x, int fd, int parent, const char *base, const char *path);
bool set_times_at(Extractor *x, int parent, const char *base, const char *path);
bool finish_node_at(Extractor *x, int parent, const char *base, const char *path, bool with_mode);
bool close_file(Extractor *x);
bool write_payload(Extractor *x, const unsigned char *p, size_t n);
char *normalise(const unsigned char *raw, size_t len, bool *escapes);
bool delay_dir(Extractor *x, const char *path);
bool restore_dirs(Extractor *x);
bool place_entry(Extractor *x, char type, const unsigned char *link, size_t link_len, const unsigned char *hdr);
#endif
