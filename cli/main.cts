#!/usr/bin/env node
// CommonJS on purpose: libuv sizes its thread pool once, on the first job, and an ES module entry
// is itself read through that pool before a line of it runs (UV_THREADPOOL_SIZE set there is
// never seen). Here nothing has used the pool yet.
import { availableParallelism } from 'node:os';

// A squash keeps the pool busy with CPU work (inflate, SHA-256, gzip blocks): threads beyond the
// cores only preempt the main thread that feeds them (the squash bench measured one per core
// against 3, 4 and 6; imagebuilder/squash/README.md). Every other command keeps libuv's default (4): the agent's disk and runtime probes may
// block a thread on a hung disk, and copies hash more than they compute.
const words = process.argv.slice(2);
const image = words.indexOf('image');
if (image >= 0 && words[image + 1] === 'squash') process.env.UV_THREADPOOL_SIZE ??= String(availableParallelism());

void import('./program.js').then(async ({ main }) => {
  process.exitCode = await main(process.argv);
});
