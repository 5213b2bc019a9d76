/**
 * A layer is one image file of a disk chain (a VHDX, a VHD, or a raw base), read as
 * the whole virtual disk: a differencing layer answers the sectors it does not hold
 * by reading its parent layer, which it owns and closes.
 *
 * Read plans: a reader maps a virtual byte range to segments (bytes at a file
 * position, zeros, or the parent's bytes at the same virtual offset), merges
 * neighbours, then executes them: one pread per run of contiguous file data.
 */
import { access } from 'node:fs/promises';
import { dirname, isAbsolute, join, posix, resolve, win32 } from 'node:path';
import { ChunkvaultError, type BlockSource } from '../../engine/index.js';
import { formatError, type ImageFile, type ImageFormat } from './_image-file.js';

/** One layer of a chain, as seen by its child and by `DiskChain`. */
export interface DiskLayer extends BlockSource {
  readonly path: string;
  readonly format: ImageFormat;
  /** `fixed`, `dynamic`, `differencing` or `raw`. */
  readonly variant: string;
  readonly parent: DiskLayer | null;
  /**
   * Identity a child's parent link must match: the VHDX DataWriteGuid or the VHD
   * footer UniqueId, as `{xxxxxxxx-...}` lower-case; null for raw files.
   */
  readonly identity: string | null;
  readonly logicalSectorSize: number;
}

/** Options for opening a chain. */
export interface ChainOptions {
  /** Most layers in one chain, the top included (default 64). */
  readonly maxDepth?: number;
  /**
   * Maps a parent path recorded on Windows (`C:\VMs\base.vhdx`, `\\?\Volume{..}\x.vhdx`)
   * to a local path, e.g. the SMB mount it is reachable under. Return null to fall back
   * to the default (the file name, looked up in the child's directory).
   */
  readonly mapWindowsPath?: (windowsPath: string, childPath: string) => string | null;
}

/** What a reader needs to open its parent: a chain-aware opener. */
export interface ChainContext {
  readonly options: ChainOptions;
  /** Real paths of the layers above, top first (cycle detection). */
  readonly chain: readonly string[];
  openParent(path: string, child: string): Promise<DiskLayer>;
}

export type Segment =
  | { kind: 'file'; pos: number; length: number }
  | { kind: 'zero'; length: number }
  | { kind: 'parent'; length: number };

/** Appends `seg`, merging it into the previous segment when they are contiguous. */
export function pushSegment(plan: Segment[], seg: Segment): void {
  const last = plan[plan.length - 1];
  if (last !== undefined && last.kind === seg.kind) {
    if (seg.kind !== 'file') {
      last.length += seg.length;
      return;
    }
    if (last.kind === 'file' && last.pos + last.length === seg.pos) {
      last.length += seg.length;
      return;
    }
  }
  plan.push({ ...seg });
}

/** Executes `plan` into `target`, which holds the virtual bytes from `offset`. */
export async function runPlan(
  plan: readonly Segment[],
  target: Uint8Array,
  offset: number,
  file: ImageFile,
  parent: DiskLayer | null,
): Promise<void> {
  let at = 0;
  for (const seg of plan) {
    const slice = target.subarray(at, at + seg.length);
    if (seg.kind === 'file') await file.readExact(slice, seg.pos, 'payload data');
    else if (seg.kind === 'zero' || parent === null) slice.fill(0);
    else await parent.readInto(slice, offset + at);
    at += seg.length;
  }
}

/** Rejects reads outside `[0, size)` the way a file source does. */
export function checkRange(layer: { sizeBytes: number; path: string }, target: Uint8Array, offset: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + target.length > layer.sizeBytes) {
    throw new ChunkvaultError('SOURCE_TRUNCATED', `read of ${target.length} bytes at ${offset} is beyond the end of ${layer.path} (${layer.sizeBytes} bytes)`, {
      details: { path: layer.path, offset, reason: 'read-beyond-end' },
    });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

function isWindowsAbsolute(p: string): boolean {
  return /^[A-Za-z]:[\\/]/.test(p) || p.startsWith('\\\\');
}

/**
 * Local candidates for one recorded parent path, in the order tried:
 * - relative paths (`.\base.vhdx`, `..\dir\base.vhdx`, `base.vhdx`): against the child's
 *   directory, backslashes read as separators;
 * - absolute Windows paths and volume paths: `mapWindowsPath` if given, then the path
 *   itself (on Windows), then its file name in the child's directory (the usual case:
 *   a chain copied or exported into one directory, or seen through one SMB share);
 * - absolute POSIX paths (MacX locators, VHDs made on Linux): as they are, then the
 *   file name in the child's directory.
 */
export function parentCandidates(recorded: string, kind: 'relative' | 'absolute', child: string, options: ChainOptions): string[] {
  const dir = dirname(child);
  if (kind === 'relative' && !isWindowsAbsolute(recorded) && !isAbsolute(recorded)) {
    return [resolve(dir, recorded.split('\\').join(posix.sep))];
  }
  const out: string[] = [];
  if (isWindowsAbsolute(recorded) || recorded.includes('\\')) {
    const mapped = options.mapWindowsPath?.(recorded, child) ?? null;
    if (mapped !== null) out.push(resolve(dir, mapped));
    if (process.platform === 'win32') out.push(recorded);
    out.push(join(dir, win32.basename(recorded)));
  } else {
    out.push(isAbsolute(recorded) ? recorded : resolve(dir, recorded));
    out.push(join(dir, posix.basename(recorded)));
  }
  return out;
}

/**
 * The first candidate that exists, or SOURCE_NOT_FOUND (`details.reason`
 * `parent-missing`, with every path tried).
 */
export async function findParent(format: ImageFormat, child: string, candidates: readonly string[]): Promise<string> {
  for (const c of candidates) if (await exists(c)) return c;
  throw new ChunkvaultError('SOURCE_NOT_FOUND', `${format} image ${child}: parent not found (tried ${candidates.join(', ') || 'no locator'})`, {
    details: { format, path: child, reason: 'parent-missing', candidates: [...candidates] },
  });
}

/** Checks what every parent must satisfy: same format, same size, same sector size, right identity. */
export function checkParent(child: DiskLayer, parent: DiskLayer, expectedIds: readonly string[]): void {
  const fail = (reason: string, message: string): never => {
    throw formatError(child.format, child.path, reason, message, { parent: parent.path });
  };
  if (parent.format !== child.format) fail('parent-format-mismatch', `parent ${parent.path} is ${parent.format}, not ${child.format}`);
  if (parent.sizeBytes !== child.sizeBytes) fail('parent-size-mismatch', `parent ${parent.path} has ${parent.sizeBytes} bytes, the child ${child.sizeBytes}`);
  if (parent.logicalSectorSize !== child.logicalSectorSize) fail('parent-sector-size-mismatch', `parent ${parent.path} has ${parent.logicalSectorSize}-byte sectors`);
  if (parent.identity === null || !expectedIds.includes(parent.identity)) {
    fail('parent-identity-mismatch', `parent ${parent.path} has identity ${parent.identity}, expected ${expectedIds.join(' or ')}`);
  }
}

/** A byte range of an image file that one structure or block occupies. */
export interface FileRange {
  readonly start: number;
  readonly end: number;
  readonly what: string;
}

/**
 * Refuses files whose structures and blocks overlap (a corrupt BAT pointing a block
 * at the BAT itself, or two blocks at one offset): reading them would return bytes
 * that belong to something else. Reason `bat-entry-invalid`.
 */
export function checkNoOverlap(format: ImageFormat, path: string, ranges: FileRange[]): void {
  ranges.sort((a, b) => a.start - b.start);
  for (let i = 1; i < ranges.length; i++) {
    const prev = ranges[i - 1] as FileRange;
    const cur = ranges[i] as FileRange;
    if (cur.start < prev.end) {
      throw formatError(format, path, 'bat-entry-invalid', `${cur.what} at ${cur.start} overlaps ${prev.what} (${prev.start}..${prev.end})`, { offset: cur.start });
    }
  }
}
