/**
 * One read-only `qemu-nbd` export of a qcow2 image on a unix socket, owned by us.
 *
 * Terms:
 * - ready: qemu-nbd writes its pid file once the socket listens, so we poll for the
 *   file (no sleeps guessing a start-up time); an exit before that is a failure with
 *   its stderr.
 * - stop: SIGTERM to the child's PID, SIGKILL after a grace period, and wait for its
 *   exit: the image's lock is released only then, and the next qemu-img step needs it.
 * - lock: `-r` opens the image read-only and qemu's image locking refuses writers
 *   (a VM, qemu-img, qemu-io) until we stop, so the exported data cannot change.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { ChunkvaultError } from '../../engine/errors.js';

export interface QemuNbdOptions {
  readonly image: string;
  readonly socketPath: string;
  readonly pidFile: string;
  readonly exportName: string;
  /** Bitmaps to export as `qemu:dirty-bitmap:NAME`. */
  readonly bitmaps: readonly string[];
  /** Clients served at once (`-e`). */
  readonly shared: number;
  readonly readyTimeoutMs?: number;
}

export interface QemuNbdProcess {
  readonly pid: number;
  readonly uri: string;
  /** Stops the server and waits for its exit. Idempotent; never rejects. */
  stop(): Promise<void>;
}

const STOP_GRACE_MS = 5000;
const POLL_MS = 20;

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await gone;
  clearTimeout(timer);
}

async function pidWritten(path: string): Promise<boolean> {
  try {
    return /^\d+\s*$/.test(await readFile(path, 'utf8'));
  } catch {
    return false;
  }
}

/** Starts `qemu-nbd -r -t` for `o.image`; resolves once it accepts connections. */
export async function startQemuNbd(o: QemuNbdOptions): Promise<QemuNbdProcess> {
  const args = ['-r', '-t', '-e', String(o.shared), '-f', 'qcow2', '-x', o.exportName, '-k', o.socketPath, `--pid-file=${o.pidFile}`];
  for (const b of o.bitmaps) args.push('-B', b);
  args.push(o.image);
  const child = spawn('qemu-nbd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (b: Buffer) => {
    if (stderr.length < 4000) stderr += b.toString();
  });
  const spawnError = new Promise<NodeJS.ErrnoException>((resolve) => child.once('error', resolve));
  const deadline = Date.now() + (o.readyTimeoutMs ?? 30_000);
  for (;;) {
    const failed = await Promise.race([spawnError, delay(POLL_MS).then(() => null)]);
    if (failed) {
      const missing = failed.code === 'ENOENT';
      throw new ChunkvaultError('IO_ERROR', missing ? 'qemu-nbd is not installed (apt-get install -y qemu-utils)' : `cannot start qemu-nbd: ${failed.message}`, { cause: failed, details: { tool: 'qemu-nbd', errno: failed.code ?? null } });
    }
    if (exited(child)) {
      throw new ChunkvaultError('SOURCE_READ_FAILED', `qemu-nbd exited before serving ${o.image}: ${stderr.trim() || `code ${String(child.exitCode)}`}`, { details: { tool: 'qemu-nbd', stderr: stderr.trim().slice(0, 2000), image: o.image } });
    }
    if (await pidWritten(o.pidFile)) break;
    if (Date.now() > deadline) {
      await stopChild(child);
      throw new ChunkvaultError('TIMEOUT', `qemu-nbd did not start serving ${o.image} in time`, { details: { tool: 'qemu-nbd', image: o.image } });
    }
  }
  let stopping: Promise<void> | null = null;
  return {
    pid: child.pid as number,
    uri: `nbd+unix:///${encodeURIComponent(o.exportName)}?socket=${encodeURIComponent(o.socketPath)}`,
    stop: () => (stopping ??= stopChild(child)),
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
