/**
 * engine/ingest.ts against a model: random 512-aligned writes (whole chunks, partial
 * chunks, chunks patched again after being stored early because the partial-chunk
 * budget is tiny), digest-only slots, resized disks on top of a parent, and aborts.
 * Every committed point must read back (PointReader, and restore via the CLI's
 * verify) exactly as the model says.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PointIngest, PointReader, Repository, type PointRecord } from '../../engine/index.js';
import { checkRepo, leftoverTemporaries, makeTempDir, prng, removeTempDir, sha256 } from '../helpers/cli.js';

const CHUNK = 64 * 1024;

async function readAll(repo: Repository, point: PointRecord): Promise<Buffer> {
  const reader = await PointReader.open(repo, point);
  try {
    const parts: Buffer[] = [];
    for await (const piece of reader.range(0, point.sizeBytes)) parts.push(Buffer.from(piece));
    return Buffer.concat(parts);
  } finally {
    await reader.close();
  }
}

describe('PointIngest', () => {
  let dir: string;
  let repo: Repository;

  beforeAll(async () => {
    dir = await makeTempDir('ingest');
    await Repository.init(join(dir, 'repo'), { chunkSize: CHUNK });
    repo = await Repository.open(join(dir, 'repo'));
  });

  afterAll(async () => {
    await repo?.close();
    await removeTempDir(dir);
  });

  it('builds points from random writes that match a model, through a chain with resizes', async () => {
    const rnd = prng(42);
    let model = Buffer.alloc(20 * CHUNK + 1536);
    let parent: PointRecord | null = null;
    for (let round = 0; round < 6; round++) {
      // Rounds 3 and 5 resize the disk (grow, then shrink to an odd sector count).
      if (round === 3) model = Buffer.concat([model, Buffer.alloc(3 * CHUNK + 512)]);
      if (round === 5) model = model.subarray(0, 17 * CHUNK + 2560);
      const ingest: PointIngest = await PointIngest.open(repo, { vm: 'm', disk: 'd', sizeBytes: model.length, parent, maxPartialBytes: 2 * CHUNK });
      for (let w = 0; w < 40; w++) {
        const sectors = model.length / 512;
        const start = Math.floor(rnd() * sectors);
        const len = Math.min(sectors - start, 1 + Math.floor(rnd() * (rnd() < 0.3 ? 300 : 40)));
        const data = rnd() < 0.2 ? Buffer.alloc(len * 512) : randomBytes(len * 512);
        data.copy(model, start * 512);
        await ingest.writeAt(start * 512, data);
      }
      // A whole chunk, and a slot set by digest to a chunk this ingest stored.
      const slotData = randomBytes(CHUNK);
      const r = await ingest.putChunk(2, slotData);
      slotData.copy(model, 2 * CHUNK);
      await ingest.setDigest(4, r.digest);
      slotData.copy(model, 4 * CHUNK);
      parent = await ingest.commit();
      expect(parent.sizeBytes).toBe(model.length);
      expect(sha256(await readAll(repo, parent)), `round ${round}`).toBe(sha256(model));
    }
  });

  it('refuses bad input and leaves nothing after an abort', async () => {
    const before = (await repo.catalog.list()).length;
    const ingest = await PointIngest.open(repo, { vm: 'm', disk: 'aborted', sizeBytes: 4 * CHUNK, parent: null });
    await expect(ingest.writeAt(100, Buffer.alloc(512))).rejects.toMatchObject({ code: 'EXTENTS_INVALID' });
    await expect(ingest.writeAt(0, Buffer.alloc(700))).rejects.toMatchObject({ code: 'EXTENTS_INVALID' });
    await expect(ingest.writeAt(4 * CHUNK - 512, Buffer.alloc(1024))).rejects.toMatchObject({ code: 'EXTENTS_INVALID' });
    await expect(ingest.putChunk(4, Buffer.alloc(CHUNK))).rejects.toMatchObject({ code: 'EXTENTS_INVALID' });
    await expect(ingest.putChunk(0, randomBytes(CHUNK), Buffer.alloc(32, 1))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await ingest.writeAt(0, randomBytes(3 * CHUNK + 512));
    await ingest.abort();
    await expect(ingest.commit()).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    expect((await repo.catalog.list()).length).toBe(before);
    expect(await leftoverTemporaries(repo.dir)).toEqual([]);
    // A digest that is not stored is caught at commit.
    const bad = await PointIngest.open(repo, { vm: 'm', disk: 'bad', sizeBytes: CHUNK, parent: null });
    await bad.setDigest(0, randomBytes(32));
    await expect(bad.commit()).rejects.toMatchObject({ code: 'CHUNK_MISSING' });
    expect((await repo.catalog.list()).length).toBe(before);
    await repo.close();
    await checkRepo(repo.dir);
  });
});
