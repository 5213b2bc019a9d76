import { createHash, randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, ChunkvaultError, isChunkvaultError, Repository, restore, verify, type BlockSource, type PreadAccess, type RestoreTarget } from './index.js';
import { PlanCursor } from './backup.js';

/** An in-memory disk; `failAfter` makes reads fail after that many calls (a faulty source). */
class MemorySource implements BlockSource {
  reads = 0;
  constructor(public data: Buffer, private readonly failAfter = Infinity) {}
  get sizeBytes(): number {
    return this.data.length;
  }
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    if (++this.reads > this.failAfter) throw new ChunkvaultError('SOURCE_READ_FAILED', 'injected read failure');
    target.set(this.data.subarray(offset, offset + target.length));
  }
  describe(): string {
    return 'memory';
  }
  async close(): Promise<void> {}
}

/** A disk in a file that the engine's workers read themselves (BlockSource.pread). */
class PreadFileSource implements BlockSource {
  private readonly fd: number;
  readonly pread: PreadAccess;
  constructor(path: string, readonly sizeBytes: number) {
    this.fd = openSync(path, 'r');
    this.pread = {
      fd: this.fd,
      failure: (errno, offset) => new ChunkvaultError(errno === 0 ? 'SOURCE_TRUNCATED' : 'SOURCE_READ_FAILED', `test file: errno ${errno}`, { details: { offset } }),
    };
  }
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    if (readSync(this.fd, target, 0, target.length, offset) !== target.length) throw new ChunkvaultError('SOURCE_TRUNCATED', 'short');
  }
  describe(): string {
    return 'pread file';
  }
  async close(): Promise<void> {
    closeSync(this.fd);
  }
}

class MemoryTarget implements RestoreTarget {
  readonly sparse = false;
  buf = Buffer.alloc(0);
  async begin(size: number): Promise<void> {
    this.buf = Buffer.alloc(size, 0xee);
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.buf.set(data, offset);
  }
  async commit(): Promise<void> {}
  async abort(): Promise<void> {}
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const CHUNK = 65536;

function disk(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += CHUNK) {
    const kind = (at / CHUNK) % 4;
    if (kind === 1) randomBytes(Math.min(CHUNK, size - at)).copy(b, at);
    if (kind === 2) b.fill(`block ${at} `, at, Math.min(size, at + CHUNK));
  }
  return b;
}

let dir: string;
let repo: Repository;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cv-engine-'));
  await Repository.init(dir, { chunkSize: CHUNK, compression: { codec: 'lz4', level: 0 }, containerTargetBytes: 4 * CHUNK });
  repo = await Repository.open(dir, { threads: 2 });
});
afterAll(async () => {
  await repo.close();
  await rm(dir, { recursive: true, force: true });
});

async function restoreBytes(id: string): Promise<Buffer> {
  const t = new MemoryTarget();
  await restore(repo, await repo.catalog.get(id), t);
  return t.buf;
}

describe('engine backup and restore', () => {
  it('backs up, dedups, and restores incrementals and resized disks exactly', async () => {
    const src = new MemorySource(disk(40 * CHUNK + 1234));
    const full = await backup(repo, { source: src, vm: 'vm', disk: 'd' });
    expect(sha(await restoreBytes(full.id))).toBe(sha(src.data));
    const again = await backup(repo, { source: src, vm: 'vm', disk: 'd', parent: full });
    expect(again.stats.chunksNew).toBe(0);
    let parent = again;
    for (const [size, off] of [[40 * CHUNK + 1234, 5], [50 * CHUNK + 7, 44], [20 * CHUNK + 99, 3]] as const) {
      const next = Buffer.alloc(size);
      src.data.copy(next, 0, 0, Math.min(size, src.data.length));
      randomBytes(3000).copy(next, off * CHUNK + 100);
      src.data = next;
      parent = await backup(repo, { source: src, vm: 'vm', disk: 'd', parent, changed: [{ offset: off * CHUNK + 100, length: 3000 }] });
      expect(parent.mode).toBe('incremental');
      expect(sha(await restoreBytes(parent.id))).toBe(sha(src.data));
    }
    expect((await verify(repo, { readData: true })).ok).toBe(true);
  });

  it('commits nothing when the source fails mid-backup', async () => {
    const before = await repo.catalog.list();
    // 64 chunks of 64 KiB arrive in 4 reads of 1 MiB (16 consecutive chunks): the 3rd fails.
    const src = new MemorySource(disk(64 * CHUNK).fill(7, 0, 10), 2);
    await expect(backup(repo, { source: src, vm: 'vm2', disk: 'd' })).rejects.toSatisfy((e) => isChunkvaultError(e, 'SOURCE_READ_FAILED'));
    expect(await repo.catalog.list()).toEqual(before);
    expect(await readdir(join(dir, 'containers', 'tmp'))).toEqual([]);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    expect((await verify(repo, { readData: true })).ok).toBe(true);
  });

  it('stops with INTERRUPTED when aborted and commits nothing', async () => {
    const ac = new AbortController();
    ac.abort();
    const src = new MemorySource(disk(64 * CHUNK));
    await expect(backup(repo, { source: src, vm: 'vm3', disk: 'd', signal: ac.signal })).rejects.toSatisfy((e) => isChunkvaultError(e, 'INTERRUPTED'));
    expect(await repo.catalog.list({ vm: 'vm3' })).toEqual([]);
  });

  it('treats unread slots of a parentless extent backup as zeros', async () => {
    const src = new MemorySource(disk(8 * CHUNK));
    const p = await backup(repo, { source: src, vm: 'vm4', disk: 'd', changed: [{ offset: CHUNK, length: CHUNK }] });
    const expected = Buffer.alloc(8 * CHUNK);
    src.data.copy(expected, CHUNK, CHUNK, 2 * CHUNK);
    expect(sha(await restoreBytes(p.id))).toBe(sha(expected));
  });

  it('gathers scattered changed slots from many windows into full slabs and puts each digest at its slot', async () => {
    // 64 KiB chunks: a slab holds 64 slots. Changes every 7th slot over 700 slots
    // (some made zero, some made equal to another changed slot) need windows that
    // span about 450 slots each.
    const slots = 700;
    const src = new MemorySource(disk(slots * CHUNK));
    const full = await backup(repo, { source: src, vm: 'vm5', disk: 'd' });
    const next = Buffer.from(src.data);
    const changed = [];
    for (let s = 2; s < slots; s += 7) {
      if (s % 5 === 0) next.fill(0, s * CHUNK, (s + 1) * CHUNK);
      else if (s % 5 === 1) next.fill(`same ${s % 3}`, s * CHUNK, (s + 1) * CHUNK);
      else randomBytes(CHUNK).copy(next, s * CHUNK);
      changed.push({ offset: s * CHUNK, length: CHUNK });
    }
    src.data = next;
    const inc = await backup(repo, { source: src, vm: 'vm5', disk: 'd', parent: full, changed });
    expect(inc.stats.chunksRead).toBe(changed.length);
    expect(sha(await restoreBytes(inc.id))).toBe(sha(next));
  });
});

describe('backup from a source the workers read themselves (pread)', () => {
  it('stores the same points as the main-thread reads, full and incremental, and restores them exactly', async () => {
    const path = join(dir, 'pread-disk.img');
    const data = disk(70 * CHUNK + 4321);
    writeFileSync(path, data);
    const viaMain = await backup(repo, { source: new MemorySource(data), vm: 'pr-main', disk: 'd' });
    const src = new PreadFileSource(path, data.length);
    const full = await backup(repo, { source: src, vm: 'pr-workers', disk: 'd' });
    expect(full.mapDigest).toBe(viaMain.mapDigest);
    expect(full.stats).toMatchObject({ bytesRead: data.length, chunksRead: 71, chunksNew: 0 });
    // Scattered changes: runs of adjacent slots, single slots, and the short last slot.
    const changed = [{ offset: 3 * CHUNK + 10, length: 2 * CHUNK }, { offset: 40 * CHUNK, length: 100 }, { offset: 70 * CHUNK, length: 4321 }];
    for (const e of changed) randomBytes(e.length).copy(data, e.offset);
    writeFileSync(path, data);
    const inc = await backup(repo, { source: src, vm: 'pr-workers', disk: 'd', parent: full, changed });
    expect(inc.stats.chunksRead).toBe(5);
    expect(inc.stats.bytesRead).toBe(4 * CHUNK + 4321);
    expect(sha(await restoreBytes(inc.id))).toBe(sha(data));
    await src.close();
  });

  it("fails with the source's error at the offset where the file ended, and commits nothing", async () => {
    const path = join(dir, 'pread-short.img');
    writeFileSync(path, disk(40 * CHUNK));
    const src = new PreadFileSource(path, 40 * CHUNK);
    await truncate(path, 33 * CHUNK + 500);
    const before = await repo.catalog.list();
    await expect(backup(repo, { source: src, vm: 'pr-short', disk: 'd' })).rejects.toMatchObject({ code: 'SOURCE_TRUNCATED', details: { offset: 33 * CHUNK + 500 } });
    expect(await repo.catalog.list()).toEqual(before);
    expect(await readdir(join(dir, 'containers', 'tmp'))).toEqual([]);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
    await src.close();
  });
});

describe('PlanCursor', () => {
  const walk = (ranges: { first: number; end: number }[], slotCount: number, maxPlanned: number, maxSpan: number) => {
    const c = new PlanCursor(ranges, slotCount);
    const out = [];
    for (let first = 0; first < slotCount; ) {
      const w = c.next(first, maxPlanned, maxSpan);
      out.push(w);
      first = w.end;
    }
    return out;
  };

  it('cuts a whole-disk plan into windows of a slab each', () => {
    expect(walk([{ first: 0, end: 10 }], 10, 4, 100).map((w) => [w.first, w.end, w.planned.length])).toEqual([[0, 4, 4], [4, 8, 4], [8, 10, 2]]);
  });

  it('ends a window after a slab of planned slots, or at the span limit', () => {
    const ranges = [{ first: 1, end: 3 }, { first: 5, end: 6 }, { first: 9, end: 12 }, { first: 40, end: 41 }];
    expect(walk(ranges, 50, 4, 20)).toEqual([
      { first: 0, end: 10, planned: [1, 2, 5, 9] },
      { first: 10, end: 30, planned: [0, 1] },
      { first: 30, end: 50, planned: [10] },
    ]);
  });
});
