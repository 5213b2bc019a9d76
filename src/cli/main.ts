#!/usr/bin/env node
/**
 * The `chunkvault` command's entry point. Commands that hash or compress start the
 * worker pool first, so the workers load their codecs while this thread loads the
 * program (about 0.1 s of module loading either way; measured in bench/RESULTS.md
 * "Start-up"); then it runs the program (program.ts).
 */
import { prewarmWorkerPool } from '../../engine/worker-pool.js';

const POOL_COMMANDS = new Set(['backup', 'restore', 'demo']);
const argv = process.argv.slice(2);
if (POOL_COMMANDS.has(argv[0] ?? '') && !argv.includes('--help') && !argv.includes('-h')) prewarmWorkerPool();
await import('./program.js');
