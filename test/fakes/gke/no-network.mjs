// Preloaded into a CLI process (`node --import THIS ...`) that must open no socket and resolve no
// name: every attempt is written to stderr as `NETWORK ATTEMPT: ...` and fails. Plain JavaScript,
// so it loads before tsx and under the built dist/ alike.
import dns from 'node:dns';
import net from 'node:net';
import { writeSync } from 'node:fs';

// tsx's own IPC pipe (when the CLI runs from source) is test tooling, not the CLI: let it be.
const TSX_PIPE = /\/tsx-[^/]+\/\d+\.pipe$/;
const originalConnect = net.Socket.prototype.connect;

function refuse(what) {
  return function (...args) {
    const options = Array.isArray(args[0]) ? args[0][0] : args[0];
    if (what === 'connect' && typeof options?.path === 'string' && TSX_PIPE.test(options.path)) return originalConnect.apply(this, args);
    const target = typeof args[0] === 'object' ? JSON.stringify(args[0]) : String(args[0]);
    writeSync(2, `NETWORK ATTEMPT: ${what} ${target}\n`);
    throw new Error(`no network in this process: ${what} ${target}`);
  };
}
net.Socket.prototype.connect = refuse('connect');
dns.lookup = refuse('dns.lookup');
dns.promises.lookup = refuse('dns.promises.lookup');
