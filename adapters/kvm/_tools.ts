/**
 * Running the QEMU command-line tools (`qemu-img`, `qemu-nbd`) for the KVM front-end.
 *
 * Terms:
 * - tool failure: a non-zero exit; SOURCE_READ_FAILED with `details: {tool, exitCode,
 *   stderr}` (the first 2000 characters). The stderr text is kept for people, never
 *   branched on, except to add a hint when an image is locked by a running VM.
 * - missing tool: spawning fails with ENOENT; IO_ERROR naming the package to install.
 * - `qemu-img bitmap` takes several operations for one bitmap in one run, applied in
 *   order (`--enable --merge A --merge B IMG TARGET`), so each step below is one run.
 */
import { execFile } from 'node:child_process';
import { open } from 'node:fs/promises';
import { ChunkvaultError, toChunkvaultError } from '../../engine/errors.js';

const STDERR_KEPT = 2000;
/** qemu-img on a local image answers in milliseconds; a minute means it hangs on a lock or NFS. */
const TOOL_TIMEOUT_MS = 60_000;

/** Runs `tool args...`; resolves with stdout. */
export function runTool(tool: string, args: readonly string[], timeoutMs = TOOL_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(tool, [...args], { maxBuffer: 64 * 1024 * 1024, timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (!err) {
        resolve(stdout);
        return;
      }
      const sys = err as NodeJS.ErrnoException & { killed?: boolean; code?: unknown };
      if (sys.code === 'ENOENT') {
        reject(new ChunkvaultError('IO_ERROR', `${tool} is not installed (apt-get install -y qemu-utils)`, { cause: err, details: { tool, errno: 'ENOENT' } }));
        return;
      }
      if (sys.killed) {
        reject(new ChunkvaultError('TIMEOUT', `${tool} ${args[0] ?? ''} did not finish within ${timeoutMs} ms`, { cause: err, details: { tool } }));
        return;
      }
      const text = String(stderr).trim().slice(0, STDERR_KEPT);
      const hint = /lock/i.test(text) ? ' (is a VM running on this image? back it up with a kvm+qmp: source)' : '';
      reject(
        new ChunkvaultError('SOURCE_READ_FAILED', `${tool} ${args[0] ?? ''} failed: ${text || `exit ${String(sys.code)}`}${hint}`, {
          cause: err,
          details: { tool, exitCode: typeof sys.code === 'number' ? sys.code : null, stderr: text },
        }),
      );
    });
  });
}

/** One persistent bitmap as `qemu-img info` lists it. */
export interface ImageBitmap {
  readonly name: string;
  /** Recording writes (flag `auto`). */
  readonly enabled: boolean;
  /** Left `in-use` by a process that did not close the image: its content is unknown. */
  readonly inconsistent: boolean;
  readonly granularity: number;
}

export interface ImageInfo {
  readonly virtualSize: number;
  readonly bitmaps: readonly ImageBitmap[];
}

const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"

/**
 * Checks that `path` exists and is a qcow2 image, by its magic (never by probing:
 * a raw image whose guest wrote a qcow2 header would be misread).
 */
export async function checkQcow2(path: string): Promise<void> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const sys = err as NodeJS.ErrnoException;
    if (sys.code === 'ENOENT') throw new ChunkvaultError('SOURCE_NOT_FOUND', `no image at ${path}`, { cause: err, details: { path } });
    throw toChunkvaultError(err, `cannot open ${path}`);
  }
  try {
    const head = Buffer.alloc(4);
    const { bytesRead } = await fh.read(head, 0, 4, 0);
    if (bytesRead < 4 || head.readUInt32BE(0) !== QCOW2_MAGIC) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `${path} is not a qcow2 image: kvm: sources need qcow2 (its persistent dirty bitmaps); back up raw images by path`, { details: { path } });
    }
  } finally {
    await fh.close();
  }
}

/** `qemu-img info --output=json -f qcow2` of the top layer: size and bitmaps. */
export async function imageInfo(path: string): Promise<ImageInfo> {
  const text = await runTool('qemu-img', ['info', '--output=json', '-f', 'qcow2', path]);
  let parsed: { 'virtual-size'?: unknown; 'format-specific'?: { data?: { bitmaps?: unknown } } };
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch (err) {
    throw new ChunkvaultError('PROTOCOL_ERROR', `qemu-img info printed no JSON for ${path}`, { cause: err, details: { path } });
  }
  const raw = parsed['format-specific']?.data?.bitmaps;
  const list = Array.isArray(raw) ? (raw as Array<{ name?: unknown; flags?: unknown; granularity?: unknown }>) : [];
  const bitmaps = list.map((b) => {
    const flags = Array.isArray(b.flags) ? b.flags.map(String) : [];
    return { name: String(b.name), enabled: flags.includes('auto'), inconsistent: flags.includes('in-use'), granularity: Number(b.granularity) };
  });
  return { virtualSize: Number(parsed['virtual-size']), bitmaps };
}

/** One `qemu-img bitmap` operation. */
export type BitmapOp = '--add' | '--remove' | '--enable' | '--disable' | { readonly merge: string };

/** Applies `ops` in order to bitmap `name` of the qcow2 image `path`, in one qemu-img run. */
export async function bitmapOps(path: string, name: string, ops: readonly BitmapOp[]): Promise<void> {
  const args = ops.flatMap((op) => (typeof op === 'string' ? [op] : ['--merge', op.merge]));
  await runTool('qemu-img', ['bitmap', ...args, '-f', 'qcow2', path, name]);
}
