/**
 * Round trips through the real CLI: a full backup and a chain of incrementals from
 * changed extents, every point restored byte-identical (to a file, to stdout, by id
 * prefix and by "latest"), resized disks, and every codec and chunk size extreme.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backupOk,
  checkRepo,
  cliOk,
  ensureBuilt,
  expectRestores,
  initRepo,
  KiB,
  listPoints,
  makeImage,
  makeTextImage,
  MiB,
  mutateImage,
  prng,
  removeTempDir,
  restoreSha,
  seededBytes,
  sha256,
  sha256File,
  makeTempDir,
  writeJson,
  type BackupJson,
} from '../helpers/cli.js';

type Extent = { offset: number; length: number };

let dir: string;

beforeAll(async () => {
  ensureBuilt();
  dir = await makeTempDir('roundtrip');
});

afterAll(async () => {
  await removeTempDir(dir);
});

/**
 * What a change-tracking front-end may hand us: the true extents, unsorted, with
 * overlapping and duplicated extents and an empty one (all must be normalised).
 */
function messyExtents(extents: Extent[], diskSize: number, seed: number): Extent[] {
  const rnd = prng(seed);
  const out: Extent[] = [...extents].reverse();
  for (const e of extents.slice(0, 3)) {
    const offset = e.offset + Math.floor(e.length / 2);
    out.push({ offset, length: Math.min(e.length, diskSize - offset) });
    out.push({ ...e });
  }
  out.push({ offset: Math.floor(rnd() * diskSize), length: 0 });
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Bytes an incremental must read: every slot an extent touches, the last slot short. */
function expectedBytesRead(extents: Extent[], chunkSize: number, diskSize: number): number {
  const slots = new Set<number>();
  for (const e of extents) {
    if (e.length === 0) continue;
    for (let s = Math.floor(e.offset / chunkSize); s * chunkSize < e.offset + e.length; s++) slots.add(s);
  }
  let n = 0;
  for (const s of slots) n += Math.min(chunkSize, diskSize - s * chunkSize);
  return n;
}

function expectBackupJson(b: BackupJson, vm: string, disk: string): void {
  expect(b).toMatchObject({ vm, disk });
  for (const k of ['bytesRead', 'bytesNew', 'durationMs', 'sizeBytes'] as const) {
    expect(typeof b[k], k).toBe('number');
    expect(b[k], k).toBeGreaterThanOrEqual(0);
  }
}

describe('full backup and a chain of incrementals', () => {
  const vm = 'vm-chain';
  const disk = 'disk0';
  const size = 40 * MiB + 123_457; // not a multiple of the chunk size
  const expected = new Map<string, string>(); // point id -> SHA-256 of the image at that point
  const order: string[] = [];
  let repo: string;
  let image: string;
  let chunkSize: number;

  it('backs up a full image and 6 incrementals from messy extent lists', async () => {
    repo = join(dir, 'chain-repo');
    image = join(dir, 'chain.img');
    // 1 MiB chunks: 40 slots, so the incrementals touch only some of them.
    const init = await initRepo(repo, ['--chunk-size', '1M']);
    chunkSize = init.json.chunkSize as number;
    expect(chunkSize).toBe(MiB);
    const full = await backupOk(repo, await imagePath(image, size, 'chain'), vm, ['--disk', disk]);
    expectBackupJson(full, vm, disk);
    expect(full).toMatchObject({ mode: 'full', parent: null, sizeBytes: size, bytesRead: size });
    expect(full.bytesNew).toBeGreaterThan(0);
    expected.set(full.point, await sha256File(image));
    order.push(full.point);
    for (let i = 1; i <= 6; i++) {
      const { extents, sha } = await mutateImage(image, { seed: `chain-${i}`, writes: 6 + i, maxLength: 300 * KiB });
      const list = messyExtents(extents, size, i);
      const file = await writeJson(join(dir, `chain-${i}.json`), list);
      const inc = await backupOk(repo, image, vm, ['--disk', disk, '--changed-extents', file]);
      expectBackupJson(inc, vm, disk);
      expect(inc).toMatchObject({ mode: 'incremental', parent: order.at(-1), sizeBytes: size });
      expect(inc.bytesRead, `incremental ${i} reads exactly the touched slots`).toBe(expectedBytesRead(list, chunkSize, size));
      expected.set(inc.point, sha);
      order.push(inc.point);
    }
    expect(new Set(order).size).toBe(7);
  });

  it('restores every point byte-identically', async () => {
    await expectRestores(repo, expected, dir);
  });

  it('lists the points with their fields and parent chain', async () => {
    const points = await listPoints(repo, ['--vm', vm]);
    expect(points.map((p) => p.id)).toEqual(order);
    points.forEach((p, i) => {
      expect(p).toMatchObject({ id: order[i], vm, disk, parent: i === 0 ? null : order[i - 1], sizeBytes: size });
      expect(Number.isNaN(Date.parse(p.time)), p.time).toBe(false);
      if (i > 0) expect(p.time >= points[i - 1]!.time).toBe(true);
    });
  });

  it('restores to stdout (a pipe) byte-identically', async () => {
    const mid = order[3]!;
    const r = await cliOk(['restore', mid, '--repo', repo, '--output', '-']);
    expect(r.stdoutBytes.length).toBe(size);
    expect(sha256(r.stdoutBytes)).toBe(expected.get(mid));
  });

  it('restores by unique id prefix, by "latest" and with --verify-digest', async () => {
    const mid = order[3]!;
    const prefix = shortestUniquePrefix(mid, order);
    expect(await restoreSha(repo, prefix, dir)).toBe(expected.get(mid));
    expect(await restoreSha(repo, 'latest', dir, ['--vm', vm, '--disk', disk])).toBe(expected.get(order.at(-1)!));
    expect(await restoreSha(repo, order[0]!, dir, ['--verify-digest'])).toBe(expected.get(order[0]!));
  });

  it('ends with a clean repository check', async () => {
    const report = await checkRepo(repo);
    expect(report.pointsChecked).toBe(7);
  });
});

function shortestUniquePrefix(id: string, all: string[]): string {
  for (let n = 4; n < id.length; n++) {
    const p = id.slice(0, n);
    if (all.filter((x) => x.startsWith(p)).length === 1) return p;
  }
  return id;
}

async function imagePath(path: string, size: number, seed: string): Promise<string> {
  await makeImage(path, size, seed);
  return path;
}

describe('a disk that grows and shrinks between backups', () => {
  it('restores every size exactly', async () => {
    const repo = join(dir, 'resize-repo');
    const image = join(dir, 'resize.img');
    const vm = 'vm-resize';
    await initRepo(repo);
    const expected = new Map<string, string>();
    const step = async (label: string, extents: Extent[] | null, size: number): Promise<BackupJson> => {
      expect((await fsp.stat(image)).size, label).toBe(size);
      const flags = extents ? ['--changed-extents', await writeJson(join(dir, `resize-${label}.json`), extents)] : [];
      const b = await backupOk(repo, image, vm, ['--disk', 'd', ...flags]);
      expect(b.sizeBytes, label).toBe(size);
      expected.set(b.point, await sha256File(image));
      return b;
    };
    await imagePath(image, 20 * MiB + 777, 'resize');
    await step('full', null, 20 * MiB + 777);
    // Grown by truncate (the new tail reads as zeros); nothing reported as changed.
    await fsp.truncate(image, 27 * MiB + 5);
    await step('grown-zero-tail', [], 27 * MiB + 5);
    // Data written into the grown region and across the old end.
    const tail = { offset: 20 * MiB, length: 7 * MiB + 5 };
    await writeAt(image, tail.offset, seededBytes('tail', tail.length));
    await step('grown-data', [tail], 27 * MiB + 5);
    // Grown again with data, with the extents of the write.
    const more = { offset: 27 * MiB + 5, length: 3 * MiB + 1000 };
    await writeAt(image, more.offset, seededBytes('more', more.length));
    await step('grown-again', [more], 30 * MiB + 1005);
    // Shrunk to a size that is not a chunk multiple, then to one that is.
    await fsp.truncate(image, 13 * MiB + 4321);
    await step('shrunk', [], 13 * MiB + 4321);
    await fsp.truncate(image, 9 * MiB);
    await step('shrunk-aligned', [], 9 * MiB);
    // Grown after a shrink: the re-grown region must be zeros, not old data.
    await fsp.truncate(image, 21 * MiB + 3);
    await step('regrown', [], 21 * MiB + 3);
    // Shrunk with a change inside the new last (short) slot.
    await fsp.truncate(image, 5 * MiB + 100);
    await writeAt(image, 5 * MiB + 10, seededBytes('last', 90));
    await step('shrunk-changed', [{ offset: 5 * MiB + 10, length: 90 }], 5 * MiB + 100);
    await expectRestores(repo, expected, dir);
    await checkRepo(repo);
  });

  it('backs up and restores an empty disk and a disk smaller than one chunk', async () => {
    const repo = join(dir, 'tiny-repo');
    const image = join(dir, 'tiny.img');
    await initRepo(repo);
    await fsp.writeFile(image, Buffer.alloc(0));
    const empty = await backupOk(repo, image, 'vm-tiny');
    expect(empty.sizeBytes).toBe(0);
    await fsp.writeFile(image, seededBytes('tiny', 1000));
    const small = await backupOk(repo, image, 'vm-tiny', ['--changed-extents', await writeJson(join(dir, 'tiny.json'), [{ offset: 0, length: 1000 }])]);
    expect(small).toMatchObject({ mode: 'incremental', sizeBytes: 1000, bytesRead: 1000 });
    await expectRestores(repo, new Map([[empty.point, sha256(Buffer.alloc(0))], [small.point, sha256(seededBytes('tiny', 1000))]]), dir);
    await checkRepo(repo);
  });
});

async function writeAt(path: string, offset: number, data: Buffer): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
  } finally {
    await fh.close();
  }
}

describe('small chunks on compressible data', () => {
  // Many chunks per 32 MiB window and per container: every stage must cope with more
  // chunks in flight than the worker pool queues at once.
  it('backs up, restores and verifies a 40 MiB text-like disk with 256K chunks', async () => {
    const repo = join(dir, 'text-repo');
    const image = join(dir, 'text.img');
    await initRepo(repo, ['--chunk-size', '256K']);
    const sha = await makeTextImage(image, 40 * MiB, 'text');
    const b = await backupOk(repo, image, 'vm-text');
    expect(b.chunksNew).toBe(160);
    // Compressed (the default LZ4 stores this text at about 0.6 of its size, zstd:1 under 0.5).
    expect(b.bytesNew).toBeLessThan(b.rawNew * 0.7);
    expect(await restoreSha(repo, b.point, dir)).toBe(sha);
    await checkRepo(repo);
  });

  it('backs up, restores and verifies a 24 MiB text-like disk with 64K chunks', async () => {
    const repo = join(dir, 'text64-repo');
    const image = join(dir, 'text64.img');
    await initRepo(repo, ['--chunk-size', '64K']);
    const sha = await makeTextImage(image, 24 * MiB, 'text64');
    const b = await backupOk(repo, image, 'vm-text');
    expect(b.chunksNew).toBe(384);
    expect(await restoreSha(repo, b.point, dir)).toBe(sha);
    await checkRepo(repo);
  });
});

describe('codecs and chunk sizes', () => {
  // chunkSize undefined: the default, whatever it is.
  const variants: { name: string; flags: string[]; codec: string; level?: number; chunkSize?: number }[] = [
    { name: 'lz4', flags: ['--compression', 'lz4'], codec: 'lz4' },
    { name: 'zstd:1', flags: ['--compression', 'zstd:1'], codec: 'zstd', level: 1 },
    { name: 'zstd:9', flags: ['--compression', 'zstd:9'], codec: 'zstd', level: 9 },
    { name: 'none', flags: ['--compression', 'none'], codec: 'none' },
    // The default codec is LZ4.
    { name: '64K chunks', flags: ['--chunk-size', '64K'], codec: 'lz4', chunkSize: 64 * KiB },
    { name: '4M chunks', flags: ['--chunk-size', '4M'], codec: 'lz4', chunkSize: 4 * MiB },
  ];

  for (const v of variants) {
    it(`round-trips a full and an incremental backup with ${v.name}`, async () => {
      const slug = v.name.replace(/[^a-z0-9]/gi, '');
      const repo = join(dir, `variant-${slug}`);
      const image = join(dir, `variant-${slug}.img`);
      const init = await initRepo(repo, v.flags);
      expect(init.json).toMatchObject({ format: 2, compression: { codec: v.codec } });
      if (v.chunkSize !== undefined) expect(init.json.chunkSize).toBe(v.chunkSize);
      if (v.level !== undefined) expect(init.json.compression.level).toBe(v.level);
      const size = 14 * MiB + 99_999;
      await imagePath(image, size, `variant-${slug}`);
      const expected = new Map<string, string>();
      const full = await backupOk(repo, image, 'vm-variant');
      expected.set(full.point, await sha256File(image));
      if (v.codec === 'none') expect(full.bytesNew).toBeGreaterThanOrEqual(full.rawNew);
      else expect(full.bytesNew).toBeLessThan(full.rawNew);
      const { extents, sha } = await mutateImage(image, { seed: `variant-${slug}-1`, writes: 12, maxLength: 512 * KiB });
      const inc = await backupOk(repo, image, 'vm-variant', ['--changed-extents', await writeJson(join(dir, `variant-${slug}.json`), extents)]);
      expect(inc.parent).toBe(full.point);
      expected.set(inc.point, sha);
      await expectRestores(repo, expected, dir);
      await checkRepo(repo);
    });
  }
});
