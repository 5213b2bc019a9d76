/**
 * The VHDX and VHD readers against real images written by qemu-img and qemu-io:
 * dynamic and fixed, several sizes (some not a multiple of the block size, one with
 * 1 MiB blocks so that reads cross many block boundaries), data written at scattered
 * offsets with zeroed ranges on top. Each image is read whole and in odd-sized pieces
 * and compared byte for byte with `qemu-img convert -O raw`.
 *
 * Missing qemu-img/qemu-io: fails under CI=true, skipped elsewhere.
 */
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openVhd, openVhdx, openVirtualDisk, type DiskChain } from '../../adapters/hyperv/index.js';
import { describeWithPeers, makeTempDir, run } from '../fixtures/peers.js';

const MiB = 1024 * 1024;

interface Case {
  readonly name: string;
  readonly fmt: 'vhdx' | 'vpc';
  readonly options: string;
  readonly size: number;
  readonly variant: 'dynamic' | 'fixed';
}

const CASES: readonly Case[] = [
  { name: 'vhdx-dyn-odd', fmt: 'vhdx', options: '', size: 10 * MiB + 384 * 512, variant: 'dynamic' },
  { name: 'vhdx-dyn-1m-blocks', fmt: 'vhdx', options: 'block_size=1M', size: 24 * MiB + 4096, variant: 'dynamic' },
  { name: 'vhdx-dyn-64m', fmt: 'vhdx', options: 'block_size=8M', size: 64 * MiB, variant: 'dynamic' },
  { name: 'vhdx-fixed-odd', fmt: 'vhdx', options: 'subformat=fixed', size: 9 * MiB + 512, variant: 'fixed' },
  { name: 'vhdx-fixed-32m', fmt: 'vhdx', options: 'subformat=fixed,block_size=2M', size: 32 * MiB, variant: 'fixed' },
  { name: 'vhd-dyn-odd', fmt: 'vpc', options: 'subformat=dynamic,force_size=on', size: 10 * MiB + 384 * 512, variant: 'dynamic' },
  { name: 'vhd-dyn-40m', fmt: 'vpc', options: 'subformat=dynamic,force_size=on', size: 40 * MiB, variant: 'dynamic' },
  { name: 'vhd-fixed-odd', fmt: 'vpc', options: 'subformat=fixed,force_size=on', size: 7 * MiB + 1536, variant: 'fixed' },
];

/** A small seeded PRNG (mulberry32), so failures reproduce. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Scattered qemu-io writes: patterns at sector-aligned offsets, the last sector, and some zeroed ranges. */
function writes(size: number, seed: number): string[] {
  const rnd = prng(seed);
  const cmds = [`write -P 0x5a 0 4096`, `write -P 0xa5 ${size - 512} 512`];
  for (let i = 0; i < 12; i++) {
    const len = 512 * (1 + Math.floor(rnd() * 4096));
    const off = 512 * Math.floor(rnd() * ((size - len) / 512));
    cmds.push(`write -P 0x${(1 + Math.floor(rnd() * 254)).toString(16)} ${off} ${len}`);
  }
  for (let i = 0; i < 3; i++) {
    const len = 512 * (1 + Math.floor(rnd() * 2048));
    const off = 512 * Math.floor(rnd() * ((size - len) / 512));
    cmds.push(`write -z ${off} ${len}`);
  }
  return cmds;
}

async function readAll(disk: DiskChain): Promise<Buffer> {
  const out = Buffer.alloc(disk.sizeBytes);
  await disk.readInto(out, 0);
  return out;
}

describeWithPeers('hyperv: VHDX and VHD images written by qemu-img', ['qemu-img', 'qemu-io'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  const images = new Map<string, { image: string; raw: Buffer }>();

  beforeAll(async () => {
    dir = await makeTempDir('chunkvault-hyperv-');
    await Promise.all(
      CASES.map(async (c, i) => {
        const image = join(dir.path, `${c.name}.${c.fmt === 'vpc' ? 'vhd' : 'vhdx'}`);
        const opts = c.options ? ['-o', c.options] : [];
        await run('qemu-img', ['create', '-q', '-f', c.fmt, ...opts, image, String(c.size)]);
        await run('qemu-io', ['-f', c.fmt, ...writes(c.size, 0x1000 + i).flatMap((w) => ['-c', w]), image]);
        const raw = join(dir.path, `${c.name}.raw`);
        await run('qemu-img', ['convert', '-f', c.fmt, '-O', 'raw', image, raw]);
        images.set(c.name, { image, raw: await readFile(raw) });
      }),
    );
  });

  afterAll(async () => {
    await dir?.remove();
  });

  for (const c of CASES) {
    it(`${c.name}: reads byte-identical to qemu-img convert`, async () => {
      const { image, raw } = images.get(c.name) as { image: string; raw: Buffer };
      const disk = await (c.fmt === 'vpc' ? openVhd(image) : openVhdx(image));
      try {
        expect(disk.sizeBytes).toBe(c.size);
        expect(raw.length).toBe(c.size);
        expect(disk.layers.map((l) => [l.format, l.variant])).toEqual([[c.fmt === 'vpc' ? 'vhd' : 'vhdx', c.variant]]);
        expect((await readAll(disk)).equals(raw)).toBe(true);
        // Odd-sized pieces at odd offsets, crossing block boundaries.
        const rnd = prng(c.size);
        for (let i = 0; i < 40; i++) {
          const len = 1 + Math.floor(rnd() * 3 * MiB);
          const off = Math.floor(rnd() * (c.size - len));
          const piece = Buffer.alloc(len);
          await disk.readInto(piece, off);
          expect(piece.equals(raw.subarray(off, off + len)), `${len} bytes at ${off}`).toBe(true);
        }
        await expect(disk.readInto(Buffer.alloc(2), c.size - 1)).rejects.toMatchObject({ code: 'SOURCE_TRUNCATED' });
      } finally {
        await disk.close();
        await disk.close(); // idempotent
      }
    });
  }

  // With 512-byte sectors one sector bitmap block covers 4 GiB, so the BAT interleaves
  // a bitmap entry after every 4 GiB of payload entries: only large disks cross it.
  for (const fmt of ['vhdx', 'vpc'] as const) {
    it(`${fmt}: a sparse 6 GiB disk reads right across the 4 GiB chunk boundary`, async () => {
      const size = 6 * 1024 * MiB + 512;
      const G4 = 4 * 1024 * MiB;
      const image = join(dir.path, `big.${fmt}`);
      const raw = join(dir.path, `big-${fmt}.raw`);
      const opts = fmt === 'vpc' ? ['-o', 'subformat=dynamic,force_size=on'] : ['-o', 'block_size=32M'];
      await run('qemu-img', ['create', '-q', '-f', fmt, ...opts, image, String(size)]);
      const w = [`write -P 0x61 ${G4 - 3 * MiB} ${6 * MiB}`, `write -P 0x62 ${G4 + 40 * MiB} 4096`, `write -P 0x63 ${size - 1024} 1024`, 'write -P 0x64 0 512'];
      await run('qemu-io', ['-f', fmt, ...w.flatMap((c) => ['-c', c]), image]);
      await run('qemu-img', ['convert', '-f', fmt, '-O', 'raw', image, raw]);
      const disk = await openVirtualDisk(image);
      const rawFile = await open(raw, 'r');
      try {
        expect(disk.sizeBytes).toBe(size);
        const ranges: [number, number][] = [[0, MiB], [G4 - 4 * MiB, 8 * MiB], [G4 + 39 * MiB, 2 * MiB], [size - 3 * MiB, 3 * MiB], [5 * 1024 * MiB, MiB]];
        for (const [off, len] of ranges) {
          const got = Buffer.alloc(len);
          const want = Buffer.alloc(len);
          await disk.readInto(got, off);
          await rawFile.read(want, 0, len, off);
          expect(got.equals(want), `${len} bytes at ${off}`).toBe(true);
        }
      } finally {
        await rawFile.close();
        await disk.close();
        await rm(raw, { force: true });
      }
    });
  }

  it('openVirtualDisk detects each format, and raw files', async () => {
    for (const c of CASES) {
      const disk = await openVirtualDisk((images.get(c.name) as { image: string }).image);
      expect(disk.describe()).toContain(c.fmt === 'vpc' ? 'vhd ' : 'vhdx ');
      await disk.close();
    }
    const raw = await openVirtualDisk(join(dir.path, 'vhdx-dyn-odd.raw'));
    expect(raw.describe()).toMatch(/^raw:/);
    expect(raw.sizeBytes).toBe(CASES[0]?.size);
    await raw.close();
  });

  it('refuses a format mismatch and a missing file with typed errors', async () => {
    const vhd = (images.get('vhd-dyn-odd') as { image: string }).image;
    await expect(openVhdx(vhd)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', details: { reason: 'wrong-format' } });
    await expect(openVirtualDisk(join(dir.path, 'nope.vhdx'))).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND' });
  });
});
