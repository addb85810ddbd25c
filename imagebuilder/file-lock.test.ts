import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { tempDir } from '../bench/harness.js';
import { acquireLock, breakIfStale, lockHolder, tryLock } from './file-lock.js';

let dir: { path: string; remove(): Promise<void> };
before(async () => {
  dir = await tempDir('buildfleet-lock-');
});
after(async () => {
  await dir.remove();
});

test('one holder at a time; a waiter gets the lock when it is released', async () => {
  const lock = join(dir.path, 'one.lock');
  assert.equal(await tryLock(lock, 'first'), true);
  assert.equal(await tryLock(lock, 'second'), false);
  assert.deepEqual(await lockHolder(lock), { pid: process.pid, host: hostname(), note: 'first' });
  assert.equal(await breakIfStale(lock), false, 'a live holder keeps it');
  let acquired = false;
  const waiting = acquireLock(lock, { pollMs: 10 }).then((release) => ((acquired = true), release));
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(acquired, false);
  const { rm } = await import('node:fs/promises');
  await rm(lock);
  const release = await waiting;
  await release();
  assert.equal(existsSync(lock), false);
});

test('the lock of a process that is gone is broken, and the breaker is told its note', async () => {
  const lock = join(dir.path, 'dead.lock');
  const dead = spawnSync('sh', ['-c', 'echo $$']).stdout.toString().trim();
  await writeFile(lock, `${dead} ${hostname()} /some/partial\n`);
  const notes: string[] = [];
  const release = await acquireLock(lock, { pollMs: 10, onBroken: async (note) => void notes.push(note) });
  assert.deepEqual(notes, ['/some/partial']);
  assert.equal((await lockHolder(lock))?.pid, process.pid);
  await release();
});
