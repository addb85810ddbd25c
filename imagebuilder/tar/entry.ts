/**
 * One tar entry as the squash engine sees it: everything a container runtime applies from a
 * layer header, losslessly. tar-stream decodes PAX values as UTF-8 (corrupting binary xattrs
 * such as security.capability) and clamps uid/gid above 262143, so buildfleet reads and writes
 * headers itself (see ./README.md).
 */
export type TarEntryType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

/** Seconds and nanoseconds since the epoch: PAX times carry nanoseconds; JS numbers cannot. */
export type TarTime = { sec: number; nsec: number };

export interface TarHeader {
  /** Normalised: no leading "./" or "/", no trailing "/", never "." itself ("" is the root). */
  path: string;
  type: TarEntryType;
  /** Permission bits including setuid, setgid and sticky (07777). */
  mode: number;
  /**
   * Bits of the header's mode field above 07777, as read: Go's archive/tar (so Docker) puts the
   * file type there (0040000 for a directory, 0100000 for a file). Extractors ignore them; they are
   * kept so that a header is written back as it was read, and so can be copied as it is.
   */
  modeTypeBits?: number;
  uid: number;
  gid: number;
  uname?: string;
  gname?: string;
  /** Content bytes; 0 for all but files (a sparse file is read dense, so this is its real size). */
  size: number;
  mtime: TarTime;
  atime?: TarTime;
  ctime?: TarTime;
  /** Symlink target, or for a hardlink the (normalised) path of the entry it links to. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes with binary values (PAX SCHILY.xattr.NAME). */
  xattrs: Map<string, Buffer>;
  /** PAX records we do not interpret, kept byte for byte (keys other than path, linkpath, size, uid, gid, uname, gname, mtime, atime, ctime, SCHILY.xattr.*, GNU.sparse.*). */
  paxExtra?: Map<string, Buffer>;
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

/**
 * The xattrs of every header that has none: one shared, unchangeable map instead of one per
 * entry (an empty Map costs ~200 bytes, and an image has hundreds of thousands of entries).
 */
export const NO_XATTRS: Map<string, Buffer> = Object.freeze(
  Object.defineProperties(new Map<string, Buffer>(), {
    set: { value: refuseChange },
    delete: { value: refuseChange },
    clear: { value: refuseChange },
  }),
);

function refuseChange(): never {
  throw new TypeError('NO_XATTRS is shared by many headers: give the header its own Map');
}

/** Already normal: no empty, "." or ".." segment, no leading or trailing slash. */
const NORMAL_PATH = /^(?!\.\.?(?:\/|$))[^/]+(?:\/(?!\.\.?(?:\/|$))[^/]+)*$/;

/** Strips "./", "/" and trailing slashes; rejects paths that leave the root. */
export function normaliseEntryPath(raw: string): string | undefined {
  if (NORMAL_PATH.test(raw)) return raw;
  const parts: string[] = [];
  for (const part of raw.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return undefined;
    parts.push(part);
  }
  return parts.join('/');
}

export function parentOf(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

