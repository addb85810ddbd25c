import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, mkdtemp, readdir, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';
import type { DockerEngine } from '../../daemons/index.js';

/**
 * The conformance oracle: what the container runtime itself shows for an image. A container is
 * created (never started), `docker export`ed, and the tar is extracted as root by GNU tar, an
 * implementation independent of ours that applies modes, owners, xattrs, devices, hardlinks and
 * mtimes. The extracted tree is then read back with lstat and getfattr (Debian package `attr`).
 *
 * What Docker 20.10 itself loses, so no image built or exported by it can show it (checked here):
 * - mtimes are truncated to whole seconds (pkg/archive FileInfoHeader), on commit, ADD and export;
 * - xattrs other than `security.capability` are not written to tars (pkg/archive addTarFile).
 */

export type RootfsEntryType = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export type RootfsEntry = {
  /** Absolute path inside the root filesystem, e.g. `/etc/passwd`; never `/` itself. A name that is not UTF-8 has its bytes above 0x7f as U+DC80..U+DCFF (rootfsPath). */
  path: string;
  type: RootfsEntryType;
  /** Permission bits with setuid, setgid and sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Regular files only. */
  size?: number;
  /** Hex sha256 of the content; regular files only. */
  sha256?: string;
  /** Symlinks only. */
  linkTarget?: string;
  /** Character and block devices only. */
  devMajor?: number;
  devMinor?: number;
  /** Modification time in ns since the epoch; null where Docker sets it (DOCKER_INIT_DIRS). */
  mtimeNs: bigint | null;
  /** xattr name -> value as lowercase hex (`0x` prefix); empty object when none. */
  xattrs: Record<string, string>;
  /** Set when the inode has more than one name: the lexicographically smallest path of the group. */
  hardlinkGroup?: string;
};

/**
 * Written by Docker into every container's init layer (daemon/initlayer/setup_unix.go): each is
 * unlinked and re-created empty (or as the symlink /etc/mtab -> /proc/mounts) whatever the image
 * holds, so the runtime never shows the image's own version. Left out of the oracle entirely.
 */
export const DOCKER_INIT_FILES: readonly string[] = ['/.dockerenv', '/dev/console', '/etc/hostname', '/etc/hosts', '/etc/mtab', '/etc/resolv.conf'];

/**
 * Directories the init layer creates when the image lacks them (mode 0755, root) or creates
 * files in (/dev, /etc: always). Their mtime is the time of `docker create`, so it is reported as
 * null; type, mode, owner and xattrs still come from the image and are compared. Their content
 * from the image (e.g. /etc/passwd, /dev/pts/x) is compared as usual.
 */
export const DOCKER_INIT_DIRS: readonly string[] = ['/dev', '/dev/pts', '/dev/shm', '/etc', '/proc', '/sys'];

/** Creates a container of the image (not started), exports and extracts it, and describes every path. */
export async function exportRootfs(engine: DockerEngine, image: string): Promise<RootfsEntry[]> {
  // An entrypoint that is never run: images without Cmd/Entrypoint cannot be created otherwise.
  const created = await engine.cli(['create', '--network', 'none', '--entrypoint', '/buildfleet-oracle-never-started', image]);
  const id = created.stdout.trim().split('\n').pop() ?? '';
  let dir: string | undefined;
  try {
    dir = await mkdtemp(join(tmpdir(), 'buildfleet-rootfs-'));
    // Streamed: not buffered in memory (stdout), stderr kept for the error message.
    await execa('docker', ['export', id], { env: { DOCKER_HOST: engine.host }, buffer: { stdout: false } }).pipe(
      'tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '--same-owner', '-xpf', '-', '-C', dir],
    );
    return await collectRootfs(dir, { dockerInit: true });
  } finally {
    // -v: volumes the image declares were created as anonymous volumes with the container.
    await engine.cli(['rm', '--force', '--volumes', id]).catch(() => undefined);
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Describes every path below dir (which stands for `/`), sorted by path. With dockerInit, leaves out
 * DOCKER_INIT_FILES and nulls the mtime of DOCKER_INIT_DIRS, as for a `docker export`.
 */
export async function collectRootfs(dir: string, options: { dockerInit?: boolean } = {}): Promise<RootfsEntry[]> {
  const root = Buffer.from(dir);
  const xattrs = await readXattrs(dir, root);
  const entries: RootfsEntry[] = [];
  const inodes = new Map<string, RootfsEntry[]>();

  const visit = async (absolute: Buffer, path: string): Promise<void> => {
    const st = await lstat(absolute, { bigint: true });
    const type = fileType(st.mode);
    const entry: RootfsEntry = {
      path,
      type,
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtimeNs: st.mtimeNs,
      xattrs: xattrs.get(path) ?? {},
    };
    if (type === 'file') {
      entry.size = Number(st.size);
      entry.sha256 = await sha256File(absolute);
    } else if (type === 'symlink') {
      entry.linkTarget = rootfsPath(await readlink(absolute, { encoding: 'buffer' }));
    } else if (type === 'char' || type === 'block') {
      // Linux dev_t: major is bits 8-19 and 32-43, minor bits 0-7 and 20-31.
      entry.devMajor = Number(((st.rdev >> 8n) & 0xfffn) | ((st.rdev >> 32n) & ~0xfffn));
      entry.devMinor = Number((st.rdev & 0xffn) | ((st.rdev >> 12n) & ~0xffn));
    }
    if (type !== 'dir' && st.nlink > 1n) {
      const key = `${st.dev}:${st.ino}`;
      inodes.set(key, [...(inodes.get(key) ?? []), entry]);
    }
    const ignored = options.dockerInit && DOCKER_INIT_FILES.includes(path);
    if (options.dockerInit && DOCKER_INIT_DIRS.includes(path)) entry.mtimeNs = null;
    if (!ignored) entries.push(entry);
    if (type === 'dir') {
      for (const name of await readdir(absolute, { encoding: 'buffer' })) {
        await visit(Buffer.concat([absolute, Buffer.from('/'), name]), `${path === '/' ? '' : path}/${rootfsPath(name)}`);
      }
    }
  };

  for (const name of await readdir(root, { encoding: 'buffer' })) {
    await visit(Buffer.concat([root, Buffer.from('/'), name]), `/${rootfsPath(name)}`);
  }
  for (const group of inodes.values()) {
    if (group.length < 2) continue;
    const id = group.map((entry) => entry.path).sort()[0];
    for (const entry of group) entry.hardlinkGroup = id;
  }
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** Human-readable differences, expected first (`/a: mode 0755 != 0700`); empty when equal. */
export function diffRootfs(expected: RootfsEntry[], actual: RootfsEntry[]): string[] {
  const want = new Map(expected.map((entry) => [entry.path, entry]));
  const got = new Map(actual.map((entry) => [entry.path, entry]));
  const paths = [...new Set([...want.keys(), ...got.keys()])].sort();
  const out: string[] = [];
  for (const path of paths) {
    const e = want.get(path);
    const a = got.get(path);
    if (!a) {
      out.push(`${printablePath(path)}: missing (expected ${e!.type})`);
      continue;
    }
    if (!e) {
      out.push(`${printablePath(path)}: unexpected ${a.type}`);
      continue;
    }
    const field = (name: string, x: string, y: string): void => {
      if (x !== y) out.push(`${printablePath(path)}: ${name} ${x} != ${y}`);
    };
    field('type', e.type, a.type);
    field('mode', octal(e.mode), octal(a.mode));
    field('uid', String(e.uid), String(a.uid));
    field('gid', String(e.gid), String(a.gid));
    field('size', show(e.size), show(a.size));
    field('sha256', show(e.sha256), show(a.sha256));
    field('link target', show(e.linkTarget && printablePath(e.linkTarget)), show(a.linkTarget && printablePath(a.linkTarget)));
    field('device', device(e), device(a));
    if (e.mtimeNs !== null && a.mtimeNs !== null) field('mtime', nsTime(e.mtimeNs), nsTime(a.mtimeNs));
    for (const name of [...new Set([...Object.keys(e.xattrs), ...Object.keys(a.xattrs)])].sort()) {
      field(`xattr ${name}`, show(e.xattrs[name]), show(a.xattrs[name]));
    }
    field('hardlink group', show(e.hardlinkGroup), show(a.hardlinkGroup));
  }
  return out;
}

export const RUNTIME_CONFIG_KEYS = ['Env', 'Cmd', 'Entrypoint', 'User', 'WorkingDir', 'Labels', 'ExposedPorts', 'Healthcheck', 'Volumes', 'StopSignal'] as const;

export type ImageRuntimeConfig = Record<(typeof RUNTIME_CONFIG_KEYS)[number], unknown>;

/** The runtime config as Docker reports it (`docker image inspect` .Config); absent keys are null. */
export async function imageRuntimeConfig(engine: DockerEngine, image: string): Promise<ImageRuntimeConfig> {
  const { stdout } = await engine.cli(['image', 'inspect', '--format', '{{json .Config}}', image]);
  const config = (JSON.parse(stdout) ?? {}) as Record<string, unknown>;
  return Object.fromEntries(RUNTIME_CONFIG_KEYS.map((key) => [key, config[key] ?? null])) as ImageRuntimeConfig;
}

function fileType(mode: bigint): RootfsEntryType {
  switch (Number(mode & 0o170000n)) {
    case 0o100000: return 'file';
    case 0o040000: return 'dir';
    case 0o120000: return 'symlink';
    case 0o020000: return 'char';
    case 0o060000: return 'block';
    case 0o010000: return 'fifo';
    case 0o140000: return 'socket';
    default: throw new Error(`unknown file type in mode ${mode.toString(8)}`);
  }
}

async function sha256File(path: Buffer): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/** All xattrs below root, keyed by rootfs path: one `getfattr -R` for the whole tree. */
async function readXattrs(dir: string, root: Buffer): Promise<Map<string, Record<string, string>>> {
  const result = await execa('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', dir], {
    encoding: 'buffer',
    env: { LC_ALL: 'C' },
  }).catch((err: unknown) => {
    throw new Error(`getfattr failed (it comes with the Debian package attr): ${err instanceof Error ? err.message : String(err)}`);
  });
  const out = new Map<string, Record<string, string>>();
  let current: Record<string, string> | undefined;
  for (const line of splitLines(Buffer.from(result.stdout))) {
    const text = line.toString('latin1');
    if (text.startsWith('# file: ')) {
      // getfattr escapes `\`, newline and carriage return in names as \ooo; other bytes come raw.
      const absolute = unescapeOctal(line.subarray('# file: '.length));
      const path = absolute.equals(root) ? '/' : rootfsPath(absolute.subarray(root.length));
      current = {};
      out.set(path, current);
    } else if (text !== '' && current) {
      const eq = line.lastIndexOf('=');
      const value = line.subarray(eq + 1).toString('latin1');
      current[rootfsPath(unescapeOctal(line.subarray(0, eq)))] = value === '""' ? '0x' : value.toLowerCase();
    }
  }
  return out;
}

function splitLines(buffer: Buffer): Buffer[] {
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = buffer.indexOf(10); i !== -1; i = buffer.indexOf(10, start)) {
    lines.push(buffer.subarray(start, i));
    start = i + 1;
  }
  if (start < buffer.length) lines.push(buffer.subarray(start));
  return lines;
}

function unescapeOctal(bytes: Buffer): Buffer {
  const out: number[] = [];
  for (let i = 0; i < bytes.length; i++) {
    const digits = bytes.subarray(i + 1, i + 4).toString('latin1');
    if (bytes[i] === 0x5c && /^[0-7]{3}$/.test(digits)) {
      out.push(parseInt(digits, 8) & 0xff);
      i += 3;
    } else {
      out.push(bytes[i]!);
    }
  }
  return Buffer.from(out);
}

/**
 * A path's bytes as a string, one to one: on Linux a name is bytes. A name that is valid UTF-8
 * stays as it is; in any other, every byte above 0x7f becomes the lone surrogate U+DC00 + byte,
 * which no valid UTF-8 decodes to, so two different paths never meet (as `\xNN` text they did:
 * the byte 0xff and the four characters `\xff`). Written out by `printablePath`.
 */
export function rootfsPath(bytes: Buffer): string {
  // Name by name, so a path made of names and a whole path (getfattr's) give the same string.
  const names: string[] = [];
  for (let start = 0, slash = bytes.indexOf(0x2f); start <= bytes.length; slash = bytes.indexOf(0x2f, start)) {
    const end = slash < 0 ? bytes.length : slash;
    const name = bytes.subarray(start, end);
    const text = name.toString('utf8');
    names.push(Buffer.from(text, 'utf8').equals(name) ? text : [...name].map((b) => String.fromCharCode(b < 0x80 ? b : 0xdc00 + b)).join(''));
    start = end + 1;
  }
  return names.join('/');
}

/** The path with each byte that is not UTF-8 as `\xNN` (and `\` doubled), for messages. */
export function printablePath(path: string): string {
  if (!/[\udc80-\udcff]/u.test(path)) return path;
  return path.replace(/\\/g, '\\\\').replace(/[\udc80-\udcff]/gu, (c) => `\\x${(c.charCodeAt(0) - 0xdc00).toString(16)}`);
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

function show(value: string | number | undefined): string {
  return value === undefined ? '(none)' : String(value);
}

function device(entry: RootfsEntry): string {
  return entry.devMajor === undefined ? '(none)' : `${entry.devMajor}:${entry.devMinor}`;
}

function nsTime(ns: bigint): string {
  const sign = ns < 0n ? '-' : '';
  const abs = ns < 0n ? -ns : ns;
  return `${sign}${abs / 1_000_000_000n}.${(abs % 1_000_000_000n).toString().padStart(9, '0')}`;
}
