import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchSquash, FLOOR_LABEL } from './squash.js';

test('the squash bench on a tiny image: ours at each K, docker, and the libdeflate floor every ratio is against', { timeout: 600_000 }, async () => {
  const result = await benchSquash({ layers: 8, totalBytes: 8e6, files: 2400 }, () => {}, { outputs: [1, 2], runs: 1 });
  // The context's RUN steps (deletions, copy-ups) need 8 layers of 300 files.
  assert.equal(result.image.inputLayers, 13, 'busybox base + 8 ADDs + 4 RUNs');
  const names = result.rows.map((row) => row.what);
  assert.ok(names[0]!.startsWith('buildfleet image squash --layers 1'), names.join('\n'));
  assert.ok(names[1]!.startsWith('buildfleet image squash --layers 2'), names.join('\n'));
  assert.ok(names.some((name) => name.startsWith('docker build --squash')), names.join('\n'));
  const floors = result.rows.filter((row) => row.what.startsWith('floor'));
  assert.equal(floors.length, 1, 'one floor row');
  assert.ok(floors[0]!.what.startsWith(FLOOR_LABEL) && FLOOR_LABEL.includes('libdeflate-gunzip') && FLOOR_LABEL.includes('libdeflate-gzip -6'), floors[0]!.what);
  for (const row of result.rows) assert.ok(row.wallS > 0 && Number.isFinite(row.wallS), `${row.what}: ${row.wallS}`);
  for (const row of result.rows.filter((r) => r.what.startsWith('buildfleet'))) assert.ok((row.peakRssMb ?? 0) > 0, `${row.what}: peak RSS measured`);
  // The floor row's own ratio is 1, so the ratio column is against it.
  const floorLine = result.table.split('\n').find((line) => line.includes(FLOOR_LABEL))!;
  assert.equal(floorLine.split('|').map((cell) => cell.trim())[5], '1.00', floorLine);
});
