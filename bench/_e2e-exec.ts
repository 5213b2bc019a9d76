/**
 * Process plumbing for the end-to-end benchmark: run a child under GNU time and
 * return its wall, user, system seconds and peak RSS; size a directory the way `du`
 * does; hash and warm files through the page cache.
 *
 * Terms: "wall" is measured here with a monotonic clock around the child (GNU time's
 * own %e has 10 ms steps); "CPU" is the child's user + system time including its
 * threads (Node's worker pool, restic's goroutines) and any children it waited for;
 * "peak RSS" is the child's ru_maxrss.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { join } from 'node:path';

const GNU_TIME = '/usr/bin/time';
const READ_BLOCK = 8 * 1024 * 1024;

export interface Timing {
  readonly wallSec: number;
  readonly userSec: number;
  readonly sysSec: number;
  readonly maxRssKiB: number;
}

export interface TimedResult extends Timing {
  readonly stdout: string;
}

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
  /** Extra program prefix, e.g. ['taskset', '-c', '0'] (timed as part of the child). */
  readonly prefix?: readonly string[];
}

/** Thrown when a benchmarked command fails: the benchmark stops rather than report a bogus figure. */
export class CommandFailed extends Error {
  constructor(
    readonly command: string,
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(`${command} exited with ${status ?? 'a signal'}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`);
    this.name = 'CommandFailed';
  }
}

/** GNU time's `-f '%U %S %M'` line; the last line, because a failing child adds one before it. */
function parseTimeFile(file: string): Omit<Timing, 'wallSec'> {
  const lines = readFileSync(file, 'utf8').trim().split('\n');
  const [u, s, m] = (lines[lines.length - 1] ?? '').trim().split(/\s+/).map(Number);
  return { userSec: u ?? NaN, sysSec: s ?? NaN, maxRssKiB: m ?? NaN };
}

/**
 * Runs `cmd args` under GNU time (stdin closed, stdout and stderr captured) and
 * throws CommandFailed on a non-zero exit. `timeFile` is scratch space.
 */
export function timed(cmd: string, args: readonly string[], timeFile: string, opts: RunOptions = {}): TimedResult {
  const argv = ['-f', '%U %S %M', '-o', timeFile, ...(opts.prefix ?? []), cmd, ...args];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(GNU_TIME, argv, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
    maxBuffer: 64 * 1024 * 1024,
    encoding: 'utf8',
  });
  const wallSec = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.error) throw r.error;
  if (r.status !== 0) throw new CommandFailed([cmd, ...args].join(' '), r.status, r.stderr);
  const t = parseTimeFile(timeFile);
  rmSync(timeFile, { force: true });
  return { wallSec, ...t, stdout: r.stdout };
}

/** Runs a helper command untimed; throws CommandFailed on failure and returns stdout. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): string {
  const r = spawnSync(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new CommandFailed([cmd, ...args].join(' '), r.status, r.stderr);
  return r.stdout;
}

/** The first line `cmd versionArg` prints (stdout, else stderr) when it exits 0; undefined when it cannot run. */
export function available(cmd: string, versionArg = '--version'): string | undefined {
  const r = spawnSync(cmd, [versionArg], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  return (r.stdout.trim() || r.stderr.trim()).split('\n')[0];
}

export interface DirSize {
  /** Sum of file sizes (du -sb). */
  readonly apparent: number;
  /** Allocated blocks x 512 (du -s --block-size=1): holes and preallocation show here. */
  readonly allocated: number;
}

/** Sizes a directory tree without following symlinks; 0 when it does not exist. */
export function dirSize(dir: string): DirSize {
  let apparent = 0;
  let allocated = 0;
  const walk = (p: string): void => {
    const st = lstatSync(p);
    apparent += st.isDirectory() ? 0 : st.size;
    allocated += st.blocks * 512;
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(join(p, e));
  };
  if (existsSync(dir)) walk(dir);
  return { apparent, allocated };
}

/** Reads `path` start to end in 8 MiB blocks, passing each block to `visit` (one reused buffer). */
function readAll(path: string, visit: (block: Buffer) => void): number {
  const buf = Buffer.allocUnsafe(READ_BLOCK);
  const fd = openSync(path, 'r');
  let total = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, READ_BLOCK, total);
      if (n === 0) break;
      visit(buf.subarray(0, n));
      total += n;
    }
  } finally {
    closeSync(fd);
  }
  return total;
}

/** SHA-256 of a file, hex, and its length. */
export function sha256File(path: string): { sha256: string; bytes: number } {
  const h = createHash('sha256');
  const bytes = readAll(path, (b) => h.update(b));
  return { sha256: h.digest('hex'), bytes };
}

/** Reads a file once so that every tool then reads it from the page cache. */
export function warm(path: string): void {
  readAll(path, () => undefined);
}

/** Flushes dirty pages machine-wide (no root needed), so one step's writeback does not bill the next. */
export function syncAll(): void {
  run('sync', []);
}
