#!/usr/bin/env node
import { availableParallelism } from 'node:os';

// Compression, decompression and hashing jobs share libuv's thread pool with file I/O; with the
// default 4 threads a hash update waits behind whole compression blocks. The pool starts on its
// first job, so this must come before any import that could queue one.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, availableParallelism() * 2 + 2));
const { main } = await import('./program.js');

process.exitCode = await main(process.argv);
