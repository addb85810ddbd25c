import { existsSync, readdirSync } from 'node:fs';
import { BuildfleetError } from '../imagebuilder/errors.js';
import { hostPlatform, parsePlatform } from '../imagebuilder/oci/platform.js';

/**
 * What names a toolchain: tool, version and the platform it runs on. The local store keys by
 * tool, version and arch (the hosted runners' tool-cache layout has no libc level: one node has
 * one libc); the registry keys by all five, since nodes of several platforms share one repository.
 */
export type ToolchainKey = {
  tool: string;
  version: string;
  /** GOOS, as in OCI platforms: linux. */
  os: string;
  /** GOARCH, as in OCI platforms: amd64, arm64. */
  architecture: string;
  libc: Libc;
};

export type Libc = 'glibc' | 'musl' | 'none';

const TOOL = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const VERSION = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

/** GOARCH -> the arch names the tool caches of hosted runners use (Node's process.arch). */
const toolCacheArch: Record<string, string> = { amd64: 'x64', '386': 'x86', arm64: 'arm64', arm: 'arm', ppc64le: 'ppc64', s390x: 's390x', riscv64: 'riscv64' };

export function checkTool(tool: string): string {
  if (!TOOL.test(tool)) throw new BuildfleetError('usage', `invalid tool name ${JSON.stringify(tool)}: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit`);
  return tool;
}

export function checkVersion(version: string): string {
  if (!VERSION.test(version) || version.includes('..')) {
    throw new BuildfleetError('usage', `invalid version ${JSON.stringify(version)}: letters, digits, '.', '_', '+' and '-', starting with a letter or digit`);
  }
  return version;
}

/**
 * The key for TOOL VERSION on `platform` (OS/ARCH, default this machine's) with `libc` (default:
 * this machine's when the platform is this machine's OS, else glibc for linux).
 */
export function toolchainKey(tool: string, version: string, options: { platform?: string; libc?: string } = {}): ToolchainKey {
  const host = hostPlatform();
  const platform = options.platform ? parsePlatform(options.platform) : host;
  let libc: Libc;
  if (options.libc !== undefined) {
    if (options.libc !== 'glibc' && options.libc !== 'musl' && options.libc !== 'none') throw new BuildfleetError('usage', `--libc must be glibc, musl or none, not ${JSON.stringify(options.libc)}`);
    libc = options.libc;
  } else libc = platform.os !== 'linux' ? 'none' : platform.os === host.os ? detectLibc() : 'glibc';
  return { tool: checkTool(tool), version: checkVersion(version), os: platform.os, architecture: platform.architecture, libc };
}

/** The arch directory of the store: x64, arm64 (what setup scripts of hosted runners look for). */
export function archDir(key: Pick<ToolchainKey, 'architecture'>): string {
  return toolCacheArch[key.architecture] ?? key.architecture;
}

let detected: Libc | undefined;

/**
 * glibc or musl, from the dynamic loader this machine has: musl's is /lib/ld-musl-ARCH.so.1,
 * present only on musl systems (what detect-libc checks too, without starting a process).
 */
export function detectLibc(): Libc {
  if (detected) return detected;
  let musl = false;
  try {
    musl = existsSync('/lib') && readdirSync('/lib').some((name) => name.startsWith('ld-musl-'));
  } catch {
    musl = false;
  }
  detected = musl ? 'musl' : 'glibc';
  return detected;
}

/**
 * The registry tag of a key: `TOOL-VERSION-OS-ARCH-LIBC`, '+' written as '_' (tags allow
 * [A-Za-z0-9_.-]). Readable, but not trusted: the manifest's annotations name the key exactly
 * and a pull checks them, so two keys that map to one tag can never swap toolchains.
 */
export function registryTag(key: ToolchainKey): string {
  return `${key.tool}-${key.version}-${key.os}-${key.architecture}-${key.libc}`.replace(/\+/g, '_').slice(0, 128);
}

export function describeKey(key: ToolchainKey): string {
  return `${key.tool} ${key.version} (${key.os}/${key.architecture}, ${key.libc})`;
}

/** `HOST/REPO` -> host and repository. */
export function parseRegistryRepo(text: string): { host: string; repo: string } {
  const slash = text.indexOf('/');
  const host = slash > 0 ? text.slice(0, slash) : '';
  const repo = slash > 0 ? text.slice(slash + 1) : '';
  if (!host || !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(repo)) {
    throw new BuildfleetError('usage', `--registry must be HOST/REPOSITORY (e.g. registry.example.com/toolchains), not ${JSON.stringify(text)}`);
  }
  return { host, repo };
}
