/**
 * `chunkvault estimate` with known answers: images built from 64 KiB tiles at known
 * offsets (the expected dedup per chunk size is computed from the tile layout, not by
 * the code under test), zero-only and random-only images, a shifted copy (where
 * content-defined chunking must beat fixed chunking), and a sampled run whose 95 %
 * interval must contain the full-pass answer.
 */
import { randomFillSync } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliFails, cliOk, ensureBuilt, KiB, makeRandomImage, makeTempDir, MiB, prng, removeTempDir, seededBytes } from '../helpers/cli.js';

let dir: string;
let tmp: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('estimate');
  tmp = join(dir, 'tmp');
  await fsp.mkdir(tmp);
});

afterAll(async () => {
  await removeTempDir(dir);
});

interface Scheme {
  kind: 'fixed' | 'cdc';
  chunkSize: number;
  logicalBytes: number;
  zeroBytes: number;
  zeroShare: number;
  uniqueBytes: number;
  uniqueChunks: number;
  dedupRatio: number;
  perSource: { source: string; uniqueBytes: number; dedupRatio: number }[];
  codecs: { codec: string; storedBytes: number; compressionRatio: number; interval?: { low: number; high: number } }[];
  intervals?: { zeroBytes: { low: number; high: number }; uniqueBytes: { low: number; high: number } };
}

interface Report {
  schemes: Scheme[];
  sample: { regionsRead: number; regionsTotal: number } | null;
}

/** Runs estimate --json with its temporary files under `tmp` (checked empty afterwards). */
async function estimate(args: string[]): Promise<Report> {
  const r = await cliOk(['estimate', ...args, '--json'], { env: { TMPDIR: tmp } });
  expect(await fsp.readdir(tmp), 'temporary digest set left behind').toEqual([]);
  return r.json as Report;
}

const TILE = 64 * KiB;
const SIZES = [64 * KiB, 256 * KiB, MiB, 4 * MiB];

/**
 * A 32 MiB layout of tile ids (-1 = zero tile): 4 MiB of distinct tiles, copied again
 * at a 4 MiB-aligned offset, a 1 MiB-aligned copy of 1 MiB of it, a 256 KiB copy,
 * 2 MiB of zeros, and the rest drawn from a small pool (64 KiB-level repeats only).
 */
function tileLayout(): number[] {
  const t: number[] = [];
  for (let i = 0; i < 64; i++) t.push(i);
  t.push(...t.slice(0, 64));
  t.push(...t.slice(16, 32));
  t.push(...t.slice(4, 8));
  for (let i = 0; i < 28; i++) t.push(-1);
  const rnd = prng(42);
  while (t.length < 512) t.push(100 + Math.floor(rnd() * 40));
  return t;
}

/** Expected zero and unique bytes at chunk size `size`, from the tile ids. */
function expected(t: number[], size: number): { zero: number; unique: number } {
  const per = size / TILE;
  const seen = new Set<string>();
  let zero = 0;
  for (let i = 0; i < t.length; i += per) {
    const ids = t.slice(i, i + per);
    if (ids.every((id) => id === -1)) zero += size;
    else seen.add(ids.join(','));
  }
  return { zero, unique: seen.size * size };
}

async function writeTiles(path: string, t: number[]): Promise<void> {
  const buf = Buffer.alloc(t.length * TILE);
  t.forEach((id, i) => {
    if (id >= 0) seededBytes(`tile-${id}`, TILE).copy(buf, i * TILE);
  });
  await fsp.writeFile(path, buf);
}

describe('estimate', () => {
  it('gives the exact dedup ratio per chunk size for repeated blocks at known offsets', async () => {
    const image = join(dir, 'tiles.img');
    const t = tileLayout();
    await writeTiles(image, t);
    const r = await estimate([image, '--chunk-sizes', '64K,256K,1M,4M', '--codecs', 'lz4']);
    expect(r.schemes.map((s) => s.chunkSize)).toEqual(SIZES);
    for (const s of r.schemes) {
      const e = expected(t, s.chunkSize);
      expect(s.logicalBytes).toBe(32 * MiB);
      expect({ size: s.chunkSize, zero: s.zeroBytes, unique: s.uniqueBytes }).toEqual({ size: s.chunkSize, zero: e.zero, unique: e.unique });
      expect(s.dedupRatio).toBeCloseTo((32 * MiB - e.zero) / e.unique, 10);
      expect(s.perSource[0]!.uniqueBytes).toBe(e.unique);
      // A random 64 KiB tile does not compress (stored raw); bigger chunks holding a
      // tile twice, or zero tiles, do.
      if (s.chunkSize === TILE) expect(s.codecs[0]!.storedBytes).toBe(e.unique);
      else expect(s.codecs[0]!.storedBytes).toBeLessThanOrEqual(e.unique);
    }
    // The layout is built so that smaller chunks find strictly more duplicates.
    const ratios = r.schemes.map((s) => s.dedupRatio);
    expect(ratios[0]).toBeGreaterThan(ratios[1]!);
    expect(ratios[1]).toBeGreaterThan(ratios[2]!);
    expect(ratios[2]).toBeGreaterThan(ratios[3]!);
  });

  it('reports a zero-only image as all zero and nothing stored', async () => {
    const image = join(dir, 'zero.img');
    await fsp.writeFile(image, Buffer.alloc(16 * MiB + 4096));
    const r = await estimate([image, '--cdc', '--codecs', 'zstd:1,lz4']);
    expect(r.schemes).toHaveLength(8);
    for (const s of r.schemes) {
      expect(s).toMatchObject({ logicalBytes: 16 * MiB + 4096, zeroBytes: 16 * MiB + 4096, zeroShare: 1, uniqueBytes: 0, uniqueChunks: 0 });
      for (const c of s.codecs) expect(c.storedBytes).toBe(0);
    }
  });

  it('reports a random-only image as unique and incompressible, across two sources', async () => {
    const a = join(dir, 'random-a.img');
    const b = join(dir, 'random-b.img');
    await makeRandomImage(a, 12 * MiB + 777, 'random-a');
    await fsp.copyFile(a, b);
    const r = await estimate([a, b, '--chunk-sizes', '64K,1M', '--cdc', '--codecs', 'zstd:3,lz4']);
    for (const s of r.schemes) {
      const one = 12 * MiB + 777;
      expect(s.zeroBytes).toBe(0);
      expect(s.uniqueBytes).toBe(one);
      expect(s.dedupRatio).toBeCloseTo(2, 10);
      for (const p of s.perSource) expect(p.dedupRatio).toBeCloseTo(1, 10);
      for (const c of s.codecs) expect(c.storedBytes).toBe(one);
    }
  });

  it('finds a shifted copy with content-defined chunking but not with fixed chunks', async () => {
    const a = join(dir, 'shift-a.img');
    const b = join(dir, 'shift-b.img');
    const data = seededBytes('shift', 24 * MiB);
    await fsp.writeFile(a, data);
    await fsp.writeFile(b, Buffer.concat([seededBytes('prefix', 7777), data]));
    const r = await estimate([a, b, '--chunk-sizes', '64K,256K', '--cdc', '--codecs', 'lz4']);
    const logical = 48 * MiB + 7777;
    for (const size of [64 * KiB, 256 * KiB]) {
      const fixed = r.schemes.find((s) => s.kind === 'fixed' && s.chunkSize === size)!;
      const cdc = r.schemes.find((s) => s.kind === 'cdc' && s.chunkSize === size)!;
      expect(fixed.dedupRatio).toBeLessThan(1.02);
      expect(cdc.dedupRatio).toBeGreaterThan(1.9);
      expect(cdc.uniqueBytes).toBeLessThan(fixed.uniqueBytes * 0.55);
      expect(cdc.logicalBytes).toBe(logical);
    }
  });

  it('samples with a 95% interval that contains the full-pass answer', async () => {
    const image = join(dir, 'mixed.img');
    const rnd = prng(7);
    const fh = await fsp.open(image, 'w');
    const page = Buffer.alloc(4096);
    const region = Buffer.alloc(4 * MiB);
    for (let r = 0; r < 48; r++) {
      // Each region: pages that are random with probability q, else zero or a repeated byte.
      const q = rnd();
      for (let p = 0; p < region.length / page.length; p++) {
        const x = rnd();
        if (x < q) randomFillSync(page);
        else page.fill(x < (q + 1) / 2 ? 0 : 0x41 + (p % 7));
        page.copy(region, p * page.length);
      }
      await fh.write(region, 0, region.length, r * region.length);
    }
    await fh.close();
    const args = [image, '--chunk-sizes', '64K,1M', '--codecs', 'zstd:1'];
    const full = await estimate(args);
    const sampled = await estimate([...args, '--sample', '30', '--seed', '11']);
    expect(sampled.sample!.regionsTotal).toBe(48);
    expect(sampled.sample!.regionsRead).toBeGreaterThan(5);
    expect(sampled.sample!.regionsRead).toBeLessThan(30);
    full.schemes.forEach((f, i) => {
      const s = sampled.schemes[i]!;
      const zi = s.intervals!.zeroBytes;
      const ui = s.intervals!.uniqueBytes;
      const ci = s.codecs[0]!.interval!;
      expect(zi.low).toBeLessThanOrEqual(f.zeroBytes);
      expect(zi.high).toBeGreaterThanOrEqual(f.zeroBytes);
      expect(ui.low).toBeLessThanOrEqual(f.uniqueBytes);
      expect(ui.high).toBeGreaterThanOrEqual(f.uniqueBytes);
      expect(ci.low).toBeLessThanOrEqual(f.codecs[0]!.storedBytes);
      expect(ci.high).toBeGreaterThanOrEqual(f.codecs[0]!.storedBytes);
      expect(ci.high - ci.low).toBeLessThan(f.codecs[0]!.storedBytes);
    });
    // Reproducible with the same seed.
    const again = await estimate([...args, '--sample', '30', '--seed', '11']);
    expect(again.sample).toEqual(sampled.sample);
    expect(again.schemes.map((s) => s.codecs[0]!.storedBytes)).toEqual(sampled.schemes.map((s) => s.codecs[0]!.storedBytes));
  });

  it('prints a dedup table and a stored-size table without --json', async () => {
    const image = join(dir, 'tiles2.img');
    await writeTiles(image, tileLayout());
    const r = await cliOk(['estimate', image, '--chunk-sizes', '64K,4M', '--codecs', 'zstd:1', '--cdc'], { env: { TMPDIR: tmp } });
    expect(r.stdout).toMatch(/^SCHEME +LOGICAL +ZERO +UNIQUE +DEDUP +DEDUP tiles2\.img +INDEX +MAPS$/m);
    expect(r.stdout).toMatch(/^fixed 64\.0 KiB +32\.0 MiB .* \d+\.\d\dx/m);
    expect(r.stdout).toMatch(/^cdc ~4\.00 MiB /m);
    expect(r.stdout).toMatch(/^SCHEME +CODEC +STORED +COMPRESSION +TOTAL$/m);
    expect(r.stdout).toMatch(/^read 32\.0 MiB in /m);
  });

  it('rejects bad options with typed errors', async () => {
    const image = join(dir, 'tiny.img');
    await fsp.writeFile(image, Buffer.alloc(4096));
    await cliFails(['estimate', image, '--chunk-sizes', '3K', '--json'], 'INVALID_ARGUMENT');
    await cliFails(['estimate', image, '--codecs', 'gzip', '--json'], 'INVALID_ARGUMENT');
    await cliFails(['estimate', image, '--sample', '0', '--json'], 'INVALID_ARGUMENT');
    await cliFails(['estimate', join(dir, 'missing.img'), '--json'], 'SOURCE_NOT_FOUND');
  });
});
