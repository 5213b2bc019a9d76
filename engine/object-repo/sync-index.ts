/**
 * Keeps the local index (a cache) in step with the containers in the bucket.
 *
 * The index records, in its `remote-containers` table, which containers' footers it
 * holds. On open: containers in the bucket it does not know (written by other agents,
 * or sealed here by a process that crashed before its index write) are indexed from
 * their footers (ranged GETs of header, trailer and footer); if a known container is
 * gone (another agent's GC deleted it), the index is stale and is rebuilt from the
 * footers, unless a session on this machine still uses it (then at the next open).
 */
import { ContainerReader } from '../container.js';
import { locationOf, type ChunkLocation } from '../chunk-index.js';
import { isChunkvaultError } from '../errors.js';
import { rebuildIndex } from '../rebuild-index.js';
import type { Repository } from '../repository.js';
import { toHex } from '../_bytes.js';
import { KNOWN_TABLE, listContainers, markKnown, type Binding } from './binding.js';

export interface SyncReport {
  readonly indexed: number;
  readonly rebuilt: boolean;
}

export async function syncContainers(repo: Repository, b: Binding): Promise<SyncReport> {
  const index = await repo.index();
  b.onUploaded = (id) => markKnown(index, id);
  b.onDeleted = (id) => index.transact(() => void index.aux(KNOWN_TABLE).remove(Buffer.from(id, 'hex')));
  const listed = await listContainers(b.store);
  const known = new Set<string>();
  for (const key of index.aux(KNOWN_TABLE).getKeys()) known.add(toHex(key as Uint8Array));
  let rebuilt = false;
  if ([...known].some((id) => !listed.has(id))) {
    try {
      await rebuildIndex(repo);
      return { indexed: listed.size, rebuilt: true };
    } catch (err) {
      if (!isChunkvaultError(err, 'REPO_BUSY') && !isChunkvaultError(err, 'GC_RUNNING')) throw err;
      rebuilt = false;
    }
  }
  const fresh = [...listed.keys()].filter((id) => !known.has(id)).sort();
  if (fresh.length === 0) return { indexed: 0, rebuilt };
  const lock = await repo.gcLock();
  try {
    for (const id of fresh) {
      const reader = await ContainerReader.open(repo.dir, id);
      try {
        const entries = await reader.readFooter();
        const batch: [Uint8Array, ChunkLocation][] = entries.map((e) => [e.digest, locationOf(id, e)]);
        await index.putMany(batch);
      } finally {
        await reader.close();
      }
      await markKnown(index, id);
    }
  } finally {
    await lock.end();
  }
  return { indexed: fresh.length, rebuilt };
}
