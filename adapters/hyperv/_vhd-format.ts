/**
 * VHD on-disk structures (Microsoft "Virtual Hard Disk Image Format Specification"
 * 1.0), parsed from buffers. All fields are big-endian. Do not change the constants.
 *
 *   fixed:        | data (CurrentSize bytes) | footer (512) |
 *   dynamic/diff: | footer copy (512) | dynamic header (1024) | BAT | blocks ... | footer (512) |
 *
 * A block is a sector bitmap (one bit per 512-byte sector, most significant bit of
 * byte 0 first, padded to a sector boundary) followed by BlockSize bytes of data. BAT
 * entries are sector numbers of the bitmap; 0xFFFFFFFF means unallocated.
 */
import { FormatProblem } from './_image-file.js';

export const VHD = {
  FOOTER_COOKIE: 'conectix',
  DYNAMIC_COOKIE: 'cxsparse',
  FOOTER_SIZE: 512,
  DYNAMIC_HEADER_SIZE: 1024,
  SECTOR: 512,
  VERSION: 0x00010000,
  UNUSED_BAT_ENTRY: 0xffffffff,
  MIN_BLOCK_SIZE: 512,
  MAX_BLOCK_SIZE: 256 * 1024 * 1024,
  PARENT_LOCATORS: 8,
} as const;

export const DiskType = { FIXED: 2, DYNAMIC: 3, DIFFERENCING: 4 } as const;

/** Parent locator platform codes (big-endian four-character codes). */
export const PlatformCode = {
  NONE: 0,
  W2RU: 0x57327275, // relative Windows path, UTF-16LE
  W2KU: 0x57326b75, // absolute Windows path, UTF-16LE
  MAC: 0x4d616320, // Mac OS alias blob: not resolvable here
  MACX: 0x4d616358, // file:// URL, UTF-8
} as const;

function problem(reason: string, message: string): never {
  throw new FormatProblem(reason, message);
}

/** One's complement of the byte sum, with the checksum field counted as zero. */
export function vhdChecksum(buf: Uint8Array, fieldOffset: number): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i++) if (i < fieldOffset || i >= fieldOffset + 4) sum += buf[i] as number;
  return ~sum >>> 0;
}

function u64(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) return problem('value-out-of-range', `${what} is too large`);
  return Number(v);
}

function uuid(buf: Buffer, at: number): string {
  return buf.toString('hex', at, at + 16);
}

export interface VhdFooter {
  readonly dataOffset: number | null;
  readonly currentSize: number;
  readonly diskType: number;
  readonly uniqueId: string;
}

/** Parses a 512-byte footer; null when its cookie is not `conectix`. */
export function parseFooter(buf: Buffer): VhdFooter | null {
  if (buf.length < VHD.FOOTER_SIZE || buf.toString('latin1', 0, 8) !== VHD.FOOTER_COOKIE) return null;
  const footer = buf.subarray(0, VHD.FOOTER_SIZE);
  if (vhdChecksum(footer, 64) !== buf.readUInt32BE(64)) problem('checksum-mismatch', 'footer checksum does not match');
  if (buf.readUInt32BE(12) !== VHD.VERSION) problem('version-unsupported', `footer file format version ${buf.readUInt32BE(12).toString(16)}`);
  const diskType = buf.readUInt32BE(60);
  if (diskType !== DiskType.FIXED && diskType !== DiskType.DYNAMIC && diskType !== DiskType.DIFFERENCING) {
    problem('disk-type-unsupported', `disk type ${diskType} is not fixed (2), dynamic (3) or differencing (4)`);
  }
  const rawOffset = buf.readBigUInt64BE(16);
  const currentSize = u64(buf, 48, 'current size');
  if (currentSize === 0 || currentSize % VHD.SECTOR !== 0) problem('virtual-size-invalid', `current size ${currentSize} is not a positive multiple of 512`);
  return {
    dataOffset: rawOffset === 0xffffffffffffffffn ? null : u64(buf, 16, 'data offset'),
    currentSize,
    diskType,
    uniqueId: uuid(buf, 68),
  };
}

export interface ParentLocator {
  readonly code: number;
  readonly dataLength: number;
  readonly dataOffset: number;
}

export interface VhdDynamicHeader {
  readonly tableOffset: number;
  readonly maxTableEntries: number;
  readonly blockSize: number;
  readonly parentUniqueId: string;
  readonly parentName: string;
  readonly locators: readonly ParentLocator[];
}

/** Parses the 1024-byte dynamic disk header. */
export function parseDynamicHeader(buf: Buffer): VhdDynamicHeader {
  if (buf.toString('latin1', 0, 8) !== VHD.DYNAMIC_COOKIE) problem('bad-signature', 'dynamic header cookie is not "cxsparse"');
  if (vhdChecksum(buf.subarray(0, VHD.DYNAMIC_HEADER_SIZE), 36) !== buf.readUInt32BE(36)) problem('checksum-mismatch', 'dynamic header checksum does not match');
  if (buf.readUInt32BE(24) !== VHD.VERSION) problem('version-unsupported', `dynamic header version ${buf.readUInt32BE(24).toString(16)}`);
  const blockSize = buf.readUInt32BE(32);
  if (blockSize < VHD.MIN_BLOCK_SIZE || blockSize > VHD.MAX_BLOCK_SIZE || (blockSize & (blockSize - 1)) !== 0) {
    problem('block-size-invalid', `block size ${blockSize} is not a power of two between 512 bytes and 256 MiB`);
  }
  const locators: ParentLocator[] = [];
  for (let i = 0; i < VHD.PARENT_LOCATORS; i++) {
    const at = 576 + i * 24;
    const code = buf.readUInt32BE(at);
    if (code !== PlatformCode.NONE) locators.push({ code, dataLength: buf.readUInt32BE(at + 8), dataOffset: u64(buf, at + 16, 'locator offset') });
  }
  const name = Buffer.from(buf.subarray(64, 576));
  name.swap16(); // UTF-16BE -> LE
  return {
    tableOffset: u64(buf, 16, 'table offset'),
    maxTableEntries: buf.readUInt32BE(28),
    blockSize,
    parentUniqueId: uuid(buf, 40),
    parentName: name.toString('utf16le').replace(/\0+$/, ''),
    locators,
  };
}

/** Bytes of the sector bitmap in front of each block, padded to whole sectors. */
export function bitmapBytes(blockSize: number): number {
  const bits = blockSize / VHD.SECTOR;
  return Math.ceil(bits / 8 / VHD.SECTOR) * VHD.SECTOR;
}

/** Decodes parent locator data: UTF-16LE for W2ru/W2ku, a file URL for MacX. */
export function decodeLocator(code: number, data: Buffer): string | null {
  if (code === PlatformCode.W2RU || code === PlatformCode.W2KU) return data.toString('utf16le').replace(/\0+$/, '');
  if (code === PlatformCode.MACX) {
    const text = data.toString('utf8').replace(/\0+$/, '');
    return text.startsWith('file://') ? decodeURIComponent(text.slice('file://'.length)) : text;
  }
  return null;
}
