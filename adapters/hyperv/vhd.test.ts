/**
 * VHD parsing and reading against files from the spec-based fixture builder: model
 * checks of dynamic and differencing reads (random blocks and sector bitmaps, a
 * builder-made dynamic parent), checksum verification, and corrupt inputs.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildVhd, onesComplement } from '../../test/hyperv/_builders.js';
import { parseDynamicHeader, parseFooter, vhdChecksum } from './_vhd-format.js';
import { openVhd, openVirtualDisk } from './index.js';

const KiB = 1024;
let dir: string;
let serial = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chunkvault-vhd-unit-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function put(file: Buffer, name = `f${++serial}.vhd`): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, file);
  return path;
}

async function readAll(path: string): Promise<Buffer> {
  const disk = await openVirtualDisk(path);
  try {
    const out = Buffer.alloc(disk.sizeBytes);
    for (let off = 0; off < out.length; off += 100_000) await disk.readInto(out.subarray(off, Math.min(out.length, off + 100_000)), off);
    return out;
  } finally {
    await disk.close();
  }
}

const fill = (len: number, seed: number): Buffer => Buffer.from(Array.from({ length: len }, (_, i) => (i * 31 + seed * 7) & 0xff));

describe('VHD structures', () => {
  it('footer and dynamic header round-trip through the builder', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 2 ** 24 }), fc.integer({ min: 9, max: 28 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), (sectors, shift, id) => {
        const uniqueId = Buffer.from(id).toString('hex');
        const { file, layout } = buildVhd({ size: sectors * 512, type: 'dynamic', blockSize: 2 ** shift, uniqueId });
        const footer = parseFooter(file.subarray(file.length - 512));
        expect(footer).toEqual({ dataOffset: 512, currentSize: sectors * 512, diskType: 3, uniqueId });
        const header = parseDynamicHeader(file.subarray(layout.headerOffset));
        expect(header).toMatchObject({ tableOffset: 1536, blockSize: 2 ** shift, maxTableEntries: Math.ceil((sectors * 512) / 2 ** shift) });
      }),
      { numRuns: 50 },
    );
  });

  it('checksum is the one\'s complement of the byte sum without the field', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 68, maxLength: 600 }), (data) => {
        const zeroed = Uint8Array.from(data).fill(0, 64, 68);
        expect(vhdChecksum(data, 64)).toBe(onesComplement(zeroed));
      }),
    );
  });
});

describe('VhdReader reads', () => {
  it('fixed and dynamic disks match a model', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 300 }), fc.uniqueArray(fc.nat({ max: 9 }), { maxLength: 5 }), async (tailSectors, indexes) => {
        const bs = 64 * KiB;
        const size = 9 * bs + tailSectors * 512;
        const expected = Buffer.alloc(size);
        const blocks = indexes.map((index) => ({ index, data: fill(bs, index + 1) }));
        for (const b of blocks) b.data.copy(expected, b.index * bs, 0, Math.min(bs, size - b.index * bs));
        expect((await readAll(await put(buildVhd({ size, type: 'dynamic', blockSize: bs, blocks }).file))).equals(expected)).toBe(true);
        expect((await readAll(await put(buildVhd({ size, type: 'fixed', data: expected }).file))).equals(expected)).toBe(true);
      }),
      { numRuns: 20 },
    );
  });

  it('differencing disks: child sectors by bitmap, the rest from the parent', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.nat({ max: 7 }), fc.array(fc.boolean(), { minLength: 64, maxLength: 64 })), { maxLength: 4 }), fc.nat(), async (childSpec, seed) => {
        const bs = 32 * KiB;
        const size = 7 * bs + 5 * 512;
        const parentBlocks = [0, 2, 5, 7].map((index) => ({ index, data: fill(bs, index + seed) }));
        const parentPath = await put(buildVhd({ size, type: 'dynamic', blockSize: bs, uniqueId: 'cd'.repeat(16), blocks: parentBlocks }).file, `p${++serial}.vhd`);
        const expected = await readAll(parentPath);
        const seen = new Set<number>();
        const blocks = childSpec.filter(([i]) => !seen.has(i) && seen.add(i)).map(([index, present]) => ({ index, data: fill(bs, 100 + index), present }));
        for (const b of blocks) {
          b.present.forEach((p, s) => {
            const at = b.index * bs + s * 512;
            if (p && at < size) b.data.copy(expected, at, s * 512, (s + 1) * 512);
          });
        }
        const name = parentPath.split('/').pop() as string;
        const child = buildVhd({ size, type: 'differencing', blockSize: bs, parent: { uniqueId: 'cd'.repeat(16), name, locators: [{ code: 'W2ru', text: `.\\${name}` }] }, blocks });
        expect((await readAll(await put(child.file))).equals(expected)).toBe(true);
      }),
      { numRuns: 20 },
    );
  });

  it('uses the footer copy when the end footer is damaged', async () => {
    const { file } = buildVhd({ size: 128 * KiB, type: 'dynamic', blockSize: 64 * KiB, blocks: [{ index: 1, data: fill(64 * KiB, 3) }] });
    file.write('XXXXXXXX', file.length - 512, 'latin1');
    const got = await readAll(await put(file));
    expect(got.subarray(64 * KiB).equals(fill(64 * KiB, 3))).toBe(true);
  });
});

describe('VhdReader refuses malformed files with typed errors', () => {
  const base = (): ReturnType<typeof buildVhd> => buildVhd({ size: 256 * KiB, type: 'dynamic', blockSize: 64 * KiB, blocks: [{ index: 1, data: fill(64 * KiB, 1) }] });

  async function expectReason(file: Buffer, reason: string, code = 'SOURCE_READ_FAILED'): Promise<void> {
    await expect(openVhd(await put(file))).rejects.toMatchObject({ code, details: { reason, format: 'vhd' } });
  }

  it('footer checksum mismatch', async () => {
    const { file } = base();
    file[file.length - 512 + 100] ^= 1;
    await expectReason(file, 'checksum-mismatch');
  });

  it('dynamic header: checksum mismatch, bad cookie, block size', async () => {
    const { file, layout } = base();
    file[layout.headerOffset + 300] ^= 1;
    await expectReason(file, 'checksum-mismatch');
    const bad = base().file;
    bad.write('cxsparsX', 512, 'latin1');
    await expectReason(bad, 'bad-signature');
    const bs = base().file;
    bs.writeUInt32BE(3000, 512 + 32);
    bs.writeUInt32BE(0, 512 + 36);
    bs.writeUInt32BE(onesComplement(bs.subarray(512, 1536)), 512 + 36);
    await expectReason(bs, 'block-size-invalid');
  });

  it('BAT entries beyond the end of the file; truncated files', async () => {
    const { file, layout } = base();
    file.writeUInt32BE(file.length / 512 + 10, layout.batOffset + 2 * 4);
    await expectReason(file, 'bat-beyond-eof');
    file.writeUInt32BE(3, layout.batOffset + 2 * 4); // sector 3: inside the dynamic header
    await expectReason(file, 'bat-entry-invalid');
    file.writeUInt32BE(file.readUInt32BE(layout.batOffset + 4), layout.batOffset + 2 * 4); // same block twice
    await expectReason(file, 'bat-entry-invalid');
    const fixed = buildVhd({ size: 64 * KiB, type: 'fixed' }).file;
    const cut = Buffer.concat([fixed.subarray(0, 1024), fixed.subarray(fixed.length - 512)]);
    await expectReason(cut, 'truncated');
    const dyn = base().file;
    await expectReason(Buffer.concat([dyn.subarray(0, 40 * KiB), dyn.subarray(dyn.length - 512)]), 'bat-beyond-eof');
  });

  it('no footer at all; unknown disk type', async () => {
    await expect(openVhd(await put(Buffer.alloc(4096)))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'bad-signature' } });
    const { file } = base();
    const footer = file.subarray(file.length - 512);
    footer.writeUInt32BE(5, 60);
    footer.writeUInt32BE(0, 64);
    footer.writeUInt32BE(onesComplement(footer), 64);
    await expectReason(file, 'disk-type-unsupported');
  });
});
