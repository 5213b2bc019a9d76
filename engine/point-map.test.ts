import fc from 'fast-check';
import { mkdtemp, rm, truncate, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MapReader, MapWriter, decodeMapHeader, encodeMapHeader, slotCountFor } from './point-map.js';
import { initHashing } from './hashing.js';
import { isChunkvaultError } from './errors.js';

let dir: string;
beforeAll(async () => {
  await initHashing();
  dir = await mkdtemp(join(tmpdir(), 'cv-map-'));
  await mkdir(join(dir, 'tmp'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe('point map', () => {
  it('round-trips headers', () => {
    fc.assert(
      fc.property(fc.integer({ min: 16, max: 22 }), fc.integer({ min: 0, max: 2 ** 50 }), (shift, diskSize) => {
        const g = { chunkSize: 2 ** shift, diskSize, slotCount: slotCountFor(diskSize, 2 ** shift) };
        expect(decodeMapHeader(encodeMapHeader(g))).toEqual(g);
      }),
    );
  });

  it('rejects inconsistent geometry', () => {
    const buf = encodeMapHeader({ chunkSize: 65536, diskSize: 65537, slotCount: 2 });
    buf[24] = 3;
    expect(() => decodeMapHeader(buf)).toThrow(/inconsistent/);
  });

  it('writes, reads and verifies streamed maps; detects truncation and damage', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 3000 }), async (slots) => {
        const g = { chunkSize: 65536, diskSize: slots * 65536, slotCount: slots };
        const w = await MapWriter.create(dir, 'p', g);
        const body = new Uint8Array(slots * 32).map((_, i) => (i * 7) & 0xff);
        for (let at = 0; at < body.length; at += 32 * 777) await w.append(body.subarray(at, Math.min(body.length, at + 32 * 777)));
        const path = join(dir, `m${slots}.map`);
        const digest = await w.commit(path);
        const r = await MapReader.open(path);
        await r.verifyDigest(digest);
        if (slots > 0) expect(await r.readSlots(0, slots)).toEqual(body);
        await r.close();
        await truncate(path, 64 + slots * 32);
        await expect(MapReader.open(path)).rejects.toSatisfy((e) => isChunkvaultError(e, 'MAP_CORRUPT'));
      }),
      { numRuns: 8 },
    );
  });
});
