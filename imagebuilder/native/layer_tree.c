/* The files below the diff dir, as Docker's overlay2 applier leaves them (layer_extract.c). */
#define _GNU_SOURCE
#include "layer_extract.h"

/* ---- the tree below the diff dir ---- */

int open_beneath(int root, const char *path, int flags) {
  struct open_how how = {.flags = (uint64_t)(flags | O_CLOEXEC), .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
  return (int)syscall(SYS_openat2, root, *path ? path : ".", &how, sizeof how);
}

bool below_non_directory(Extractor *x) {
  char name[300];
  return fail(x, "layer", "entry \"%s\" lies below a path the same layer made as something other than a directory", shown(x->name, x->name_len, name));
}

/* The entry's parent directory, made (root's, 0755, as Docker's applier makes them) when the layer did not list it. */
int parent_dir(Extractor *x, const char *parent) {
  if (x->parent_path != NULL && strcmp(parent, x->parent_path) == 0) return x->parent_fd;
  if (x->parent_fd >= 0) close(x->parent_fd);
  free(x->parent_path);
  x->parent_path = NULL;
  x->parent_fd = open_beneath(x->root, parent, O_PATH | O_DIRECTORY);
  if (x->parent_fd < 0 && errno == ENOENT) {
    /* Made one component at a time, each below the one before it. */
    char *walk = strdup(parent);
    if (walk == NULL) return fail(x, "environment", "out of memory"), -1;
    int dir = open_beneath(x->root, ".", O_PATH | O_DIRECTORY);
    for (char *part = walk, *slash; dir >= 0 && part != NULL; part = slash ? slash + 1 : NULL) {
      slash = strchr(part, '/');
      if (slash) *slash = 0;
      if (mkdirat(dir, part, 0755) == 0) fchmodat(dir, part, 0755, 0);
      struct open_how how = {.flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
      int next = (int)syscall(SYS_openat2, dir, part, &how, sizeof how);
      close(dir);
      dir = next;
    }
    free(walk);
    x->parent_fd = dir;
  }
  if (x->parent_fd < 0) {
    if (errno == ENOTDIR || errno == ELOOP || errno == EXDEV) return below_non_directory(x), -1;
    return sys_fail(x, "cannot open", parent), -1;
  }
  x->parent_path = strdup(parent);
  return x->parent_fd;
}

/* Where an xattr of a path that is no open file goes: through the parent's descriptor, not following a symlink. */
void proc_path(char *out, size_t size, int parent, const char *base) { snprintf(out, size, "/proc/self/fd/%d/%s", parent, base); }

/* SCHILY.xattr.NAME records, as GNU tar --xattrs --xattrs-include='*' applies them. */
bool apply_xattrs(Extractor *x, int fd, int parent, const char *base, const char *path) {
  PaxRecord r;
  size_t pos = 0;
  char link[PATH_MAX + 64];
  bool through_proc = fd < 0;
  if (through_proc) proc_path(link, sizeof link, parent, base);
  while (x->xattrs && pax_next(x->xattrs, x->xattrs_len, &pos, &r)) {
    static const char prefix[] = "SCHILY.xattr.";
    if (r.key_len <= sizeof prefix - 1 || memcmp(r.key, prefix, sizeof prefix - 1) != 0) continue;
    char key[512];
    size_t key_len = r.key_len - (sizeof prefix - 1);
    if (key_len >= sizeof key) return fail(x, "layer", "xattr name of %zu bytes on \"%s\"", key_len, path);
    memcpy(key, r.key + sizeof prefix - 1, key_len);
    key[key_len] = 0;
    int rc = through_proc ? lsetxattr(link, key, r.value, r.value_len, 0) : fsetxattr(fd, key, r.value, r.value_len, 0);
    if (rc != 0) return sys_fail(x, "cannot set xattr on", path);
  }
  return true;
}

bool set_times_at(Extractor *x, int parent, const char *base, const char *path) {
  struct timespec ts[2] = {x->mtime, x->mtime};
  if (utimensat(parent, base, ts, AT_SYMLINK_NOFOLLOW) != 0) return sys_fail(x, "cannot set times of", path);
  return true;
}

/* Owner, then mode (a chown clears set-id bits), then xattrs (a chown clears capabilities), then times. */
bool finish_node_at(Extractor *x, int parent, const char *base, const char *path, bool with_mode) {
  if (fchownat(parent, base, x->uid, x->gid, AT_SYMLINK_NOFOLLOW) != 0) return sys_fail(x, "cannot change the owner of", path);
  if (with_mode && fchmodat(parent, base, x->mode, 0) != 0) return sys_fail(x, "cannot change the mode of", path);
  return apply_xattrs(x, -1, parent, base, path) && set_times_at(x, parent, base, path);
}

bool close_file(Extractor *x) {
  if (x->target != TO_FILE) return true;
  x->target = TO_NOTHING;
  int fd = x->fd;
  x->fd = -1;
  char path[300];
  shown(x->name, x->name_len, path);
  struct timespec ts[2] = {x->mtime, x->mtime};
  /* Most files of a layer are root's and 0644 or 0755: what openat already made them (two syscalls fewer per file). */
  bool owned = x->uid == x->euid && x->gid == x->egid && !x->inherit_gid;
  bool moded = owned && (x->mode & 07000) == 0 && (x->mode & 0777 & ~x->umask) == x->mode;
  bool ok = (owned || fchown(fd, x->uid, x->gid) == 0 || sys_fail(x, "cannot change the owner of", path)) &&
            (moded || fchmod(fd, x->mode) == 0 || sys_fail(x, "cannot change the mode of", path)) && apply_xattrs(x, fd, -1, NULL, path) &&
            (futimens(fd, ts) == 0 || sys_fail(x, "cannot set times of", path));
  if (close(fd) != 0 && ok) return sys_fail(x, "cannot write", path);
  return ok;
}

bool write_payload(Extractor *x, const unsigned char *p, size_t n) {
  while (n > 0) {
    ssize_t wrote = write(x->fd, p, n);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      char path[300];
      return sys_fail(x, "cannot write", shown(x->name, x->name_len, path));
    }
    p += wrote;
    n -= (size_t)wrote;
  }
  return true;
}

/* The entry's path as the walk normalises it: no "", "." parts; ".." leaves the root. */
char *normalise(const unsigned char *raw, size_t len, bool *escapes) {
  char *out = malloc(len + 1);
  if (out == NULL) return NULL;
  size_t at = 0;
  *escapes = false;
  for (size_t i = 0; i <= len;) {
    size_t j = i;
    while (j < len && raw[j] != '/') j++;
    size_t part = j - i;
    if (part == 2 && raw[i] == '.' && raw[i + 1] == '.') *escapes = true;
    else if (part > 0 && !(part == 1 && raw[i] == '.')) {
      if (at) out[at++] = '/';
      memcpy(out + at, raw + i, part);
      at += part;
    }
    i = j + 1;
  }
  out[at] = 0;
  if (memchr(out, 0, at) != NULL) *escapes = true; /* a NUL inside a name cannot be written */
  return out;
}

bool delay_dir(Extractor *x, const char *path) {
  if (x->dirs_len == x->dirs_cap) {
    size_t cap = x->dirs_cap ? x->dirs_cap * 2 : 256;
    DelayedDir *grown = realloc(x->dirs, cap * sizeof *grown);
    if (grown == NULL) return fail(x, "environment", "out of memory");
    x->dirs = grown;
    x->dirs_cap = cap;
  }
  char *copy = strdup(path);
  if (copy == NULL) return fail(x, "environment", "out of memory");
  x->dirs[x->dirs_len++] = (DelayedDir){copy, x->mode, x->uid, x->gid, x->mtime};
  return true;
}

/* Directory metadata last, as GNU tar --delay-directory-restore: children change the times. */
bool restore_dirs(Extractor *x) {
  for (size_t i = x->dirs_len; i-- > 0;) {
    DelayedDir *d = &x->dirs[i];
    int fd = open_beneath(x->root, d->path, O_RDONLY | O_DIRECTORY);
    struct timespec ts[2] = {d->mtime, d->mtime};
    if (fd < 0) return sys_fail(x, "cannot open", d->path);
    bool ok = (fchown(fd, d->uid, d->gid) == 0 || sys_fail(x, "cannot change the owner of", d->path)) &&
              (fchmod(fd, d->mode) == 0 || sys_fail(x, "cannot change the mode of", d->path)) &&
              (futimens(fd, ts) == 0 || sys_fail(x, "cannot set times of", d->path));
    close(fd);
    if (!ok) return false;
  }
  return true;
}

/* One entry (layer-walk.ts's `entry`), before its payload; its payload goes to x->target. */
bool place_entry(Extractor *x, char type, const unsigned char *link, size_t link_len, const unsigned char *hdr) {
  char shown_name[300];
  shown(x->name, x->name_len, shown_name);
  x->target = TO_NOTHING;
  bool escapes;
  char *path = normalise(x->name, x->name_len, &escapes);
  if (path == NULL) return fail(x, "environment", "out of memory");
  bool ok = false;
  if (escapes) {
    fail(x, "layer", "entry \"%s\" leaves the layer's root", shown_name);
    goto done;
  }
  if (x->mtime.tv_sec < 0) {
    fail(x, "layer", "entry \"%s\" is dated before 1970", shown_name);
    goto done;
  }
  char *slash = strrchr(path, '/');
  const char *base = slash ? slash + 1 : path;
  const char *parent = slash ? (*slash = 0, path) : "";
  if (*path == 0 && slash == NULL) {
    if (type != '5') fail(x, "layer", "a root entry that is not a directory");
    else ok = true;
    goto done;
  }
  if (strcmp(base, ".wh..wh..opq") == 0) {
    if (*parent == 0) {
      fail(x, "layer", "an opaque marker at the root of the layer");
      goto done;
    }
    /* The directory itself, made now when the layer did not list it. */
    char *dir = strdup(parent);
    if (dir == NULL) goto done;
    int fd = parent_dir(x, dir);
    if (fd >= 0) {
      char proc[PATH_MAX + 64];
      snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
      ok = setxattr(proc, "trusted.overlay.opaque", "y", 1, 0) == 0 || sys_fail(x, "cannot mark opaque", dir);
    }
    free(dir);
    goto done;
  }
  int dir = parent_dir(x, parent);
  if (dir < 0) goto done;
  char full[PATH_MAX];
  snprintf(full, sizeof full, "%s%s%s", parent, *parent ? "/" : "", base);
  if (strncmp(base, ".wh.", 4) == 0) {
    const char *hidden = base + 4;
    if (*hidden == 0) {
      fail(x, "layer", "a whiteout of nothing: \"%s\"", shown_name);
      goto done;
    }
    if (mknodat(dir, hidden, S_IFCHR, makedev(0, 0)) != 0) {
      if (errno == EEXIST) fail(x, "layer", "whiteout \"%s\" of a path the same layer made", shown_name);
      else sys_fail(x, "cannot make whiteout", full);
      goto done;
    }
    /* The whiteout's owner and time, mode 0, no xattrs (layer-walk.ts). */
    x->mode = 0;
    free(x->xattrs);
    x->xattrs = NULL;
    ok = finish_node_at(x, dir, hidden, full, true);
    goto done;
  }
  switch (type) {
    case '0':
    case '7': {
      x->fd = openat(dir, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, x->mode & 0777);
      if (x->fd < 0) {
        if (errno == EEXIST) fail(x, "layer", "\"%s\" is made twice in one layer", shown_name);
        else sys_fail(x, "cannot create", full);
        goto done;
      }
      x->target = TO_FILE;
      x->size_on_disk += x->entry_size;
      ok = true;
      break;
    }
    case '5':
      if (mkdirat(dir, base, 0700) != 0) {
        struct stat st;
        if (errno != EEXIST || fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) {
          if (errno == EEXIST) fail(x, "layer", "\"%s\" is made twice in one layer", shown_name);
          else sys_fail(x, "cannot make directory", full);
          goto done;
        }
      }
      ok = apply_xattrs(x, -1, dir, base, full) && delay_dir(x, full);
      break;
    case '2': {
      char *target = strndup((const char *)link, link_len);
      if (target == NULL) goto done;
      int rc = symlinkat(target, dir, base);
      free(target);
      if (rc != 0) {
        if (errno == EEXIST) fail(x, "layer", "\"%s\" is made twice in one layer", shown_name);
        else sys_fail(x, "cannot make symlink", full);
        goto done;
      }
      x->size_on_disk += link_len;
      ok = finish_node_at(x, dir, base, full, false);
      break;
    }
    case '1': {
      bool bad;
      char *target = normalise(link, link_len, &bad);
      if (target == NULL) goto done;
      struct stat st;
      int tdir = -1;
      char *tslash = strrchr(target, '/');
      const char *tbase = tslash ? tslash + 1 : target;
      if (!bad && *target && strcmp(target, full) != 0) {
        if (tslash) *tslash = 0;
        tdir = open_beneath(x->root, tslash ? target : "", O_PATH | O_DIRECTORY);
      }
      if (tdir < 0 || fstatat(tdir, tbase, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(st.st_mode)) {
        char shown_link[300];
        fail(x, "layer", "hardlink \"%s\" to \"%s\", which this layer did not make", shown_name, shown(link, link_len, shown_link));
      } else if (linkat(tdir, tbase, dir, base, 0) != 0) {
        if (errno == EEXIST) fail(x, "layer", "\"%s\" is made twice in one layer", shown_name);
        else sys_fail(x, "cannot make hardlink", full);
      } else ok = true;
      if (tdir >= 0) close(tdir);
      free(target);
      break;
    }
    case '3':
    case '4':
    case '6': {
      int64_t major = 0, minor = 0;
      if (type != '6' && (!parse_numeric(hdr + 329, 8, &major) || !parse_numeric(hdr + 337, 8, &minor))) {
        fail(x, "format", "invalid device numbers of \"%s\"", shown_name);
        goto done;
      }
      mode_t kind = type == '3' ? S_IFCHR : type == '4' ? S_IFBLK : S_IFIFO;
      if (mknodat(dir, base, kind | (x->mode & 0777), makedev((unsigned)major, (unsigned)minor)) != 0) {
        if (errno == EEXIST) fail(x, "layer", "\"%s\" is made twice in one layer", shown_name);
        else sys_fail(x, "cannot make node", full);
        goto done;
      }
      ok = finish_node_at(x, dir, base, full, true);
      break;
    }
    default:
      fail(x, "layer", "entry \"%s\" of tar type '%c', which the direct path leaves to the runtime", shown_name, type);
  }
done:
  free(path);
  return ok;
}

