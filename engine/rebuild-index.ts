/**
 * Rebuilds the chunk index from the container footers (the index is only a cache of
 * them). A container whose footer is damaged is recovered by scanning its record
 * headers; records whose payload hash fails are left out and reported.
 */
import type { Repository } from './repository.js';
import { ContainerReader } from './container.js';
import { locationOf, type ChunkLocation } from './chunk-index.js';
import type { FooterEntry } from './container-format.js';

export interface RebuildReport {
  readonly containers: number;
  readonly chunks: number;
  /** Containers whose footer was damaged and were scanned record by record. */
  readonly scanned: string[];
}

export async function rebuildIndex(repo: Repository, onProgress?: (p: { done: number; total: number }) => void): Promise<RebuildReport> {
  const index = await repo.index();
  await index.clear();
  const ids = await repo.containerIds();
  const scanned: string[] = [];
  let chunks = 0;
  let done = 0;
  for (const id of ids) {
    const reader = await ContainerReader.open(repo.dir, id);
    try {
      let entries: FooterEntry[];
      try {
        entries = await reader.readFooter();
      } catch {
        scanned.push(id);
        entries = [];
        for await (const e of reader.scanRecords()) entries.push(e);
      }
      const batch: [Uint8Array, ChunkLocation][] = entries.map((e) => [e.digest, locationOf(id, e)]);
      await index.putMany(batch);
      chunks += batch.length;
    } finally {
      await reader.close();
    }
    onProgress?.({ done: ++done, total: ids.length });
  }
  return { containers: ids.length, chunks, scanned };
}
