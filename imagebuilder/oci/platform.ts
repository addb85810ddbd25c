import { BuildfleetError } from '../errors.js';
import type { Descriptor, Index, Platform } from './schemas.js';

const goArch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** This machine's platform in OCI terms (GOOS/GOARCH). */
export function hostPlatform(): Platform {
  const architecture = goArch[process.arch] ?? process.arch;
  return { os: process.platform === 'win32' ? 'windows' : process.platform, architecture, ...(architecture === 'arm64' && { variant: 'v8' }) };
}

export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, ...rest] = text.split('/');
  if (!os || !architecture || rest.length > 0) {
    throw new BuildfleetError('usage', `invalid platform "${text}": expected OS/ARCH[/VARIANT], e.g. linux/amd64`);
  }
  return { os, architecture, ...(variant && { variant }) };
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

/** arm64 images often omit the v8 variant; treat a missing variant as matching. */
function matches(candidate: Platform | undefined, wanted: Platform): boolean {
  if (!candidate) return false;
  if (candidate.os !== wanted.os || candidate.architecture !== wanted.architecture) return false;
  return !wanted.variant || !candidate.variant || candidate.variant === wanted.variant;
}

/** Picks the index entry for a platform, or says which platforms the index does have. */
export function selectPlatform(index: Index, wanted: Platform = hostPlatform(), what = 'image index'): Descriptor {
  const found = index.manifests.find((entry) => matches(entry.platform, wanted));
  if (found) return found;
  const available = index.manifests.map((entry) => (entry.platform ? formatPlatform(entry.platform) : 'unknown')).join(', ');
  throw new BuildfleetError('not-found', `${what} has no manifest for ${formatPlatform(wanted)} (it has: ${available || 'none'})`);
}

/**
 * A single-platform image (no index to choose from) asked for another platform: an error naming
 * what it has, as for an index without the entry ('not-found', exit 3: the same answer, so a CI
 * job handles both with one code), not the image of the wrong architecture without a word.
 */
export function checkImagePlatform(config: Platform, wanted: Platform, what: string): void {
  if (matches(config, wanted)) return;
  const has = formatPlatform({ os: config.os, architecture: config.architecture, ...(config.variant && { variant: config.variant }) });
  throw new BuildfleetError('not-found', `${what} is a single-platform image for ${has}, not ${formatPlatform(wanted)} (it has no image index to choose from)`);
}
