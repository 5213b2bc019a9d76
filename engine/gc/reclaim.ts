/**
 * Reclaiming space once the barrier has cleared: containers whose records are all
 * dead are retired; containers whose dead share passes the threshold are compacted
 * (live records copied into new containers, sealed and indexed first) and retired.
 * A record is live exactly when the index points at it. Retired containers are
 * unlinked once every session that was live when they were retired has ended, so a
 * restore that looked up an old location just before the move still finds its data.
 */
import { promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import { decodeLocation, encodeLocation, locationOf, type ChunkIndex } from '../chunk-index.js';
import { ContainerReader, ContainerWriter, containerPath } from '../container.js';
import { bindingOf, keys } from '../object-repo/binding.js';
import type { FooterEntry } from '../container-format.js';
import { CONTAINER_HEADER_BYTES, DEFAULT_CONTAINER_TARGET_BYTES, FOOTER_ENTRY_BYTES, RECORD_HEADER_BYTES, TRAILER_BYTES } from '../constants.js';
import { ChunkvaultError } from '../errors.js';
import { xxh64 } from '../hashing.js';
import { fsyncDir } from '../_fs.js';
import { locKey, parseLocKey } from './condemn.js';

export interface ReclaimTotals {
  containersRetired: number;
  containersCompacted: number;
  recordsDropped: number;
  bytesWritten: number;
}

/** What the caller persists: containers to retire (state.json) as soon as they are safe to drop. */
export type RetireFn = (containerIds: string[]) => Promise<void>;

function recordBytes(e: FooterEntry): number {
  return RECORD_HEADER_BYTES + e.storedLength;
}

/** Live records of a container: those the index points at. */
export function liveRecords(index: ChunkIndex, containerId: string, entries: readonly FooterEntry[]): FooterEntry[] {
  const main = index.main();
  return entries.filter((e) => {
    const v = main.getBinary(e.digest);
    if (v === undefined) return false;
    const loc = decodeLocation(v);
    return loc.containerId === containerId && loc.offset === e.offset;
  });
}

/** Copies live records into new containers; indexes each sealed one, then retires the sources. */
class Compactor {
  private writer: ContainerWriter | undefined;
  private sources: string[] = [];
  private moved: { digest: Uint8Array; from: string; fromOffset: number }[] = [];

  constructor(
    private readonly repoDir: string,
    private readonly index: ChunkIndex,
    private readonly retire: RetireFn,
    private readonly totals: ReclaimTotals,
  ) {}

  async add(reader: ContainerReader, live: readonly FooterEntry[]): Promise<void> {
    for (const e of live) {
      const rec = await reader.readRecord(e.offset, e.storedLength, e.digest);
      // Never copy a damaged record into a fresh container: the copy would look sound.
      if (xxh64(rec.payload) !== rec.header.payloadHash) {
        throw new ChunkvaultError('CHUNK_CORRUPT', `gc: container ${reader.id} record at ${e.offset} is damaged; run verify`, { details: { container: reader.id, offset: e.offset } });
      }
      this.writer ??= await ContainerWriter.create(this.repoDir);
      await this.writer.append(rec.header, rec.payload);
      this.moved.push({ digest: e.digest, from: reader.id, fromOffset: e.offset });
      if (this.writer.byteSize >= DEFAULT_CONTAINER_TARGET_BYTES || this.writer.isFull) await this.seal();
    }
    this.sources.push(reader.id);
  }

  /** Seals the open container, points the index at the copies, retires the sources whose records are all copied. */
  async seal(): Promise<void> {
    const writer = this.writer;
    this.writer = undefined;
    if (writer) {
      const entries = await writer.seal();
      this.totals.bytesWritten += writer.byteSize + entries.length * FOOTER_ENTRY_BYTES + TRAILER_BYTES;
      const main = this.index.main();
      const moved = this.moved;
      this.moved = [];
      await this.index.transact(() => {
        entries.forEach((e, i) => {
          const m = moved[i]!;
          const cur = main.getBinary(m.digest);
          if (!cur) return;
          const loc = decodeLocation(cur);
          // Only move an entry still pointing where we copied from (a backup may have re-stored it).
          if (loc.containerId === m.from && loc.offset === m.fromOffset) void main.put(m.digest, encodeLocation(locationOf(writer.id, e)));
        });
      });
    }
    // Sources whose last record went into an already sealed container are complete now.
    const done = this.sources;
    this.sources = [];
    if (done.length > 0) await this.retire(done);
  }

  async abort(): Promise<void> {
    await this.writer?.abort();
  }
}

interface Group {
  containerId: string;
  keys: Uint8Array[];
}

/** Condemned locations grouped by container, in key order, a group at a time. */
function* groups(index: ChunkIndex): Generator<Group> {
  let current: Group | undefined;
  for (const { key } of index.aux('gc-condemned-loc').getRange({})) {
    const k = new Uint8Array(key);
    const { containerId } = parseLocKey(k);
    if (current && current.containerId !== containerId) {
      yield current;
      current = undefined;
    }
    current ??= { containerId, keys: [] };
    current.keys.push(k);
  }
  if (current) yield current;
}

/**
 * Processes every container that holds condemned records, plus `extra` (containers
 * that appeared since the last GC: unindexed leftovers of crashed writers are found
 * there). `threshold` is the dead share (0-1) above which a container is compacted.
 */
export async function reclaim(repoDir: string, index: ChunkIndex, threshold: number, extra: readonly string[], retire: RetireFn): Promise<ReclaimTotals> {
  const totals: ReclaimTotals = { containersRetired: 0, containersCompacted: 0, recordsDropped: 0, bytesWritten: 0 };
  const compactor = new Compactor(repoDir, index, async (ids) => {
    totals.containersCompacted += ids.length;
    await retire(ids);
  }, totals);
  const seen = new Set<string>();
  try {
    // Snapshot the groups first: the loop deletes condemned entries as it goes.
    const all = [...groups(index)];
    for (const g of all) {
      seen.add(g.containerId);
      await processContainer(repoDir, index, g.containerId, threshold, compactor, retire, totals);
      await index.transact(() => {
        const byLoc = index.aux('gc-condemned-loc');
        for (const k of g.keys) void byLoc.remove(k);
      });
    }
    for (const id of extra) {
      if (!seen.has(id)) await processContainer(repoDir, index, id, threshold, compactor, retire, totals);
    }
    await compactor.seal();
  } catch (err) {
    await compactor.abort();
    throw err;
  }
  // Digests condemned but neither resurrected nor re-stored are gone for good now.
  await index.transact(() => void index.aux('gc-condemned').clearSync());
  return totals;
}

async function processContainer(
  repoDir: string,
  index: ChunkIndex,
  id: string,
  threshold: number,
  compactor: Compactor,
  retire: RetireFn,
  totals: ReclaimTotals,
): Promise<void> {
  let reader: ContainerReader;
  try {
    reader = await ContainerReader.open(repoDir, id);
  } catch {
    return; // already gone (retired and unlinked by an earlier, interrupted run)
  }
  try {
    const entries = await reader.readFooter();
    const live = liveRecords(index, id, entries);
    const dead = entries.length - live.length;
    if (dead === 0) return;
    const overhead = CONTAINER_HEADER_BYTES + TRAILER_BYTES + FOOTER_ENTRY_BYTES * entries.length;
    const liveBytes = live.reduce((a, e) => a + recordBytes(e), 0);
    const deadShare = 1 - liveBytes / Math.max(1, reader.fileSize - overhead);
    if (live.length === 0) {
      totals.containersRetired++;
      totals.recordsDropped += dead;
      await retire([id]);
    } else if (deadShare >= threshold) {
      totals.recordsDropped += dead;
      await compactor.add(reader, live);
    }
  } finally {
    await reader.close();
  }
}

/** Unlinks retired containers (their directory entries made durable). */
export async function unlinkContainers(repoDir: string, ids: readonly string[]): Promise<number> {
  let bytes = 0;
  const dirs = new Set<string>();
  const binding = bindingOf(repoDir);
  for (const id of ids) {
    if (binding) {
      const size = await binding.store.head(keys.container(id));
      await binding.store.delete(keys.container(id));
      await binding.onDeleted?.(id);
      bytes += size ?? 0;
      await fsp.rm(containerPath(repoDir, id), { force: true }); // a staged copy, if any
      continue;
    }
    const path = containerPath(repoDir, id);
    const st = await fsp.stat(path).catch(() => undefined);
    if (!st) continue;
    await fsp.rm(path, { force: true });
    bytes += st.size;
    dirs.add(dirname(path));
  }
  for (const d of dirs) await fsyncDir(d);
  return bytes;
}

export { locKey };
