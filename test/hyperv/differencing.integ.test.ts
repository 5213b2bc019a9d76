/**
 * Differencing VHDX and VHD chains. qemu-img cannot create differencing images, so
 * each child here is built by `_builders.ts` from the published specifications on top
 * of a parent written by qemu-img/qemu-io:
 *
 * - child.avhdx (VHDX, 1 MiB blocks, parent with 2 MiB blocks): block 0 FULLY_PRESENT,
 *   block 3 PARTIALLY_PRESENT with a sector bitmap (every third sector plus a 40-sector
 *   run), block 5 ZERO, block 7 NOT_PRESENT, the short last block FULLY_PRESENT. Parent
 *   locator: parent_linkage = the parent's DataWriteGuid (read from the parent's header
 *   bytes here, not by the reader), relative_path `.\parent.vhdx`, absolute_win32_path.
 * - grand.avhdx on top of child.avhdx: block 3 PARTIALLY_PRESENT with a different
 *   bitmap, block 4 FULLY_PRESENT; locator with an absolute Windows path only (mapped to
 *   the child's directory).
 * - child.vhd (VHD, 512 KiB blocks) on a qemu-img dynamic VHD: block 0 all sectors
 *   present, block 3 partly present; locators W2ku and W2ru; ParentUniqueId = the
 *   parent's footer UniqueId (read from its bytes here).
 *
 * The expected image is computed independently: the parent's `qemu-img convert -O raw`
 * bytes, overlaid with each child's sectors where its BAT/bitmap says so.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { openVirtualDisk } from '../../adapters/hyperv/index.js';
import { describeWithPeers, makeTempDir, run } from '../fixtures/peers.js';
import { buildVhd, buildVhdx, type VhdxBlock } from './_builders.js';

const MiB = 1024 * 1024;
const SIZE = 10 * MiB + 384 * 512; // not a multiple of any block size used here

/** DataWriteGuid of the current header of a VHDX, read straight from its bytes. */
function dataWriteGuid(file: Buffer): string {
  const seq = (at: number): bigint => (file.toString('latin1', at, at + 4) === 'head' ? file.readBigUInt64LE(at + 8) : -1n);
  const at = seq(128 * 1024) > seq(64 * 1024) ? 128 * 1024 : 64 * 1024;
  const g = file.subarray(at + 32, at + 48);
  const h = (a: number, b: number, rev: boolean): string => {
    const s = Buffer.from(g.subarray(a, b));
    return (rev ? s.reverse() : s).toString('hex');
  };
  return `{${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}}`;
}

function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  for (let i = 0; i < length; i += 4) b.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  return b;
}

/** Applies a child's blocks to `image` (the expected bytes of its parent). */
function overlayVhdx(image: Buffer, blocks: readonly VhdxBlock[], blockSize: number, sector = 512): void {
  for (const b of blocks) {
    const start = b.index * blockSize;
    const end = Math.min(image.length, start + blockSize);
    if (b.state === 'full') b.data.copy(image, start, 0, end - start);
    else if (b.state === 'zero' || b.state === 'unmapped' || b.state === 'undefined') image.fill(0, start, end);
    else if (b.state === 'partial') {
      b.present.forEach((p, s) => {
        if (p && start + s * sector < end) b.data.copy(image, start + s * sector, s * sector, (s + 1) * sector);
      });
    }
  }
}

function bitmapOf(sectors: number, pick: (s: number) => boolean): boolean[] {
  return Array.from({ length: sectors }, (_, s) => pick(s));
}

async function readAll(path: string, options = {}): Promise<{ bytes: Buffer; describe: string; layers: number }> {
  const disk = await openVirtualDisk(path, options);
  try {
    const bytes = Buffer.alloc(disk.sizeBytes);
    // Read in uneven pieces so that segments cross block and chunk boundaries.
    for (let off = 0, step = 777 * 1024 + 512; off < bytes.length; off += step) {
      await disk.readInto(bytes.subarray(off, Math.min(bytes.length, off + step)), off);
    }
    return { bytes, describe: disk.describe(), layers: disk.layers.length };
  } finally {
    await disk.close();
  }
}

describeWithPeers('hyperv: differencing VHDX and VHD chains', ['qemu-img', 'qemu-io'], () => {
  let dir: { path: string; remove: () => Promise<void> };
  let parentRaw: Buffer;
  let vhdParentRaw: Buffer;
  let expectedChild: Buffer;
  let parentGuid: string;
  const childBlocks: VhdxBlock[] = [
    { index: 0, state: 'full', data: pattern(MiB, 0x100) },
    { index: 3, state: 'partial', data: pattern(MiB, 0x300), present: bitmapOf(2048, (s) => s % 3 === 0 || (s >= 1000 && s < 1040)) },
    { index: 5, state: 'zero' },
    { index: 7, state: 'not-present' },
    { index: 10, state: 'full', data: pattern(MiB, 0xa00) },
  ];
  const childGuid = '{0badc0de-1111-4222-8333-444455556666}';

  beforeAll(async () => {
    dir = await makeTempDir('chunkvault-hyperv-diff-');
    const p = (name: string): string => join(dir.path, name);
    await run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=2M', p('parent.vhdx'), String(SIZE)]);
    await run('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x11 0 5M', '-c', 'write -P 0x22 7M 1M', '-c', `write -P 0x33 ${SIZE - 4096} 4096`, p('parent.vhdx')]);
    await run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', p('parent.vhdx'), p('parent.raw')]);
    parentRaw = await readFile(p('parent.raw'));
    parentGuid = dataWriteGuid(await readFile(p('parent.vhdx')));
    const parent = { parent_linkage: parentGuid, relative_path: '.\\parent.vhdx', absolute_win32_path: 'C:\\Hyper-V\\Disks\\parent.vhdx' };
    await writeFile(p('child.avhdx'), buildVhdx({ virtualSize: SIZE, blockSize: MiB, dataWriteGuid: childGuid, parent, blocks: childBlocks }).file);
    expectedChild = Buffer.from(parentRaw);
    overlayVhdx(expectedChild, childBlocks, MiB);

    await run('qemu-img', ['create', '-q', '-f', 'vpc', '-o', 'subformat=dynamic,force_size=on', p('parent.vhd'), String(SIZE)]);
    await run('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x44 0 3M', '-c', `write -P 0x55 ${SIZE - 8192} 8192`, p('parent.vhd')]);
    await run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', p('parent.vhd'), p('parent-vhd.raw')]);
    vhdParentRaw = await readFile(p('parent-vhd.raw'));
  });

  afterAll(async () => {
    await dir?.remove();
  });

  it('reads a VHDX child over a qemu-img parent as parent + child sectors', async () => {
    const got = await readAll(join(dir.path, 'child.avhdx'));
    expect(got.layers).toBe(2);
    expect(got.describe).toMatch(/vhdx differencing:.*child\.avhdx <- vhdx dynamic:.*parent\.vhdx/);
    expect(got.bytes.equals(expectedChild)).toBe(true);
    // Sanity of the fixture itself: the child changed something, and kept some parent bytes.
    expect(got.bytes.equals(parentRaw)).toBe(false);
    expect(got.bytes.subarray(7 * MiB, 8 * MiB).equals(parentRaw.subarray(7 * MiB, 8 * MiB))).toBe(true);
  });

  it('reads a three-layer chain, the grandchild naming its parent by an absolute Windows path', async () => {
    const blocks: VhdxBlock[] = [
      { index: 3, state: 'partial', data: pattern(MiB, 0x3300), present: bitmapOf(2048, (s) => s % 5 === 1) },
      { index: 4, state: 'full', data: pattern(MiB, 0x4400) },
    ];
    const parent = { parent_linkage: childGuid, absolute_win32_path: 'D:\\VMs\\Snapshots\\child.avhdx' };
    const grand = join(dir.path, 'grand.avhdx');
    await writeFile(grand, buildVhdx({ virtualSize: SIZE, blockSize: MiB, dataWriteGuid: '{22222222-3333-4444-5555-666677778888}', parent, blocks }).file);
    const expected = Buffer.from(expectedChild);
    overlayVhdx(expected, blocks, MiB);
    const got = await readAll(grand);
    expect(got.layers).toBe(3);
    expect(got.bytes.equals(expected)).toBe(true);
    await expect(openVirtualDisk(grand, { maxDepth: 2 })).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'chain-too-deep' } });
  });

  it('maps Windows parent paths with mapWindowsPath', async () => {
    const sub = join(dir.path, 'elsewhere');
    await run('mkdir', ['-p', sub]);
    const parent = { parent_linkage: parentGuid, absolute_win32_path: 'E:\\Share\\base\\parent.vhdx' };
    const child = join(sub, 'mapped.avhdx');
    await writeFile(child, buildVhdx({ virtualSize: SIZE, blockSize: MiB, parent, blocks: childBlocks }).file);
    await expect(openVirtualDisk(child)).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND', details: { reason: 'parent-missing' } });
    const seen: string[] = [];
    const got = await readAll(child, {
      mapWindowsPath: (win: string) => {
        seen.push(win);
        return join(dir.path, win.split('\\').pop() as string);
      },
    });
    expect(seen).toEqual(['E:\\Share\\base\\parent.vhdx']);
    expect(got.bytes.equals(expectedChild)).toBe(true);
  });

  it('refuses wrong parents: identity, size, cycles, missing', async () => {
    const p = (name: string): string => join(dir.path, name);
    const wrongId = { parent_linkage: '{99999999-9999-4999-8999-999999999999}', relative_path: 'parent.vhdx' };
    await writeFile(p('wrong-id.avhdx'), buildVhdx({ virtualSize: SIZE, blockSize: MiB, parent: wrongId }).file);
    await expect(openVirtualDisk(p('wrong-id.avhdx'))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'parent-identity-mismatch' } });

    const okId = { parent_linkage: parentGuid, relative_path: 'parent.vhdx' };
    await writeFile(p('wrong-size.avhdx'), buildVhdx({ virtualSize: SIZE + MiB, blockSize: MiB, parent: okId }).file);
    await expect(openVirtualDisk(p('wrong-size.avhdx'))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'parent-size-mismatch' } });

    await writeFile(p('cycle-a.avhdx'), buildVhdx({ virtualSize: SIZE, blockSize: MiB, parent: { parent_linkage: childGuid, relative_path: 'cycle-b.avhdx' } }).file);
    await writeFile(p('cycle-b.avhdx'), buildVhdx({ virtualSize: SIZE, blockSize: MiB, parent: { parent_linkage: childGuid, relative_path: 'cycle-a.avhdx' } }).file);
    await expect(openVirtualDisk(p('cycle-a.avhdx'))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'chain-cycle' } });

    await writeFile(p('orphan.avhdx'), buildVhdx({ virtualSize: SIZE, blockSize: MiB, parent: { parent_linkage: parentGuid, relative_path: 'gone.vhdx' } }).file);
    await expect(openVirtualDisk(p('orphan.avhdx'))).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND', details: { reason: 'parent-missing' } });

    // A VHD may not be the parent of a VHDX.
    await writeFile(p('mixed.avhdx'), buildVhdx({ virtualSize: SIZE, blockSize: MiB, parent: { parent_linkage: parentGuid, relative_path: 'parent.vhd' } }).file);
    await expect(openVirtualDisk(p('mixed.avhdx'))).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'parent-format-mismatch' } });
  });

  it('reads a VHD differencing child over a qemu-img dynamic VHD', async () => {
    const parentFile = await readFile(join(dir.path, 'parent.vhd'));
    const uniqueId = parentFile.toString('hex', parentFile.length - 512 + 68, parentFile.length - 512 + 84);
    const bs = 512 * 1024;
    const present3 = bitmapOf(1024, (s) => s % 4 === 2 || s >= 1000);
    const blocks = [
      { index: 0, data: pattern(bs, 0x5000), present: bitmapOf(1024, () => true) },
      { index: 3, data: pattern(bs, 0x5300), present: present3 },
      { index: 20, data: pattern(bs, 0x5400), present: bitmapOf(1024, (s) => s < 100) },
    ];
    const spec = { size: SIZE, type: 'differencing' as const, blockSize: bs, uniqueId: 'aa'.repeat(16) };
    const locators = [
      { code: 'W2ku' as const, text: 'C:\\VMs\\parent.vhd' },
      { code: 'W2ru' as const, text: '.\\parent.vhd' },
    ];
    const child = join(dir.path, 'child.vhd');
    await writeFile(child, buildVhd({ ...spec, parent: { uniqueId, name: 'parent.vhd', locators }, blocks }).file);
    const expected = Buffer.from(vhdParentRaw);
    for (const b of blocks) {
      b.present.forEach((p, s) => {
        const at = b.index * bs + s * 512;
        if (p && at < SIZE) b.data.copy(expected, at, s * 512, (s + 1) * 512);
      });
    }
    const got = await readAll(child);
    expect(got.describe).toMatch(/vhd differencing:.*child\.vhd <- vhd dynamic:.*parent\.vhd/);
    expect(got.bytes.equals(expected)).toBe(true);

    // Only a MacX locator (file URL): resolved too.
    const macx = join(dir.path, 'child-macx.vhd');
    const url = `file://${join(dir.path, 'parent.vhd')}`;
    await writeFile(macx, buildVhd({ ...spec, parent: { uniqueId, name: '', locators: [{ code: 'MacX', text: url }] }, blocks }).file);
    expect((await readAll(macx)).bytes.equals(expected)).toBe(true);

    // Wrong parent id, missing parent.
    await writeFile(macx, buildVhd({ ...spec, parent: { uniqueId: '11'.repeat(16), name: 'parent.vhd', locators }, blocks }).file);
    await expect(openVirtualDisk(macx)).rejects.toMatchObject({ code: 'SOURCE_READ_FAILED', details: { reason: 'parent-identity-mismatch' } });
    await rm(join(dir.path, 'parent.vhd'));
    await expect(openVirtualDisk(child)).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND', details: { reason: 'parent-missing' } });
  });
});
