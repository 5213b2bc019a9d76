/**
 * VHDX on-disk structures (MS-VHDX v2.0), parsed from buffers. No I/O here: `vhdx.ts`
 * reads the bytes and calls these. Do not change the constants: they are the format.
 *
 * Layout (all little-endian):
 *
 *   0        64K       128K      192K      256K      320K .. 1M        1M ..
 *   | ident  | header1 | header2 | region1 | region2 | reserved       | log, BAT, metadata, blocks
 *
 * Terms: a payload block holds BlockSize bytes of the virtual disk; a chunk is
 * `chunkRatio` payload blocks, whose presence in a differencing file is described by
 * one 1 MiB sector bitmap block (one bit per logical sector, bit 0 of byte 0 first).
 * The BAT interleaves them: chunkRatio payload entries, then that chunk's bitmap entry.
 */
import { crc32cWithZeroField } from './_crc32c.js';
import { FormatProblem } from './_image-file.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

export const VHDX = {
  FILE_SIGNATURE: 'vhdxfile',
  HEADER_SIGNATURE: 'head',
  REGION_SIGNATURE: 'regi',
  METADATA_SIGNATURE: 'metadata',
  HEADER1_OFFSET: 64 * KiB,
  HEADER2_OFFSET: 128 * KiB,
  HEADER_SIZE: 4 * KiB,
  REGION1_OFFSET: 192 * KiB,
  REGION2_OFFSET: 256 * KiB,
  REGION_TABLE_SIZE: 64 * KiB,
  REGION_MAX_ENTRIES: 2047,
  METADATA_TABLE_SIZE: 64 * KiB,
  METADATA_MAX_ENTRIES: 2047,
  SECTOR_BITMAP_BLOCK_SIZE: MiB,
  MIN_BLOCK_SIZE: MiB,
  MAX_BLOCK_SIZE: 256 * MiB,
  MAX_VIRTUAL_SIZE: 64 * 1024 * 1024 * MiB, // 64 TiB
  SECTORS_PER_BITMAP_BLOCK: 2 ** 23,
} as const;

/** Region and metadata item GUIDs, in canonical lower-case text form. */
export const GUID = {
  BAT_REGION: '{2dc27766-f623-4200-9d64-115e9bfd4a08}',
  METADATA_REGION: '{8b7ca206-4790-4b9a-b8fe-575f050f886e}',
  FILE_PARAMETERS: '{caa16737-fa36-4d43-b3b6-33f0aa44e76b}',
  VIRTUAL_DISK_SIZE: '{2fa54224-cd1b-4876-b211-5dbed83bf4b8}',
  PAGE83_DATA: '{beca12ab-b2e6-4523-93ef-c309e000c746}',
  LOGICAL_SECTOR_SIZE: '{8141bf1d-a96f-4709-ba47-f233a8faab5f}',
  PHYSICAL_SECTOR_SIZE: '{cda348c7-445d-4471-9cc9-e9885251c556}',
  PARENT_LOCATOR: '{a8d35f2d-b30b-454d-abf7-d3d84834ab0c}',
  VHDX_PARENT_LOCATOR_TYPE: '{b04aefb7-d19e-4a81-b789-25b8e9445913}',
  ZERO: '{00000000-0000-0000-0000-000000000000}',
} as const;

/** BAT payload block states (low 3 bits of an entry). */
export const PayloadState = {
  NOT_PRESENT: 0,
  UNDEFINED: 1,
  ZERO: 2,
  UNMAPPED: 3,
  /** UNMAPPED in the 0.95 draft; reserved in 1.0. Read as zeros. */
  UNMAPPED_V095: 5,
  FULLY_PRESENT: 6,
  PARTIALLY_PRESENT: 7,
} as const;

/** BAT sector bitmap block states. */
export const BitmapState = { NOT_PRESENT: 0, PRESENT: 6 } as const;

function problem(reason: string, message: string): never {
  throw new FormatProblem(reason, message);
}

const hex = (b: Uint8Array, from: number, to: number, reverse: boolean): string => {
  const bytes = Array.from(b.subarray(from, to));
  if (reverse) bytes.reverse();
  return bytes.map((x) => x.toString(16).padStart(2, '0')).join('');
};

/** A GUID in its 16-byte mixed-endian form (first three fields little-endian) as `{...}` text. */
export function guidToString(buf: Uint8Array, at = 0): string {
  const b = buf.subarray(at, at + 16);
  return `{${hex(b, 0, 4, true)}-${hex(b, 4, 6, true)}-${hex(b, 6, 8, true)}-${hex(b, 8, 10, false)}-${hex(b, 10, 16, false)}}`;
}

/** Inverse of `guidToString`; accepts braces or none, any case. */
export function guidToBytes(text: string): Buffer {
  const h = text.replace(/[{}-]/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(h)) problem('bad-guid', `not a GUID: ${text}`);
  const raw = Buffer.from(h, 'hex');
  const out = Buffer.from(raw);
  out.set(raw.subarray(0, 4).reverse(), 0);
  out.set(raw.subarray(4, 6).reverse(), 4);
  out.set(raw.subarray(6, 8).reverse(), 6);
  return out;
}

/** A little-endian u64 as a safe integer (problem when it is not one). */
export function readU64(buf: Buffer, at: number, what: string): number {
  const lo = buf.readUInt32LE(at);
  const hi = buf.readUInt32LE(at + 4);
  if (hi >= 0x200000) problem('value-out-of-range', `${what} is too large`);
  return hi * 2 ** 32 + lo;
}

export interface VhdxHeader {
  readonly sequenceNumber: bigint;
  readonly fileWriteGuid: string;
  readonly dataWriteGuid: string;
  readonly logGuid: string;
  readonly logVersion: number;
  readonly version: number;
  readonly logLength: number;
  readonly logOffset: number;
}

/** Parses one 4 KiB header; null when its signature, checksum or version is wrong. */
export function parseHeader(buf: Buffer): VhdxHeader | null {
  if (buf.length < VHDX.HEADER_SIZE || buf.toString('latin1', 0, 4) !== VHDX.HEADER_SIGNATURE) return null;
  const block = buf.subarray(0, VHDX.HEADER_SIZE);
  if (crc32cWithZeroField(block, 4) !== buf.readUInt32LE(4)) return null;
  const version = buf.readUInt16LE(66);
  if (version !== 1) return null;
  return {
    sequenceNumber: buf.readBigUInt64LE(8),
    fileWriteGuid: guidToString(buf, 16),
    dataWriteGuid: guidToString(buf, 32),
    logGuid: guidToString(buf, 48),
    logVersion: buf.readUInt16LE(64),
    version,
    logLength: buf.readUInt32LE(68),
    logOffset: Number(buf.readBigUInt64LE(72)),
  };
}

/** The current header: the valid one with the higher sequence number. */
export function pickHeader(h1: Buffer, h2: Buffer): VhdxHeader {
  const a = parseHeader(h1);
  const b = parseHeader(h2);
  if (a === null && b === null) problem('no-valid-header', 'neither header has a valid signature, checksum and version');
  if (a === null) return b as VhdxHeader;
  if (b === null) return a;
  return b.sequenceNumber > a.sequenceNumber ? b : a;
}

export interface RegionEntry {
  readonly guid: string;
  readonly fileOffset: number;
  readonly length: number;
  readonly required: boolean;
}

/** Parses a 64 KiB region table; null when its signature or checksum is wrong. */
export function parseRegionTable(buf: Buffer): RegionEntry[] | null {
  if (buf.length < VHDX.REGION_TABLE_SIZE || buf.toString('latin1', 0, 4) !== VHDX.REGION_SIGNATURE) return null;
  if (crc32cWithZeroField(buf.subarray(0, VHDX.REGION_TABLE_SIZE), 4) !== buf.readUInt32LE(4)) return null;
  const count = buf.readUInt32LE(8);
  if (count > VHDX.REGION_MAX_ENTRIES) problem('region-table-invalid', `region table has ${count} entries (max ${VHDX.REGION_MAX_ENTRIES})`);
  const out: RegionEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32;
    out.push({
      guid: guidToString(buf, at),
      fileOffset: readU64(buf, at + 16, 'region offset'),
      length: buf.readUInt32LE(at + 24),
      required: (buf.readUInt32LE(at + 28) & 1) === 1,
    });
  }
  return out;
}

export interface Regions {
  readonly bat: RegionEntry;
  readonly metadata: RegionEntry;
}

/** Finds BAT and metadata in a region table and checks every region's placement. */
export function checkRegions(entries: readonly RegionEntry[], fileSize: number): Regions {
  let bat: RegionEntry | undefined;
  let metadata: RegionEntry | undefined;
  for (const e of entries) {
    if (e.fileOffset % MiB !== 0 || e.fileOffset < MiB || e.length % MiB !== 0 || e.length === 0) {
      problem('region-table-invalid', `region ${e.guid} at ${e.fileOffset} (+${e.length}) is not 1 MiB aligned past the first MiB`);
    }
    if (e.fileOffset + e.length > fileSize) problem('region-beyond-eof', `region ${e.guid} ends at ${e.fileOffset + e.length}, past the end of the file (${fileSize})`);
    if (e.guid === GUID.BAT_REGION) bat = e;
    else if (e.guid === GUID.METADATA_REGION) metadata = e;
    else if (e.required) problem('unknown-required-region', `unknown required region ${e.guid}`);
  }
  if (bat === undefined || metadata === undefined) problem('region-table-invalid', 'region table lacks the BAT or the metadata region');
  return { bat, metadata };
}

export interface MetadataItem {
  readonly guid: string;
  readonly offset: number;
  readonly length: number;
  readonly isUser: boolean;
  readonly isRequired: boolean;
}

/** Parses the metadata table at the start of the metadata region. */
export function parseMetadataTable(buf: Buffer, regionLength: number): MetadataItem[] {
  if (buf.toString('latin1', 0, 8) !== VHDX.METADATA_SIGNATURE) problem('bad-metadata-signature', 'metadata table signature is not "metadata"');
  const count = buf.readUInt16LE(10);
  if (count > VHDX.METADATA_MAX_ENTRIES) problem('metadata-invalid', `metadata table has ${count} entries`);
  const items: MetadataItem[] = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32;
    const item = {
      guid: guidToString(buf, at),
      offset: buf.readUInt32LE(at + 16),
      length: buf.readUInt32LE(at + 20),
      isUser: (buf.readUInt32LE(at + 24) & 1) === 1,
      isRequired: (buf.readUInt32LE(at + 24) & 4) === 4,
    };
    if (item.length > 0 && (item.offset < VHDX.METADATA_TABLE_SIZE || item.offset + item.length > regionLength)) {
      problem('metadata-invalid', `metadata item ${item.guid} at ${item.offset} (+${item.length}) lies outside the metadata region`);
    }
    items.push(item);
  }
  return items;
}

export interface VhdxMetadata {
  readonly blockSize: number;
  readonly leaveBlockAllocated: boolean;
  readonly hasParent: boolean;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly page83: string;
  /** Key/value pairs of the parent locator; null without one. */
  readonly parentLocator: ReadonlyMap<string, string> | null;
}

const KNOWN_ITEMS: ReadonlySet<string> = new Set([
  GUID.FILE_PARAMETERS,
  GUID.VIRTUAL_DISK_SIZE,
  GUID.PAGE83_DATA,
  GUID.LOGICAL_SECTOR_SIZE,
  GUID.PHYSICAL_SECTOR_SIZE,
  GUID.PARENT_LOCATOR,
]);

function itemData(region: Buffer, items: readonly MetadataItem[], guid: string, size: number | null): Buffer | null {
  const item = items.find((i) => i.guid === guid && !i.isUser);
  if (item === undefined) return null;
  if (size !== null && item.length < size) problem('metadata-invalid', `metadata item ${guid} is ${item.length} bytes, expected ${size}`);
  return region.subarray(item.offset, item.offset + item.length);
}

function required(buf: Buffer | null, name: string): Buffer {
  if (buf === null) problem('metadata-missing', `required metadata item ${name} is missing`);
  return buf;
}

/** Decodes the system metadata items from the whole metadata region and checks their ranges. */
export function parseMetadata(region: Buffer): VhdxMetadata {
  const items = parseMetadataTable(region, region.length);
  for (const item of items) {
    if (item.isRequired && !item.isUser && !KNOWN_ITEMS.has(item.guid)) problem('unknown-required-metadata', `unknown required metadata item ${item.guid}`);
  }
  const fp = required(itemData(region, items, GUID.FILE_PARAMETERS, 8), 'file parameters');
  const size = required(itemData(region, items, GUID.VIRTUAL_DISK_SIZE, 8), 'virtual disk size');
  const lss = required(itemData(region, items, GUID.LOGICAL_SECTOR_SIZE, 4), 'logical sector size').readUInt32LE(0);
  const pss = required(itemData(region, items, GUID.PHYSICAL_SECTOR_SIZE, 4), 'physical sector size').readUInt32LE(0);
  const page83 = required(itemData(region, items, GUID.PAGE83_DATA, 16), 'page 83 data');
  const blockSize = fp.readUInt32LE(0);
  const flags = fp.readUInt32LE(4);
  const virtualSize = readU64(size, 0, 'virtual disk size');
  if (blockSize < VHDX.MIN_BLOCK_SIZE || blockSize > VHDX.MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    problem('block-size-invalid', `block size ${blockSize} is not a power of two between 1 MiB and 256 MiB`);
  }
  if (lss !== 512 && lss !== 4096) problem('sector-size-invalid', `logical sector size ${lss} is neither 512 nor 4096`);
  if (pss !== 512 && pss !== 4096) problem('sector-size-invalid', `physical sector size ${pss} is neither 512 nor 4096`);
  if (virtualSize === 0 || virtualSize % lss !== 0 || virtualSize > VHDX.MAX_VIRTUAL_SIZE) {
    problem('virtual-size-invalid', `virtual disk size ${virtualSize} is not a positive multiple of ${lss} up to 64 TiB`);
  }
  const hasParent = (flags & 2) === 2;
  const loc = itemData(region, items, GUID.PARENT_LOCATOR, 20);
  if (hasParent && loc === null) problem('metadata-missing', 'differencing file without a parent locator');
  return {
    blockSize,
    leaveBlockAllocated: (flags & 1) === 1,
    hasParent,
    virtualSize,
    logicalSectorSize: lss,
    physicalSectorSize: pss,
    page83: guidToString(page83),
    parentLocator: hasParent && loc !== null ? parseParentLocator(loc) : null,
  };
}

/** Decodes a VHDX parent locator item (UTF-16LE keys and values). */
export function parseParentLocator(item: Buffer): Map<string, string> {
  const type = guidToString(item, 0);
  if (type !== GUID.VHDX_PARENT_LOCATOR_TYPE) problem('parent-locator-invalid', `unknown parent locator type ${type}`);
  const count = item.readUInt16LE(18);
  if (20 + count * 12 > item.length) problem('parent-locator-invalid', `parent locator with ${count} entries does not fit its item`);
  const out = new Map<string, string>();
  const text = (offset: number, length: number): string => {
    if (offset + length > item.length || length % 2 !== 0) problem('parent-locator-invalid', 'parent locator entry outside its item');
    return item.toString('utf16le', offset, offset + length);
  };
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12;
    const key = text(item.readUInt32LE(at), item.readUInt16LE(at + 8));
    out.set(key, text(item.readUInt32LE(at + 4), item.readUInt16LE(at + 10)));
  }
  return out;
}

/** Derived BAT geometry. */
export interface BatGeometry {
  readonly chunkRatio: number;
  readonly dataBlocks: number;
  readonly bitmapBlocks: number;
  /** Entries the BAT region must hold. */
  readonly totalEntries: number;
}

export function batGeometry(meta: Pick<VhdxMetadata, 'blockSize' | 'logicalSectorSize' | 'virtualSize' | 'hasParent'>): BatGeometry {
  const chunkRatio = (VHDX.SECTORS_PER_BITMAP_BLOCK * meta.logicalSectorSize) / meta.blockSize;
  const dataBlocks = Math.ceil(meta.virtualSize / meta.blockSize);
  const bitmapBlocks = Math.ceil(dataBlocks / chunkRatio);
  const totalEntries = meta.hasParent ? bitmapBlocks * (chunkRatio + 1) : dataBlocks + Math.floor((dataBlocks - 1) / chunkRatio);
  return { chunkRatio, dataBlocks, bitmapBlocks, totalEntries };
}

/** BAT index of payload block `block`. */
export function payloadIndex(block: number, chunkRatio: number): number {
  return block + Math.floor(block / chunkRatio);
}

/** BAT index of the sector bitmap block of chunk `chunk`. */
export function bitmapIndex(chunk: number, chunkRatio: number): number {
  return chunk * (chunkRatio + 1) + chunkRatio;
}

/** Decodes a BAT entry: state (low 3 bits) and file offset (bits 20..63, in MiB). */
export function batEntry(bat: Buffer, index: number): { state: number; fileOffset: number } {
  const lo = bat.readUInt32LE(index * 8);
  const hi = bat.readUInt32LE(index * 8 + 4);
  return { state: lo & 7, fileOffset: ((lo >>> 20) + hi * 4096) * MiB };
}
