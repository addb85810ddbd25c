import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { jobsInFlight } from './jobs.js';

test('a job counts on its node while its client is alive, whatever its container does; a dead client frees the node', async () => {
  const nodeDir = await mkdtemp(join(tmpdir(), 'buildfleet-in-flight-'));
  try {
    assert.equal(await jobsInFlight(nodeDir), 0, 'no jobs dir: no jobs');
    await mkdir(join(nodeDir, 'jobs-in-flight'));
    await writeFile(join(nodeDir, 'jobs-in-flight', 'job-a'), String(process.pid));
    const dead = spawnSync('true').pid!;
    await writeFile(join(nodeDir, 'jobs-in-flight', 'job-b'), String(dead));
    await writeFile(join(nodeDir, 'jobs-in-flight', 'job-c.tmp'), '');
    assert.equal(await jobsInFlight(nodeDir), 1);
  } finally {
    await rm(nodeDir, { recursive: true, force: true });
  }
});
