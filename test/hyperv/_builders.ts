/**
 * Fixture builders for VHDX and VHD files, written from the published specifications
 * (MS-VHDX v2.0; Microsoft "Virtual Hard Disk Image Format Specification" 1.0), not
 * from the readers: qemu-img cannot create differencing images, so these make them,
 * and the unit tests round-trip parsed structures through them.
 *
 * VHDX layout written (every region 1 MiB aligned):
 *
 *   0 ident | 64K header 1 | 128K header 2 | 192K region table 1 | 256K region table 2
 *   1 MiB log (1 MiB, empty) | 2 MiB metadata (1 MiB) | 3 MiB BAT (n MiB)
 *   then payload blocks and sector bitmap blocks in the order the blocks are listed.
 *
 * VHD layout written (dynamic and differencing):
 *
 *   0 footer copy | 512 dynamic header | 1536 BAT | parent locator data | blocks | footer
 */
import { crc32c } from '../../adapters/hyperv/_crc32c.js';

const KiB = 1024;
const MiB = 1024 * KiB;

// ---------------------------------------------------------------- VHDX

export const VHDX_GUIDS = {
  bat: '2dc27766-f623-4200-9d64-115e9bfd4a08',
  metadata: '8b7ca206-4790-4b9a-b8fe-575f050f886e',
  fileParameters: 'caa16737-fa36-4d43-b3b6-33f0aa44e76b',
  virtualDiskSize: '2fa54224-cd1b-4876-b211-5dbed83bf4b8',
  page83: 'beca12ab-b2e6-4523-93ef-c309e000c746',
  logicalSectorSize: '8141bf1d-a96f-4709-ba47-f233a8faab5f',
  physicalSectorSize: 'cda348c7-445d-4471-9cc9-e9885251c556',
  parentLocator: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c',
  parentLocatorType: 'b04aefb7-d19e-4a81-b789-25b8e9445913',
} as const;

/** 16 bytes of a GUID as Windows stores it: Data1..Data3 little-endian, Data4 as is. */
export function guidBytes(text: string): Buffer {
  const h = text.replace(/[{}-]/g, '');
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([Buffer.from(b.subarray(0, 4)).reverse(), Buffer.from(b.subarray(4, 6)).reverse(), Buffer.from(b.subarray(6, 8)).reverse(), b.subarray(8)]);
}

export type VhdxBlock =
  | { readonly index: number; readonly state: 'full'; readonly data: Buffer }
  /** `present[s]`: sector s of the block comes from this file (data[s*sector..]); else from the parent. */
  | { readonly index: number; readonly state: 'partial'; readonly data: Buffer; readonly present: readonly boolean[] }
  | { readonly index: number; readonly state: 'zero' | 'unmapped' | 'undefined' | 'not-present' };

export interface VhdxSpec {
  readonly virtualSize: number;
  readonly blockSize: number;
  readonly logicalSectorSize?: number;
  readonly physicalSectorSize?: number;
  readonly leaveBlockAllocated?: boolean;
  readonly dataWriteGuid?: string;
  readonly logGuid?: string;
  /** Sequence numbers of header 1 and 2 (default 1 and 2). */
  readonly sequence?: readonly [number, number];
  /** Parent locator key/values; presence makes the file differencing. */
  readonly parent?: Readonly<Record<string, string>>;
  readonly blocks?: readonly VhdxBlock[];
  /** Log entries written to the 1 MiB log region, back to back from its start. */
  readonly log?: readonly VhdxLogEntry[];
}

/** One log entry: 4 KiB data writes (`data`) and zero ranges (`zeroLength`). */
export interface VhdxLogEntry {
  readonly sequence: number;
  /** Offset in the log of the oldest entry still needed (default: the first entry, 0). */
  readonly tail?: number;
  readonly writes: readonly ({ offset: number; data: Buffer } | { offset: number; zeroLength: number })[];
  /** FlushedFileOffset / LastFileOffset; default the built file's length. */
  readonly flushedFileOffset?: number;
}

/**
 * Log entries as MS-VHDX 2.3.1 lays them out: a 64-byte header and 32-byte descriptors
 * in the first sectors, then one "data" sector per data descriptor.
 */
function vhdxLog(entries: readonly VhdxLogEntry[], logGuid: string, fileLength: number): Buffer {
  const log = Buffer.alloc(MiB);
  let pos = 0;
  for (const entry of entries) {
    const seq = BigInt(entry.sequence);
    const descSectors = Math.ceil((64 + 32 * entry.writes.length) / (4 * KiB));
    const dataWrites = entry.writes.filter((w) => 'data' in w);
    const e = Buffer.alloc((descSectors + dataWrites.length) * 4 * KiB);
    e.write('loge', 0, 'latin1');
    e.writeUInt32LE(e.length, 8);
    e.writeUInt32LE(entry.tail ?? 0, 12);
    e.writeBigUInt64LE(seq, 16);
    e.writeUInt32LE(entry.writes.length, 24);
    guidBytes(logGuid).copy(e, 32);
    e.writeBigUInt64LE(BigInt(entry.flushedFileOffset ?? fileLength), 48);
    e.writeBigUInt64LE(BigInt(fileLength), 56);
    let data = descSectors * 4 * KiB;
    entry.writes.forEach((w, i) => {
      const d = 64 + i * 32;
      e.writeBigUInt64LE(BigInt(w.offset), d + 16);
      e.writeBigUInt64LE(seq, d + 24);
      if ('zeroLength' in w) {
        e.write('zero', d, 'latin1');
        e.writeBigUInt64LE(BigInt(w.zeroLength), d + 8);
        return;
      }
      e.write('desc', d, 'latin1');
      w.data.copy(e, d + 4, 4092, 4096); // TrailingBytes
      w.data.copy(e, d + 8, 0, 8); // LeadingBytes
      e.write('data', data, 'latin1');
      e.writeUInt32LE(Number(seq >> 32n), data + 4);
      w.data.copy(e, data + 8, 8, 4092);
      e.writeUInt32LE(Number(seq & 0xffffffffn), data + 4092);
      data += 4 * KiB;
    });
    e.writeUInt32LE(crc32c(e), 4);
    e.copy(log, pos);
    pos += e.length;
  }
  return log;
}

const STATE_CODE = { full: 6, partial: 7, zero: 2, unmapped: 3, undefined: 1, 'not-present': 0 } as const;

function vhdxHeader(seq: number, spec: VhdxSpec): Buffer {
  const h = Buffer.alloc(4 * KiB);
  h.write('head', 0, 'latin1');
  h.writeBigUInt64LE(BigInt(seq), 8);
  guidBytes('11111111-2222-3333-4444-555555555555').copy(h, 16);
  guidBytes(spec.dataWriteGuid ?? '6b1d5f3a-0c2e-4d7a-9e41-0a1b2c3d4e5f').copy(h, 32);
  guidBytes(spec.logGuid ?? '00000000-0000-0000-0000-000000000000').copy(h, 48);
  h.writeUInt16LE(0, 64); // LogVersion
  h.writeUInt16LE(1, 66); // Version
  h.writeUInt32LE(MiB, 68); // LogLength
  h.writeBigUInt64LE(BigInt(MiB), 72); // LogOffset
  h.writeUInt32LE(crc32c(h), 4);
  return h;
}

function regionTable(batLength: number): Buffer {
  const r = Buffer.alloc(64 * KiB);
  r.write('regi', 0, 'latin1');
  r.writeUInt32LE(2, 8);
  const entry = (i: number, guid: string, offset: number, length: number): void => {
    const at = 16 + i * 32;
    guidBytes(guid).copy(r, at);
    r.writeBigUInt64LE(BigInt(offset), at + 16);
    r.writeUInt32LE(length, at + 24);
    r.writeUInt32LE(1, at + 28); // Required
  };
  entry(0, VHDX_GUIDS.bat, 3 * MiB, batLength);
  entry(1, VHDX_GUIDS.metadata, 2 * MiB, MiB);
  r.writeUInt32LE(crc32c(r), 4);
  return r;
}

function parentLocatorItem(kv: Readonly<Record<string, string>>): Buffer {
  const pairs = Object.entries(kv);
  const head = Buffer.alloc(20 + pairs.length * 12);
  guidBytes(VHDX_GUIDS.parentLocatorType).copy(head, 0);
  head.writeUInt16LE(pairs.length, 18);
  const strings: Buffer[] = [];
  let at = head.length;
  pairs.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le');
    const vb = Buffer.from(v, 'utf16le');
    head.writeUInt32LE(at, 20 + i * 12);
    head.writeUInt32LE(at + kb.length, 20 + i * 12 + 4);
    head.writeUInt16LE(kb.length, 20 + i * 12 + 8);
    head.writeUInt16LE(vb.length, 20 + i * 12 + 10);
    strings.push(kb, vb);
    at += kb.length + vb.length;
  });
  return Buffer.concat([head, ...strings]);
}

function metadataRegion(spec: VhdxSpec): Buffer {
  const lss = spec.logicalSectorSize ?? 512;
  const m = Buffer.alloc(MiB);
  m.write('metadata', 0, 'latin1');
  const u32 = (v: number): Buffer => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  const size = Buffer.alloc(8);
  size.writeBigUInt64LE(BigInt(spec.virtualSize));
  const fp = Buffer.alloc(8);
  fp.writeUInt32LE(spec.blockSize, 0);
  fp.writeUInt32LE((spec.leaveBlockAllocated ? 1 : 0) | (spec.parent ? 2 : 0), 4);
  // [guid, data, flags: bit1 IsVirtualDisk, bit2 IsRequired]
  const items: [string, Buffer, number][] = [
    [VHDX_GUIDS.fileParameters, fp, 4],
    [VHDX_GUIDS.virtualDiskSize, size, 6],
    [VHDX_GUIDS.page83, guidBytes('0f0e0d0c-0b0a-0908-0706-050403020100'), 6],
    [VHDX_GUIDS.logicalSectorSize, u32(lss), 6],
    [VHDX_GUIDS.physicalSectorSize, u32(spec.physicalSectorSize ?? 4096), 6],
  ];
  if (spec.parent) items.push([VHDX_GUIDS.parentLocator, parentLocatorItem(spec.parent), 4]);
  m.writeUInt16LE(items.length, 10);
  let data = 64 * KiB;
  items.forEach(([guid, buf, flags], i) => {
    const at = 32 + i * 32;
    guidBytes(guid).copy(m, at);
    m.writeUInt32LE(data, at + 16);
    m.writeUInt32LE(buf.length, at + 20);
    m.writeUInt32LE(flags, at + 24);
    buf.copy(m, data);
    data += Math.ceil(buf.length / 8) * 8;
  });
  return m;
}

/** Offsets the builder chose, for tests that corrupt specific structures. */
export interface VhdxLayout {
  readonly batOffset: number;
  readonly chunkRatio: number;
  readonly totalEntries: number;
  /** BAT index of each listed payload block. */
  readonly batIndex: (block: number) => number;
}

/** Builds a complete VHDX file in memory. */
export function buildVhdx(spec: VhdxSpec): { file: Buffer; layout: VhdxLayout } {
  const lss = spec.logicalSectorSize ?? 512;
  const chunkRatio = (2 ** 23 * lss) / spec.blockSize;
  const dataBlocks = Math.ceil(spec.virtualSize / spec.blockSize);
  const bitmapBlocks = Math.ceil(dataBlocks / chunkRatio);
  const totalEntries = spec.parent ? bitmapBlocks * (chunkRatio + 1) : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  const batLength = Math.ceil((totalEntries * 8) / MiB) * MiB;
  const bat = Buffer.alloc(batLength);
  const batIndex = (block: number): number => block + Math.floor(block / chunkRatio);
  const tail: Buffer[] = [];
  let next = 3 * MiB + batLength;
  const setEntry = (index: number, state: number, offset: number): void => {
    bat.writeBigUInt64LE(BigInt(state) | (BigInt(offset / MiB) << 20n), index * 8);
  };
  const bitmaps = new Map<number, Buffer>(); // chunk -> 1 MiB sector bitmap
  for (const b of spec.blocks ?? []) {
    if (b.state !== 'full' && b.state !== 'partial') {
      setEntry(batIndex(b.index), STATE_CODE[b.state], 0);
      continue;
    }
    const data = Buffer.alloc(Math.ceil(spec.blockSize / MiB) * MiB);
    b.data.copy(data);
    setEntry(batIndex(b.index), STATE_CODE[b.state], next);
    tail.push(data);
    next += data.length;
    if (b.state === 'partial') {
      const chunk = Math.floor(b.index / chunkRatio);
      let bm = bitmaps.get(chunk);
      if (!bm) {
        bm = Buffer.alloc(MiB);
        bitmaps.set(chunk, bm);
        setEntry(chunk * (chunkRatio + 1) + chunkRatio, 6, next);
        tail.push(bm);
        next += MiB;
      }
      const first = (b.index % chunkRatio) * (spec.blockSize / lss);
      b.present.forEach((p, s) => {
        if (p) bm[(first + s) >> 3] = (bm[(first + s) >> 3] as number) | (1 << ((first + s) & 7));
      });
    }
  }
  const ident = Buffer.alloc(64 * KiB);
  ident.write('vhdxfile', 0, 'latin1');
  ident.write('chunkvault test builder', 8, 'utf16le');
  const [s1, s2] = spec.sequence ?? [1, 2];
  const head = Buffer.alloc(MiB);
  ident.copy(head, 0);
  vhdxHeader(s1, spec).copy(head, 64 * KiB);
  vhdxHeader(s2, spec).copy(head, 128 * KiB);
  regionTable(batLength).copy(head, 192 * KiB);
  regionTable(batLength).copy(head, 256 * KiB);
  const length = 3 * MiB + bat.length + tail.reduce((n, b) => n + b.length, 0);
  const log = spec.log ? vhdxLog(spec.log, spec.logGuid ?? '', length) : Buffer.alloc(MiB);
  const file = Buffer.concat([head, log, metadataRegion(spec), bat, ...tail]);
  return { file, layout: { batOffset: 3 * MiB, chunkRatio, totalEntries, batIndex } };
}

/** Re-seals a VHDX structure's CRC-32C after a test edited it (field at +4). */
export function resealCrc(file: Buffer, offset: number, length: number): void {
  file.writeUInt32LE(0, offset + 4);
  file.writeUInt32LE(crc32c(file.subarray(offset, offset + length)), offset + 4);
}

// ---------------------------------------------------------------- VHD

export const VHD_CODES = { W2ru: 0x57327275, W2ku: 0x57326b75, MacX: 0x4d616358, Mac: 0x4d616320 } as const;

/** One's complement of the byte sum of `buf` (whose checksum field is zero). */
export function onesComplement(buf: Uint8Array): number {
  let sum = 0;
  for (const b of buf) sum += b;
  return ~sum >>> 0;
}

export interface VhdSpec {
  readonly size: number;
  readonly type: 'fixed' | 'dynamic' | 'differencing';
  readonly blockSize?: number;
  readonly uniqueId?: string; // 32 hex digits
  readonly parent?: { readonly uniqueId: string; readonly name: string; readonly locators: readonly { code: keyof typeof VHD_CODES; text: string }[] };
  /** Allocated blocks; `present` (differencing) marks sectors held by this file. */
  readonly blocks?: readonly { readonly index: number; readonly data: Buffer; readonly present?: readonly boolean[] }[];
  /** Fixed disks: the data. */
  readonly data?: Buffer;
}

function vhdFooter(spec: VhdSpec, dataOffset: bigint): Buffer {
  const f = Buffer.alloc(512);
  f.write('conectix', 0, 'latin1');
  f.writeUInt32BE(2, 8); // Features: reserved bit always set
  f.writeUInt32BE(0x00010000, 12);
  f.writeBigUInt64BE(dataOffset, 16);
  f.write('cvlt', 28, 'latin1');
  f.writeUInt32BE(0x00010000, 32);
  f.write('Wi2k', 36, 'latin1');
  f.writeBigUInt64BE(BigInt(spec.size), 40);
  f.writeBigUInt64BE(BigInt(spec.size), 48);
  f.writeUInt32BE(0xffff10ff, 56); // CHS geometry: max, as for sizes forced past CHS
  f.writeUInt32BE({ fixed: 2, dynamic: 3, differencing: 4 }[spec.type], 60);
  Buffer.from(spec.uniqueId ?? '00112233445566778899aabbccddeeff', 'hex').copy(f, 68);
  f.writeUInt32BE(onesComplement(f), 64);
  return f;
}

/** Builds a complete VHD file in memory; `layout` gives offsets for corruption tests. */
export function buildVhd(spec: VhdSpec): { file: Buffer; layout: { batOffset: number; headerOffset: number } } {
  if (spec.type === 'fixed') {
    const data = Buffer.alloc(spec.size);
    spec.data?.copy(data);
    return { file: Buffer.concat([data, vhdFooter(spec, 0xffffffffffffffffn)]), layout: { batOffset: -1, headerOffset: -1 } };
  }
  const bs = spec.blockSize ?? 2 * MiB;
  const entries = Math.ceil(spec.size / bs);
  const batBytes = Math.ceil((entries * 4) / 512) * 512;
  const bat = Buffer.alloc(batBytes, 0xff);
  const header = Buffer.alloc(1024);
  header.write('cxsparse', 0, 'latin1');
  header.writeBigUInt64BE(0xffffffffffffffffn, 8);
  header.writeBigUInt64BE(1536n, 16);
  header.writeUInt32BE(0x00010000, 24);
  header.writeUInt32BE(entries, 28);
  header.writeUInt32BE(bs, 32);
  const parts: Buffer[] = [];
  let next = 1536 + batBytes;
  if (spec.parent) {
    Buffer.from(spec.parent.uniqueId, 'hex').copy(header, 40);
    Buffer.from(spec.parent.name, 'utf16le').swap16().copy(header, 64);
    spec.parent.locators.forEach((loc, i) => {
      const data = loc.code === 'MacX' ? Buffer.from(loc.text, 'utf8') : Buffer.from(loc.text, 'utf16le');
      const space = Math.ceil(data.length / 512) * 512;
      const at = 576 + i * 24;
      header.writeUInt32BE(VHD_CODES[loc.code], at);
      header.writeUInt32BE(space, at + 4);
      header.writeUInt32BE(data.length, at + 8);
      header.writeBigUInt64BE(BigInt(next), at + 16);
      const padded = Buffer.alloc(space);
      data.copy(padded);
      parts.push(padded);
      next += space;
    });
  }
  header.writeUInt32BE(onesComplement(header), 36);
  const bitmapBytes = Math.ceil(bs / 512 / 8 / 512) * 512;
  for (const b of spec.blocks ?? []) {
    bat.writeUInt32BE(next / 512, b.index * 4);
    const bm = Buffer.alloc(bitmapBytes, spec.type === 'dynamic' ? 0xff : 0);
    b.present?.forEach((p, s) => {
      if (p) bm[s >> 3] = (bm[s >> 3] as number) | (0x80 >> (s & 7));
    });
    const data = Buffer.alloc(bs);
    b.data.copy(data);
    parts.push(bm, data);
    next += bitmapBytes + bs;
  }
  const footer = vhdFooter(spec, 512n);
  return { file: Buffer.concat([footer, header, bat, ...parts, footer]), layout: { batOffset: 1536, headerOffset: 512 } };
}
