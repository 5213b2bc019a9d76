/**
 * Restore's batch read path and write-behind, end to end through the engine: chunks
 * spread over several containers in non-sequential order, the same chunk in many
 * slots, zero slots, a short last slot, more windows than the pipeline has slabs, a
 * slow stream (the output memory is reused only once the target has consumed it), and
 * damage in the middle of a coalesced read (the chunk is named, no output is left);
 * direct I/O to files (aligned runs direct, the short tail and unaligned memory
 * buffered, the result identical either way).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, ChunkvaultError, isChunkvaultError, Repository, restore, type PointRecord } from '../engine/index.js';
import { containerPath } from '../engine/container.js';
import { openBatch, OPEN_BATCH_FIELDS } from '../engine/_worker-open.js';
import { compressChunk } from '../engine/codecs.js';
import { initHashing, xxh64 } from '../engine/hashing.js';
import { FileTarget, StreamTarget } from './restore-targets.js';
import { alignedShared } from '../engine/aligned-memory.js';
import { MemorySource } from '../test/helpers/memory-source.js';

const CHUNK = 65536;
/** Slots per restore window (16 MiB) at this chunk size. */
const WINDOW_SLOTS = 256;

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A compressible chunk, distinct per seed. */
function chunkOf(seed: number): Buffer {
  const b = Buffer.alloc(CHUNK).fill(`chunk ${seed} `);
  randomBytes(8192).copy(b, (seed * 4099) % (CHUNK - 8192));
  return b;
}

let dir: string;
let repo: Repository;
const pool = Array.from({ length: 64 }, (_, i) => chunkOf(i));
/** The pool in order: 64 records spread over 4+ containers (16 records each). */
let base: PointRecord;
/** Slots taking pool chunks in a scrambled order, with repeats, zero slots and a short tail. */
let mixed: { point: PointRecord; data: Buffer };

function mixedDisk(): Buffer {
  const slots = 5 * WINDOW_SLOTS + 3; // more windows than slabs in flight
  const data = Buffer.alloc(slots * CHUNK - 1000);
  for (let s = 0; s < slots; s++) {
    if (s % 7 === 3) continue; // zero slot
    // Non-sequential across containers, and each window differs from the others.
    const c = s >= 100 && s < 140 ? 5 : (s * 37 + Math.floor(s / WINDOW_SLOTS)) % 64;
    pool[c]!.copy(data, s * CHUNK, 0, Math.min(CHUNK, data.length - s * CHUNK));
  }
  return data;
}

beforeAll(async () => {
  dir = await fsp.mkdtemp(join(tmpdir(), 'cv-restore-'));
  await Repository.init(dir, { chunkSize: CHUNK, compression: { codec: 'zstd', level: 1 }, containerTargetBytes: 128 * 1024 });
  repo = await Repository.open(dir, { threads: 2 });
  base = await backup(repo, { source: new MemorySource(Buffer.concat(pool)), vm: 'base', disk: 'd' });
  const data = mixedDisk();
  mixed = { point: await backup(repo, { source: new MemorySource(data), vm: 'mixed', disk: 'd' }), data };
  expect(mixed.point.stats.chunksNew).toBe(1); // only the short last slot is new
  const locs = await (await repo.index()).findMany(pool.map((c) => Buffer.from(sha(c), 'hex')));
  expect(new Set(locs.map((l) => l!.containerId)).size).toBeGreaterThanOrEqual(4);
});

afterAll(async () => {
  await repo.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** A stream that consumes each write late (after a timer), as a slow pipe would. */
class SlowSink extends Writable {
  readonly hash = createHash('sha256');
  bytes = 0;
  constructor() {
    super({ highWaterMark: 64 * 1024 * 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    setTimeout(() => {
      this.hash.update(chunk);
      this.bytes += chunk.length;
      cb();
    }, 2);
  }
}

/** Where a chunk's record sits, from the index. */
async function recordOf(digestHex: string): Promise<{ path: string; offset: number; storedLength: number }> {
  const [loc] = await (await repo.index()).findMany([Buffer.from(digestHex, 'hex')]);
  return { path: containerPath(dir, loc!.containerId), offset: loc!.offset, storedLength: loc!.storedLength };
}

async function flipByte(path: string, at: number): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  const b = new Uint8Array(1);
  await fh.read(b, 0, 1, at);
  b[0]! ^= 0x5a;
  await fh.write(b, 0, 1, at);
  await fh.close();
}

describe('restore through the batch read path', () => {
  it('restores chunks from several containers in scrambled order, repeated, with zero slots, to a sparse file', async () => {
    const out = join(dir, 'mixed.img');
    await restore(repo, mixed.point, await FileTarget.create(out));
    expect(sha(await fsp.readFile(out))).toBe(sha(mixed.data));
    expect(existsSync(`${out}.partial`)).toBe(false);
    await restore(repo, mixed.point, await FileTarget.create(out), { verifyDigest: true });
    expect(sha(await fsp.readFile(out))).toBe(sha(mixed.data));
  });

  it('writes zeros, in order, to a slow stream, reusing output memory only after each write is consumed', async () => {
    const sink = new SlowSink();
    const progress: number[] = [];
    await restore(repo, mixed.point, new StreamTarget(sink), { onProgress: (p) => progress.push(p.done) });
    expect(sink.bytes).toBe(mixed.data.length);
    expect(sink.hash.digest('hex')).toBe(sha(mixed.data));
    expect(progress.at(-1)).toBe(mixed.data.length);
  });

  it('fails with CHUNK_CORRUPT naming the chunk damaged in the middle of a coalesced read, leaving no output', async () => {
    const victim = sha(pool[22]!); // a record between others of the same container
    const rec = await recordOf(victim);
    for (const at of [rec.offset + 64 + (rec.storedLength >> 1), rec.offset + 1]) {
      await flipByte(rec.path, at);
      try {
        const out = join(dir, 'damaged.img');
        const err: unknown = await restore(repo, base, await FileTarget.create(out)).then(() => undefined, (e: unknown) => e);
        expect(isChunkvaultError(err, 'CHUNK_CORRUPT'), String(err)).toBe(true);
        expect((err as ChunkvaultError).details.chunk).toBe(victim);
        expect((err as ChunkvaultError).message).toContain(victim);
        expect(existsSync(out)).toBe(false);
        expect(existsSync(`${out}.partial`)).toBe(false);
      } finally {
        await flipByte(rec.path, at); // undo
      }
    }
    const out = join(dir, 'base.img');
    await restore(repo, base, await FileTarget.create(out));
    expect(sha(await fsp.readFile(out))).toBe(sha(Buffer.concat(pool)));
  });

  it('fails with CHUNK_MISSING when a container is gone, leaving no output', async () => {
    const rec = await recordOf(sha(pool[40]!));
    await fsp.rename(rec.path, `${rec.path}.away`);
    try {
      const out = join(dir, 'missing.img');
      await expect(restore(repo, base, await FileTarget.create(out))).rejects.toSatisfy((e) => isChunkvaultError(e, 'CHUNK_MISSING'));
      expect(existsSync(`${out}.partial`)).toBe(false);
    } finally {
      await fsp.rename(`${rec.path}.away`, rec.path);
    }
  });
});

describe('direct I/O to files', () => {
  // Linux has O_DIRECT, and the test directory (under the system temp dir, ext4 on
  // these machines) takes it: a filesystem that refused it would fail these tests.
  it('writes the aligned runs of a restore with direct I/O and the short last slot through the page cache', async () => {
    const out = join(dir, 'direct.img');
    const target = await FileTarget.create(out);
    await restore(repo, mixed.point, target);
    expect(sha(await fsp.readFile(out))).toBe(sha(mixed.data));
    // Every non-zero slot but the last 4 KiB-unaligned bytes of the short last slot.
    const zeroSlots = Array.from({ length: Math.ceil(mixed.data.length / CHUNK) }, (_, s) => s % 7 === 3).filter(Boolean).length;
    expect(target.directBytes).toBe(mixed.data.length - (mixed.data.length % 4096) - zeroSlots * CHUNK);
  });

  it('writes nothing direct when asked for buffered writes', async () => {
    const out = join(dir, 'buffered.img');
    const target = await FileTarget.create(out, { direct: false });
    await restore(repo, mixed.point, target);
    expect(target.directBytes).toBe(0);
    expect(sha(await fsp.readFile(out))).toBe(sha(mixed.data));
  });

  it('falls back to buffered writes for memory that is not block-aligned, and writes unaligned tails and offsets buffered', async () => {
    const out = join(dir, 'fallback.img');
    const data = randomBytes(3 * 65536 + 100);
    const misaligned = new Uint8Array(new SharedArrayBuffer(data.length)); // malloc'd: never 4 KiB-aligned
    misaligned.set(data);
    const target = await FileTarget.create(out);
    await target.begin(data.length);
    await target.write(0, misaligned.subarray(0, 65536)); // EINVAL from the kernel: buffered from now on
    await target.write(65536, alignedCopy(data.subarray(65536, 3 * 65536)));
    await target.write(3 * 65536, data.subarray(3 * 65536));
    await target.commit();
    expect(target.directBytes).toBe(0);
    expect(sha(await fsp.readFile(out))).toBe(sha(data));

    const mixedTarget = await FileTarget.create(out);
    await mixedTarget.begin(data.length);
    await mixedTarget.write(0, alignedCopy(data.subarray(0, 65536 + 100))); // aligned start, unaligned length
    await mixedTarget.write(65536 + 100, alignedCopy(data.subarray(65536 + 100))); // unaligned offset
    await mixedTarget.commit();
    expect(mixedTarget.directBytes).toBe(65536); // the aligned prefix of the first write only
    expect(sha(await fsp.readFile(out))).toBe(sha(data));
  });

  it('aborts a direct restore without leaving output', async () => {
    const out = join(dir, 'aborted.img');
    const target = await FileTarget.create(out);
    await target.begin(4 * 65536);
    await target.write(0, alignedCopy(randomBytes(2 * 65536)));
    expect(target.directBytes).toBe(2 * 65536);
    await target.abort();
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.partial`)).toBe(false);
  });
});

function alignedCopy(b: Uint8Array): Uint8Array {
  const a = alignedShared(b.length);
  a.set(b);
  return a;
}

describe('openBatch (worker task)', () => {
  it('decompresses records in place, copies repeats, and reports a damaged record as data', async () => {
    await initHashing();
    const raws = [chunkOf(1), chunkOf(2), chunkOf(3)];
    const input = new Uint8Array(new SharedArrayBuffer(4 * CHUNK));
    const output = new Uint8Array(new SharedArrayBuffer(5 * CHUNK));
    const records = new Float64Array(raws.length * OPEN_BATCH_FIELDS);
    const hashes = new BigUint64Array(raws.length * 2);
    let at = 0;
    raws.forEach((raw, i) => {
      const c = compressChunk(raw, { codec: 'zstd', level: 1 });
      input.set(c.payload, at);
      records.set([at, c.payload.length, c.codec, CHUNK, i * CHUNK], i * OPEN_BATCH_FIELDS);
      hashes[2 * i] = xxh64(c.payload);
      hashes[2 * i + 1] = xxh64(raw);
      at += c.payload.length;
    });
    input[records[OPEN_BATCH_FIELDS]! + 10]! ^= 1; // damage record 1's payload
    const failed = openBatch({ input, output, records, hashes, digests: null, copies: Float64Array.from([0, 3 * CHUNK, 1, 4 * CHUNK]) });
    expect(failed).toEqual([{ index: 1, code: 'CHUNK_CORRUPT', message: 'payload hash mismatch (stored bytes damaged)' }]);
    expect(sha(output.subarray(0, CHUNK))).toBe(sha(raws[0]!));
    expect(sha(output.subarray(2 * CHUNK, 3 * CHUNK))).toBe(sha(raws[2]!));
    expect(sha(output.subarray(3 * CHUNK, 4 * CHUNK))).toBe(sha(raws[0]!));
    expect(output.subarray(4 * CHUNK).every((b) => b === 0)).toBe(true); // no copy of a failed record
  });
});
