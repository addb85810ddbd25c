import { readFile } from 'node:fs/promises';
import tar from 'tar-stream';
import type Docker from 'dockerode';
import { BuildfleetError } from '../imagebuilder/errors.js';

/** Applets the base image links to busybox, enough for shell scripts in builds and tests. */
const applets = ['sh', 'ls', 'cat', 'echo', 'sleep', 'true', 'false', 'mkdir', 'rm', 'cp', 'mv', 'ln', 'chmod', 'chown', 'touch', 'dd', 'find', 'sha256sum', 'stat', 'test', 'env', 'id', 'mknod', 'mkfifo', 'tar', 'sync', 'head', 'wc', 'seq', 'printf', 'grep', 'sed', 'xargs', 'date', 'setcap'];

/** The base image's rootfs as a tar stream: a static busybox and its applets, /etc/passwd and /etc/group. */
export async function busyboxRootfs(): Promise<tar.Pack> {
  let busybox: Buffer;
  try {
    busybox = await readFile('/bin/busybox');
  } catch {
    throw new BuildfleetError('environment', '/bin/busybox not found: install it with "apt-get install -y busybox-static"');
  }
  const pack = tar.pack();
  const mtime = new Date(0);
  for (const dir of ['bin', 'etc', 'tmp', 'root', 'work', 'proc', 'sys', 'dev']) {
    pack.entry({ name: dir, type: 'directory', mode: dir === 'tmp' ? 0o1777 : 0o755, mtime });
  }
  pack.entry({ name: 'bin/busybox', mode: 0o755, mtime }, busybox);
  for (const applet of applets) pack.entry({ name: `bin/${applet}`, type: 'symlink', linkname: 'busybox', mtime });
  pack.entry({ name: 'etc/passwd', mode: 0o644, mtime }, 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n');
  pack.entry({ name: 'etc/group', mode: 0o644, mtime }, 'root:x:0:\nnogroup:x:65534:\n');
  pack.finalize();
  return pack;
}

/**
 * Nothing can be pulled from outside here, so the base image is made locally: a rootfs with a
 * static busybox (Debian's busybox-static), imported into the engine with `docker import`.
 */
export async function importBusyboxBase(docker: Docker, reference = 'buildfleet/busybox:latest'): Promise<string> {
  const pack = await busyboxRootfs();
  const [repo, tag] = splitTag(reference);
  const stream = await docker.importImage(pack as unknown as NodeJS.ReadableStream, { repo, tag });
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, output: Array<{ error?: string }>) => {
      const failed = output?.find((event) => event.error);
      if (err || failed) reject(new BuildfleetError('environment', `docker import failed: ${err?.message ?? failed?.error}`));
      else resolve();
    });
  });
  return reference;
}

function splitTag(reference: string): [string, string] {
  const colon = reference.lastIndexOf(':');
  return colon > reference.lastIndexOf('/') ? [reference.slice(0, colon), reference.slice(colon + 1)] : [reference, 'latest'];
}
