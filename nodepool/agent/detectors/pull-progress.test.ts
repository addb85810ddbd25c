import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PullProgressTracker } from './pull-progress.js';

test('downloaded when the last layer the runtime named has downloaded, not before', () => {
  let now = 0;
  const tracker = new PullProgressTracker(() => now);
  // What Docker 20.10 sends for a 3-layer image of which one layer is already there.
  tracker.note({ status: 'Pulling from ci/build', layer: 'v1' });
  for (const layer of ['a', 'b', 'c']) tracker.note({ status: layer === 'c' ? 'Already exists' : 'Pulling fs layer', layer });
  now = 100;
  tracker.note({ status: 'Downloading', layer: 'a', current: 10, total: 1000 });
  tracker.note({ status: 'Downloading', layer: 'b', current: 10, total: 500 });
  now = 900;
  tracker.note({ status: 'Download complete', layer: 'a' });
  now = 1000;
  tracker.note({ status: 'Extracting', layer: 'a', current: 10, total: 1000 });
  assert.equal(tracker.downloadedAt, undefined, 'b is still downloading');
  now = 1500;
  tracker.note({ status: 'Verifying Checksum', layer: 'b' });
  tracker.note({ status: 'Download complete', layer: 'b' });
  now = 3000;
  tracker.note({ status: 'Pull complete', layer: 'b' });
  tracker.note({ status: 'Digest: sha256:abc' });
  tracker.note({ status: 'Status: Downloaded newer image for ci/build@sha256:abc' });
  assert.equal(tracker.downloadedAt, 1500);
  assert.equal(tracker.downloadedBytes, 1500);
});

test('no layer named: no download time', () => {
  const tracker = new PullProgressTracker(() => 5);
  tracker.note({ status: 'Status: Image is up to date for ci/build@sha256:abc' });
  assert.equal(tracker.downloadedAt, undefined);
});
