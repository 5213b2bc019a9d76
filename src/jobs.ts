/**
 * Job orchestration: adapter -> engine. Every bad input is rejected before anything
 * is written (extents are parsed and the parent found before the index is opened),
 * and the source is always closed.
 */
import { promises as fsp } from 'node:fs';
import {
  backup,
  ChunkvaultError,
  parseExtentsJson,
  Repository,
  restore,
  type BackupProgress,
  type Extent,
  type PointRecord,
} from '../engine/index.js';
import { FileSource } from '../adapters/index.js';
import { FileTarget, StreamTarget } from './restore-targets.js';

export interface BackupJobOptions {
  readonly repo: Repository;
  readonly source: string;
  readonly vm: string;
  readonly disk?: string;
  readonly changedExtentsFile?: string;
  readonly full?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: BackupProgress) => void;
}

async function readExtentsFile(path: string, diskSize: number): Promise<Extent[]> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    throw new ChunkvaultError('EXTENTS_INVALID', `cannot read the extent list ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseExtentsJson(text, diskSize);
}

/** Backs up a raw image or block device; resolves with the committed point. */
export async function runFileBackup(o: BackupJobOptions): Promise<PointRecord> {
  const source = await FileSource.open(o.source);
  try {
    const disk = o.disk ?? source.name;
    const useExtents = o.changedExtentsFile !== undefined && !o.full;
    const changed = useExtents ? await readExtentsFile(o.changedExtentsFile!, source.sizeBytes) : undefined;
    const parent = (await o.repo.catalog.latest(o.vm, disk)) ?? null;
    if (changed && !parent) {
      throw new ChunkvaultError('NO_PARENT', `--changed-extents needs an earlier point of vm ${o.vm} disk ${disk}; run a full backup first`, {
        details: { vm: o.vm, disk },
      });
    }
    return await backup(o.repo, {
      source,
      vm: o.vm,
      disk,
      parent,
      ...(changed ? { changed } : {}),
      ...(o.signal ? { signal: o.signal } : {}),
      ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    });
  } finally {
    await source.close();
  }
}

export interface RestoreJobOptions {
  readonly repo: Repository;
  readonly point: PointRecord;
  readonly output: string;
  readonly signal?: AbortSignal;
  readonly verifyDigest?: boolean;
  readonly onProgress?: (p: { done: number; total: number }) => void;
}

/** Restores a point to a file, block device or `-` (stdout). */
export async function runRestore(o: RestoreJobOptions): Promise<void> {
  const target = o.output === '-' ? StreamTarget.stdout() : await FileTarget.create(o.output);
  await restore(o.repo, o.point, target, {
    ...(o.signal ? { signal: o.signal } : {}),
    ...(o.onProgress ? { onProgress: o.onProgress } : {}),
    verifyDigest: o.verifyDigest ?? false,
  });
}
