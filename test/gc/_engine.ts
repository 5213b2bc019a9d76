/**
 * In-process helpers for the GC tests: a repository with small containers (so that
 * GC has many containers to retire and compact), an in-memory disk source, and a
 * restore target that only hashes.
 */
import { createHash } from 'node:crypto';
import { backup, Repository, type PointRecord, type RestoreTarget } from '../../engine/index.js';
import { restore } from '../../engine/index.js';

import { MemorySource } from '../helpers/memory-source.js';

export { MemorySource };

export async function smallRepo(dir: string, chunkSize = 64 * 1024, containerTargetBytes = 256 * 1024): Promise<void> {
  await Repository.init(dir, { chunkSize, containerTargetBytes, compression: { codec: 'lz4', level: 0 } });
}

export function shaOf(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Restores `point` and returns the SHA-256 of the image. */
export async function restoredSha(repo: Repository, point: PointRecord): Promise<string> {
  const h = createHash('sha256');
  let size = 0;
  let at = 0;
  const zeros = new Uint8Array(1 << 20);
  const target: RestoreTarget = {
    sparse: true,
    begin: async (n) => {
      size = n;
    },
    write: async (offset, data) => {
      // Sparse target: fill the hole up to `offset` with zeros.
      while (at < offset) {
        const n = Math.min(zeros.length, offset - at);
        h.update(zeros.subarray(0, n));
        at += n;
      }
      h.update(data);
      at += data.length;
    },
    commit: async () => {
      while (at < size) {
        const n = Math.min(zeros.length, size - at);
        h.update(zeros.subarray(0, n));
        at += n;
      }
    },
    abort: async () => undefined,
  };
  await restore(repo, point, target);
  return h.digest('hex');
}

export async function backupMemory(repo: Repository, vm: string, data: Uint8Array, parent: PointRecord | null, changed?: { offset: number; length: number }[]): Promise<PointRecord> {
  return backup(repo, { source: new MemorySource(data), vm, disk: 'd0', parent, ...(changed ? { changed } : {}) });
}
