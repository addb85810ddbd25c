import { createHash } from 'node:crypto';
import tar from 'tar-stream';

/**
 * Tests only: a tiny image (one real tar layer holding one file) pushed to a registry over the
 * distribution API, so a runtime can pull and unpack it. Returns its digest reference.
 */
export async function pushTinyImage(registryUrl: string, repository: string, tag: string): Promise<{ reference: string; digest: string }> {
  const pack = tar.pack();
  pack.entry({ name: 'hello.txt', mode: 0o644 }, `hello from ${repository}:${tag}\n`);
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  const layer = Buffer.concat(chunks);
  const sha = (data: Buffer) => `sha256:${createHash('sha256').update(data).digest('hex')}`;
  const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [sha(layer)] }, config: { Cmd: ['/hello.txt'] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha(layer), size: layer.length }],
    }),
  );
  for (const blob of [layer, config]) {
    const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: 'POST' });
    if (start.status !== 202) throw new Error(`start upload: HTTP ${start.status}`);
    const location = new URL(start.headers.get('location')!, registryUrl);
    location.searchParams.set('digest', sha(blob));
    const put = await fetch(location, { method: 'PUT', body: blob, headers: { 'content-type': 'application/octet-stream' } });
    if (put.status !== 201) throw new Error(`upload ${sha(blob)}: HTTP ${put.status}`);
  }
  const put = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, { method: 'PUT', body: manifest, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' } });
  if (put.status !== 201) throw new Error(`put manifest: HTTP ${put.status}: ${await put.text()}`);
  const host = new URL(registryUrl).host;
  return { reference: `${host}/${repository}@${sha(manifest)}`, digest: sha(manifest) };
}
