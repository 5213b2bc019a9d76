#!/usr/bin/env node
/**
 * The `chunkvault` command's entry point. Commands that hash or compress start the
 * worker pool first, so the workers load their codecs while this thread loads the
 * program (about 0.1 s of module loading either way; measured in bench/RESULTS.md
 * "Start-up"); then it runs the program (program.ts).
 */
import { toChunkvaultError } from '../../engine/errors.js';
import { prewarmWorkerPool } from '../../engine/worker-pool.js';

const POOL_COMMANDS = new Set(['backup', 'restore', 'demo']);
const argv = process.argv.slice(2);
if (POOL_COMMANDS.has(argv[0] ?? '') && !argv.includes('--help') && !argv.includes('-h')) prewarmWorkerPool();
try {
  await import('./program.js');
} catch (err) {
  // The program reports its own errors; only a failure to load it lands here (a
  // native addon that was never built, a damaged install). Same report as the program's.
  const e = toChunkvaultError(err, 'chunkvault could not start');
  if (argv.includes('--json')) process.stdout.write(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
  process.stderr.write(`chunkvault: ${e.code}: ${e.message}\n`);
  process.exitCode = e.exitCode;
}
