/**
 * VHDX parsing and reading against files from the spec-based fixture builder
 * (test/hyperv/_builders.ts): property round-trips of headers, region table, metadata
 * and BAT, a model-checked read of random block states, and corrupt inputs that must
 * give typed errors, never bytes.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildVhdx, guidBytes, resealCrc, type VhdxBlock, type VhdxSpec } from '../../test/hyperv/_builders.js';
import {
  GUID,
  VHDX,
  batEntry,
  batGeometry,
  checkRegions,
  guidToBytes,
  guidToString,
  parseMetadata,
  parseRegionTable,
  pickHeader,
} from './_vhdx-format.js';
import { openVhdx, openVirtualDisk } from './index.js';

const MiB = 1024 * 1024;
let dir: string;
let serial = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'chunkvault-vhdx-unit-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function put(file: Buffer): Promise<string> {
  const path = join(dir, `f${++serial}.vhdx`);
  await writeFile(path, file);
  return path;
}

const sectorSize = fc.constantFrom(512, 4096);
const blockSize = fc.integer({ min: 20, max: 28 }).map((e) => 2 ** e);
const guidArb = fc.uuid().map((u) => `{${u}}`);

describe('GUIDs', () => {
  it('round-trip between text and the mixed-endian byte form', () => {
    fc.assert(
      fc.property(guidArb, (g) => {
        expect(guidToString(guidToBytes(g))).toBe(g);
        expect(guidToBytes(g).equals(guidBytes(g))).toBe(true);
      }),
    );
    expect(guidToString(guidBytes(GUID.BAT_REGION))).toBe(GUID.BAT_REGION);
  });
});

describe('VHDX structures round-trip through the fixture builder', () => {
  it('headers, region table, metadata and BAT geometry', () => {
    fc.assert(
      fc.property(
        sectorSize,
        blockSize,
        fc.integer({ min: 1, max: 2 ** 20 }),
        fc.boolean(),
        guidArb,
        fc.tuple(fc.nat({ max: 1000 }), fc.nat({ max: 1000 })),
        (lss, bs, sectors, hasParent, dwg, sequence) => {
          const spec: VhdxSpec = {
            virtualSize: sectors * lss * 16,
            blockSize: bs,
            logicalSectorSize: lss,
            dataWriteGuid: dwg,
            sequence,
            ...(hasParent ? { parent: { parent_linkage: dwg, relative_path: '..\\p.vhdx' } } : {}),
          };
          const { file, layout } = buildVhdx(spec);
          const header = pickHeader(file.subarray(VHDX.HEADER1_OFFSET), file.subarray(VHDX.HEADER2_OFFSET));
          expect(header.sequenceNumber).toBe(BigInt(Math.max(...sequence)));
          expect(header.dataWriteGuid).toBe(dwg);
          expect(header.logGuid).toBe(GUID.ZERO);
          const regions = checkRegions(parseRegionTable(file.subarray(VHDX.REGION1_OFFSET)) ?? [], file.length);
          const meta = parseMetadata(file.subarray(regions.metadata.fileOffset, regions.metadata.fileOffset + regions.metadata.length));
          expect(meta).toMatchObject({ blockSize: bs, virtualSize: spec.virtualSize, logicalSectorSize: lss, hasParent });
          expect(meta.parentLocator?.get('relative_path')).toBe(hasParent ? '..\\p.vhdx' : undefined);
          const geo = batGeometry(meta);
          expect(geo.chunkRatio).toBe(layout.chunkRatio);
          expect(geo.totalEntries).toBe(layout.totalEntries);
          expect(regions.bat.length).toBeGreaterThanOrEqual(geo.totalEntries * 8);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('BAT entries: state and file offset', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.nat({ max: 40 }), { maxLength: 6 }), fc.constantFrom('full' as const, 'zero' as const, 'unmapped' as const, 'undefined' as const), (indexes, state) => {
        const blocks = indexes.map((index) => (state === 'full' ? { index, state, data: Buffer.alloc(1) } : { index, state })) as VhdxBlock[];
        const { file, layout } = buildVhdx({ virtualSize: 41 * MiB, blockSize: MiB, blocks });
        const bat = file.subarray(layout.batOffset);
        const expectedState = { full: 6, zero: 2, unmapped: 3, undefined: 1 }[state];
        indexes.forEach((index, n) => {
          const e = batEntry(bat, layout.batIndex(index));
          expect(e.state).toBe(expectedState);
          if (state === 'full') expect(e.fileOffset).toBe(layout.batOffset + MiB + n * MiB);
        });
      }),
      { numRuns: 40 },
    );
  });
});

describe('VhdxReader reads', () => {
  it('random block states match a model (no parent: absent blocks read as zeros)', async () => {
    const states = fc.constantFrom('full', 'zero', 'unmapped', 'undefined', 'not-present', 'absent');
    await fc.assert(
      fc.asyncProperty(fc.array(states, { minLength: 1, maxLength: 7 }), fc.integer({ min: 1, max: 2047 }), fc.nat(), async (kinds, tail, seed) => {
        const size = (kinds.length - 1) * MiB + tail * 512;
        const blocks: VhdxBlock[] = [];
        const expected = Buffer.alloc(size);
        kinds.forEach((kind, index) => {
          if (kind === 'absent') return;
          if (kind !== 'full') return blocks.push({ index, state: kind as 'zero' });
          const data = Buffer.alloc(MiB, (index * 37 + seed) & 0xff);
          data.writeUInt32LE(seed, 0);
          data.copy(expected, index * MiB, 0, Math.min(MiB, size - index * MiB));
          blocks.push({ index, state: 'full', data });
        });
        const disk = await openVhdx(await put(buildVhdx({ virtualSize: size, blockSize: MiB, blocks }).file));
        try {
          expect(disk.sizeBytes).toBe(size);
          const got = Buffer.alloc(size);
          await disk.readInto(got, 0);
          expect(got.equals(expected)).toBe(true);
          const off = seed % size;
          const piece = Buffer.alloc(Math.min(size - off, 3 * MiB / 2));
          await disk.readInto(piece, off);
          expect(piece.equals(expected.subarray(off, off + piece.length))).toBe(true);
        } finally {
          await disk.close();
        }
      }),
      { numRuns: 25 },
    );
  });

  it('describes fixed and dynamic files', async () => {
    const fixed = await openVhdx(await put(buildVhdx({ virtualSize: MiB, blockSize: MiB, leaveBlockAllocated: true, blocks: [{ index: 0, state: 'full', data: Buffer.alloc(MiB, 7) }] }).file));
    expect(fixed.describe()).toMatch(/^vhdx fixed:/);
    expect(fixed.layers[0]?.logicalSectorSize).toBe(512);
    await fixed.close();
  });
});

describe('VhdxReader refuses malformed files with typed errors', () => {
  const base = (): ReturnType<typeof buildVhdx> =>
    buildVhdx({ virtualSize: 4 * MiB, blockSize: MiB, blocks: [{ index: 1, state: 'full', data: Buffer.alloc(MiB, 1) }] });

  async function expectReason(file: Buffer, reason: string, code = 'SOURCE_READ_FAILED'): Promise<void> {
    await expect(openVhdx(await put(file))).rejects.toMatchObject({ code, details: { reason, format: 'vhdx' } });
  }

  it('bad file type identifier (also through format detection: never served as raw)', async () => {
    const { file } = base();
    file.write('vhdxfilX', 0, 'latin1');
    await expectReason(file, 'bad-signature');
    await expect(openVirtualDisk(await put(file))).rejects.toMatchObject({ details: { reason: 'bad-signature' } });
  });

  it('header checksum mismatch: the other header is used; both bad is an error', async () => {
    const { file } = base();
    file[VHDX.HEADER2_OFFSET + 200] = 1; // header 2 (higher sequence) now fails its CRC
    const disk = await openVhdx(await put(file));
    await disk.close();
    file[VHDX.HEADER1_OFFSET + 200] = 1;
    await expectReason(file, 'no-valid-header');
  });

  it('a higher-sequence header wins', () => {
    const { file } = buildVhdx({ virtualSize: MiB, blockSize: MiB, sequence: [9, 3] });
    expect(pickHeader(file.subarray(VHDX.HEADER1_OFFSET), file.subarray(VHDX.HEADER2_OFFSET)).sequenceNumber).toBe(9n);
  });

  it('region tables: both corrupt, unknown required region', async () => {
    const { file } = base();
    file[VHDX.REGION1_OFFSET + 100] = 1;
    await openVhdx(await put(file)).then((d) => d.close()); // table 2 still good
    file[VHDX.REGION2_OFFSET + 100] = 1;
    await expectReason(file, 'no-valid-region-table');
    const other = base().file;
    for (const at of [VHDX.REGION1_OFFSET, VHDX.REGION2_OFFSET]) {
      other.writeUInt32LE(3, at + 8);
      guidBytes('{12345678-1234-1234-1234-123456789abc}').copy(other, at + 16 + 64);
      other.writeBigUInt64LE(BigInt(MiB), at + 16 + 80);
      other.writeUInt32LE(MiB, at + 16 + 88);
      other.writeUInt32LE(1, at + 16 + 92);
      resealCrc(other, at, VHDX.REGION_TABLE_SIZE);
    }
    await expectReason(other, 'unknown-required-region');
  });

  it('block size and sector size out of spec', async () => {
    await expectReason(buildVhdx({ virtualSize: 4 * MiB, blockSize: 512 * 1024 }).file, 'block-size-invalid');
    await expectReason(buildVhdx({ virtualSize: 4 * MiB, blockSize: 3 * MiB }).file, 'block-size-invalid');
    await expectReason(buildVhdx({ virtualSize: 4 * MiB, blockSize: MiB, logicalSectorSize: 1024 }).file, 'sector-size-invalid');
    await expectReason(buildVhdx({ virtualSize: 4 * MiB + 100, blockSize: MiB }).file, 'virtual-size-invalid');
  });

  it('BAT entries beyond the end of the file, invalid states', async () => {
    const { file, layout } = base();
    const at = layout.batOffset + layout.batIndex(2) * 8;
    file.writeBigUInt64LE(6n | (BigInt(file.length / MiB) << 20n), at);
    await expectReason(file, 'bat-beyond-eof');
    file.writeBigUInt64LE(7n | (BigInt(4) << 20n), at);
    await expectReason(file, 'bat-entry-invalid'); // PARTIALLY_PRESENT without a parent
    file.writeBigUInt64LE(4n, at);
    await expectReason(file, 'bat-entry-invalid'); // state 4 is undefined
    file.writeBigUInt64LE(6n, at);
    await expectReason(file, 'bat-entry-invalid'); // a block in the header area
    file.writeBigUInt64LE(6n | (3n << 20n), at);
    await expectReason(file, 'bat-entry-invalid'); // a block over the BAT region
    file.writeBigUInt64LE(file.readBigUInt64LE(layout.batOffset + layout.batIndex(1) * 8), at);
    await expectReason(file, 'bat-entry-invalid'); // two blocks at one offset
  });

  it('truncated files', async () => {
    const { file } = base();
    await expectReason(file.subarray(0, file.length - MiB / 2), 'bat-beyond-eof');
    await expectReason(file.subarray(0, 100 * 1024), 'truncated', 'SOURCE_TRUNCATED');
    await expectReason(file.subarray(0, 2 * MiB + 4096), 'region-beyond-eof');
  });

  it('metadata: bad signature, missing required item', async () => {
    const { file } = base();
    file.write('metadatX', 2 * MiB, 'latin1');
    await expectReason(file, 'bad-metadata-signature');
    const other = base().file;
    other.writeUInt16LE(1, 2 * MiB + 10); // keep only the file parameters item
    await expectReason(other, 'metadata-missing');
  });
});

describe('VHDX log replay (in memory)', () => {
  const LOG = '{01234567-89ab-cdef-0123-456789abcdef}';
  const page = (v: number): Buffer => Buffer.alloc(4096, v);

  /**
   * The file as it is after replay: block 1 full of 0x01, block 2 full of 0x02. The
   * file on disk has block 2's BAT entry still NOT_PRESENT (the BAT page with the new
   * entry sits only in the log), as after a crash between log flush and BAT write.
   */
  function crashed(entries: (batPage: { offset: number; data: Buffer }) => VhdxSpec['log']): { file: Buffer; expected: Buffer } {
    const blocks: VhdxBlock[] = [
      { index: 1, state: 'full', data: Buffer.alloc(MiB, 1) },
      { index: 2, state: 'full', data: Buffer.alloc(MiB, 2) },
    ];
    const after = buildVhdx({ virtualSize: 4 * MiB, blockSize: MiB, blocks });
    const batPage = { offset: after.layout.batOffset, data: Buffer.from(after.file.subarray(after.layout.batOffset, after.layout.batOffset + 4096)) };
    const { file, layout } = buildVhdx({ virtualSize: 4 * MiB, blockSize: MiB, blocks, logGuid: LOG, log: entries(batPage) });
    file.writeBigUInt64LE(0n, layout.batOffset + layout.batIndex(2) * 8);
    const expected = Buffer.alloc(4 * MiB);
    expected.fill(1, MiB, 2 * MiB);
    expected.fill(2, 2 * MiB, 3 * MiB);
    return { file, expected };
  }

  async function readWhole(file: Buffer): Promise<{ bytes: Buffer; describe: string }> {
    const disk = await openVhdx(await put(file));
    try {
      const bytes = Buffer.alloc(disk.sizeBytes);
      await disk.readInto(bytes, 0);
      return { bytes, describe: disk.describe() };
    } finally {
      await disk.close();
    }
  }

  it('replays BAT and data writes and zero descriptors, in sequence order', async () => {
    const blockStart = 4 * MiB; // block 1's data: after head, log, metadata and BAT (1 MiB each)
    const { file, expected } = crashed((bat) => [
      { sequence: 7, writes: [bat, { offset: blockStart, data: page(0xaa) }, { offset: blockStart + 8192, zeroLength: 8192 }] },
      { sequence: 8, writes: [{ offset: blockStart + 4096, data: page(0xbb) }, { offset: blockStart, data: page(0xcc) }] },
    ]);
    expected.fill(0xcc, MiB, MiB + 4096);
    expected.fill(0xbb, MiB + 4096, MiB + 8192);
    expected.fill(0, MiB + 8192, MiB + 16384);
    const got = await readWhole(file);
    expect(got.describe).toContain('2 entries replayed');
    expect(got.bytes.equals(expected)).toBe(true);
  });

  it('a torn (bad checksum) head entry is not replayed: the previous sequence is', async () => {
    const blockStart = 4 * MiB;
    const { file, expected } = crashed((bat) => [
      { sequence: 7, writes: [bat] },
      { sequence: 8, writes: [{ offset: blockStart, data: page(0xcc) }] },
    ]);
    file[MiB + 8192 + 200] ^= 1; // inside entry 2 (entry 1 is 2 sectors)
    const got = await readWhole(file);
    expect(got.describe).toContain('1 entries replayed');
    expect(got.bytes.equals(expected)).toBe(true);
  });

  it('an empty log replays nothing; an entry with another LogGuid is ignored', async () => {
    const { file } = buildVhdx({ virtualSize: MiB, blockSize: MiB, logGuid: LOG });
    expect((await readWhole(file)).bytes.equals(Buffer.alloc(MiB))).toBe(true);
    const { file: other, expected } = crashed((bat) => [{ sequence: 3, writes: [bat] }]);
    other.writeUInt32LE(0xdead, MiB + 32); // LogGuid of the entry
    const got = await readWhole(other);
    expected.fill(0, 2 * MiB, 3 * MiB); // block 2 stays NOT_PRESENT
    expect(got.bytes.equals(expected)).toBe(true);
  });

  it('refuses a file shorter than the log says it must be, and bad log placement', async () => {
    const { file } = crashed((bat) => [{ sequence: 7, writes: [bat], flushedFileOffset: 64 * MiB }]);
    await expect(openVhdx(await put(file))).rejects.toMatchObject({ code: 'SOURCE_TRUNCATED', details: { reason: 'log-file-truncated' } });
    const bad = buildVhdx({ virtualSize: MiB, blockSize: MiB, logGuid: LOG }).file;
    for (const at of [VHDX.HEADER1_OFFSET, VHDX.HEADER2_OFFSET]) {
      bad.writeBigUInt64LE(12345n, at + 72);
      resealCrc(bad, at, VHDX.HEADER_SIZE);
    }
    await expect(openVhdx(await put(bad))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'log-invalid' } });
  });
});

describe('VHDX differencing chains from the builder (model-checked)', () => {
  const kind = fc.constantFrom('full', 'partial', 'zero', 'not-present', 'absent');
  it('child blocks over a parent, 512- and 4096-byte sectors, different block sizes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(512, 4096), fc.array(kind, { minLength: 3, maxLength: 3 }), fc.nat(), async (lss, kinds, seed) => {
        const size = 5 * MiB + 3 * lss; // parent: 1 MiB blocks; child: 2 MiB blocks
        const parentBlocks: VhdxBlock[] = [0, 2, 3, 5].map((index) => ({ index, state: 'full', data: Buffer.alloc(MiB, 0x10 + index) }));
        const parentGuid = '{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}';
        const name = `parent${++serial}.vhdx`;
        await writeFile(join(dir, name), buildVhdx({ virtualSize: size, blockSize: MiB, logicalSectorSize: lss, dataWriteGuid: parentGuid, blocks: parentBlocks }).file);
        const expected = Buffer.alloc(size);
        for (const b of parentBlocks) if (b.state === 'full') b.data.copy(expected, b.index * MiB, 0, Math.min(MiB, size - b.index * MiB));
        const sectors = (2 * MiB) / lss;
        const blocks: VhdxBlock[] = [];
        kinds.forEach((k, index) => {
          const data = Buffer.alloc(2 * MiB, 0x80 + index + (seed % 7));
          const start = index * 2 * MiB;
          const end = Math.min(size, start + 2 * MiB);
          if (k === 'full') {
            blocks.push({ index, state: 'full', data });
            data.copy(expected, start, 0, end - start);
          } else if (k === 'partial') {
            const present = Array.from({ length: sectors }, (_, s) => (s * 7 + seed) % 5 < 2);
            blocks.push({ index, state: 'partial', data, present });
            present.forEach((p, s) => {
              if (p && start + s * lss < end) data.copy(expected, start + s * lss, s * lss, (s + 1) * lss);
            });
          } else if (k === 'zero') {
            blocks.push({ index, state: 'zero' });
            expected.fill(0, start, end);
          } else if (k === 'not-present') blocks.push({ index, state: 'not-present' });
        });
        const child = buildVhdx({ virtualSize: size, blockSize: 2 * MiB, logicalSectorSize: lss, parent: { parent_linkage: parentGuid, relative_path: name }, blocks });
        const disk = await openVirtualDisk(await put(child.file));
        try {
          const got = Buffer.alloc(size);
          await disk.readInto(got, 0);
          expect(got.equals(expected)).toBe(true);
          expect(disk.layers.map((l) => l.logicalSectorSize)).toEqual([lss, lss]);
        } finally {
          await disk.close();
        }
      }),
      { numRuns: 20 },
    );
  });

  it('refuses a parent with another sector size', async () => {
    const parentGuid = '{aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee}';
    await writeFile(join(dir, 'p4k.vhdx'), buildVhdx({ virtualSize: 4 * MiB, blockSize: MiB, logicalSectorSize: 4096, dataWriteGuid: parentGuid }).file);
    const child = buildVhdx({ virtualSize: 4 * MiB, blockSize: MiB, parent: { parent_linkage: parentGuid, relative_path: 'p4k.vhdx' } });
    await expect(openVirtualDisk(await put(child.file))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'parent-sector-size-mismatch' } });
  });
});
