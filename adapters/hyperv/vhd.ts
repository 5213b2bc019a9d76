/**
 * VHD reader: fixed, dynamic and differencing files, as a `BlockSource` of the virtual
 * disk (CurrentSize bytes). The footer at the end is authoritative; for dynamic files
 * whose end footer is damaged the copy at offset 0 is used, as the spec allows.
 *
 * Reads: fixed files map 1:1; dynamic files read allocated blocks from the file
 * (sector bitmaps are not consulted, as the spec's dynamic disks and qemu-img do) and
 * unallocated ones as zeros; differencing files read allocated blocks per sector by the
 * bitmap (bit 1 = this file, 0 = parent) and unallocated blocks from the parent.
 *
 * Parents: locators W2ru (relative), W2ku (absolute Windows), MacX (file URL) are tried
 * in that order, then the parent's Unicode name in the child's directory; `Mac ` alias
 * blobs are skipped. The parent must be a VHD whose footer UniqueId is the child's
 * ParentUniqueId and whose size is the child's.
 */
import { ImageFile, formatError, parseOrFail } from './_image-file.js';
import { checkNoOverlap, checkParent, checkRange, findParent, parentCandidates, pushSegment, runPlan, type ChainContext, type DiskLayer, type FileRange, type Segment } from './_layer.js';
import {
  DiskType,
  PlatformCode,
  VHD,
  bitmapBytes,
  decodeLocator,
  parseDynamicHeader,
  parseFooter,
  type VhdDynamicHeader,
  type VhdFooter,
} from './_vhd-format.js';

/** Bitmaps of this many blocks stay cached (each is at most 64 KiB). */
const BITMAP_CACHE_BLOCKS = 64;

async function readFooter(file: ImageFile): Promise<VhdFooter> {
  if (file.size < VHD.FOOTER_SIZE) throw formatError('vhd', file.path, 'bad-signature', `file of ${file.size} bytes is too small for a VHD footer`);
  const end = await file.read(file.size - VHD.FOOTER_SIZE, VHD.FOOTER_SIZE, 'footer');
  const footer = await parseOrFail('vhd', file.path, () => parseFooter(end));
  if (footer !== null) return footer;
  const copy = await file.read(0, VHD.FOOTER_SIZE, 'footer copy');
  const first = await parseOrFail('vhd', file.path, () => parseFooter(copy));
  if (first === null || first.diskType === DiskType.FIXED) throw formatError('vhd', file.path, 'bad-signature', 'no "conectix" footer at the end of the file');
  return first;
}

interface Dynamic {
  readonly header: VhdDynamicHeader;
  readonly bat: Buffer;
  readonly bitmapBytes: number;
}

async function readDynamic(file: ImageFile, footer: VhdFooter): Promise<Dynamic> {
  if (footer.dataOffset === null) throw formatError('vhd', file.path, 'header-invalid', 'dynamic disk without a dynamic header offset');
  const raw = await file.read(footer.dataOffset, VHD.DYNAMIC_HEADER_SIZE, 'dynamic header');
  const header = await parseOrFail('vhd', file.path, () => parseDynamicHeader(raw));
  const blocks = Math.ceil(footer.currentSize / header.blockSize);
  if (header.maxTableEntries < blocks) {
    throw formatError('vhd', file.path, 'bat-too-small', `BAT has ${header.maxTableEntries} entries, ${blocks} needed for ${footer.currentSize} bytes`);
  }
  const bat = await file.read(header.tableOffset, blocks * 4, 'BAT');
  const dyn = { header, bat, bitmapBytes: bitmapBytes(header.blockSize) };
  const ranges: FileRange[] = [
    { start: footer.dataOffset, end: footer.dataOffset + VHD.DYNAMIC_HEADER_SIZE, what: 'dynamic header' },
    { start: header.tableOffset, end: header.tableOffset + blocks * 4, what: 'BAT' },
  ];
  for (let b = 0; b < blocks; b++) {
    const sector = bat.readUInt32BE(b * 4);
    if (sector === VHD.UNUSED_BAT_ENTRY) continue;
    const need = dyn.bitmapBytes + Math.min(header.blockSize, footer.currentSize - b * header.blockSize);
    if (sector * VHD.SECTOR + need > file.size) {
      throw formatError('vhd', file.path, 'bat-beyond-eof', `block ${b} at sector ${sector} runs past the end of the file (${file.size})`, { batIndex: b });
    }
    ranges.push({ start: sector * VHD.SECTOR, end: sector * VHD.SECTOR + need, what: `block ${b}` });
  }
  checkNoOverlap('vhd', file.path, ranges);
  return dyn;
}

async function vhdParentCandidates(file: ImageFile, header: VhdDynamicHeader, ctx: ChainContext): Promise<string[]> {
  const order = [PlatformCode.W2RU, PlatformCode.W2KU, PlatformCode.MACX];
  const out: string[] = [];
  for (const code of order) {
    for (const loc of header.locators.filter((l) => l.code === code)) {
      if (loc.dataLength === 0 || loc.dataLength > 65536 || loc.dataOffset + loc.dataLength > file.size) {
        throw formatError('vhd', file.path, 'parent-locator-invalid', `parent locator at ${loc.dataOffset} (+${loc.dataLength}) lies outside the file`);
      }
      const text = decodeLocator(code, await file.read(loc.dataOffset, loc.dataLength, 'parent locator'));
      if (text) out.push(...parentCandidates(text, code === PlatformCode.W2RU ? 'relative' : 'absolute', file.path, ctx.options));
    }
  }
  if (header.parentName) out.push(...parentCandidates(header.parentName, 'relative', file.path, ctx.options));
  return [...new Set(out)];
}

export class VhdReader implements DiskLayer {
  readonly format = 'vhd' as const;
  readonly logicalSectorSize = VHD.SECTOR;
  private closed = false;
  /** Sector bitmaps of recently read differencing blocks, by BAT sector. */
  private readonly bitmapCache = new Map<number, Buffer>();

  private constructor(
    private readonly file: ImageFile,
    private readonly footer: VhdFooter,
    private readonly dynamic: Dynamic | null,
    readonly parent: DiskLayer | null,
  ) {}

  /**
   * Opens a VHD file and, for a differencing file, its parent chain through `ctx`.
   * Errors as for `VhdxReader.open`.
   */
  static async open(path: string, ctx: ChainContext): Promise<VhdReader> {
    const file = await ImageFile.open(path, 'vhd');
    let parent: DiskLayer | null = null;
    try {
      const footer = await readFooter(file);
      if (footer.diskType === DiskType.FIXED) {
        if (file.size < footer.currentSize + VHD.FOOTER_SIZE) {
          throw formatError('vhd', path, 'truncated', `fixed disk of ${footer.currentSize} bytes in a file of ${file.size} bytes`);
        }
        return new VhdReader(file, footer, null, null);
      }
      const dynamic = await readDynamic(file, footer);
      if (footer.diskType === DiskType.DIFFERENCING) {
        parent = await ctx.openParent(await findParent('vhd', path, await vhdParentCandidates(file, dynamic.header, ctx)), path);
        const reader = new VhdReader(file, footer, dynamic, parent);
        checkParent(reader, parent, [dynamic.header.parentUniqueId]);
        return reader;
      }
      return new VhdReader(file, footer, dynamic, null);
    } catch (err) {
      await parent?.close();
      await file.close();
      throw err;
    }
  }

  get path(): string {
    return this.file.path;
  }
  get sizeBytes(): number {
    return this.footer.currentSize;
  }
  get identity(): string {
    return this.footer.uniqueId;
  }
  get variant(): string {
    if (this.footer.diskType === DiskType.FIXED) return 'fixed';
    return this.footer.diskType === DiskType.DYNAMIC ? 'dynamic' : 'differencing';
  }
  /** Block size of a dynamic or differencing file; null for a fixed one. */
  get blockSize(): number | null {
    return this.dynamic?.header.blockSize ?? null;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    checkRange(this, target, offset);
    if (this.dynamic === null) {
      await this.file.readExact(target, offset, 'fixed disk data');
      return;
    }
    const plan: Segment[] = [];
    const bs = this.dynamic.header.blockSize;
    let pos = offset;
    const end = offset + target.length;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const within = pos - block * bs;
      const length = Math.min(end - pos, bs - within);
      await this.planBlock(plan, this.dynamic, block, within, length);
      pos += length;
    }
    await runPlan(plan, target, offset, this.file, this.parent);
  }

  private async planBlock(plan: Segment[], dyn: Dynamic, block: number, within: number, length: number): Promise<void> {
    const sector = dyn.bat.readUInt32BE(block * 4);
    if (sector === VHD.UNUSED_BAT_ENTRY) {
      pushSegment(plan, { kind: this.parent ? 'parent' : 'zero', length });
      return;
    }
    const data = sector * VHD.SECTOR + dyn.bitmapBytes;
    if (this.parent === null) {
      pushSegment(plan, { kind: 'file', pos: data + within, length });
      return;
    }
    const bitmap = await this.sectorBitmap(sector, dyn.bitmapBytes);
    let pos = within;
    const end = within + length;
    while (pos < end) {
      const s = Math.floor(pos / VHD.SECTOR);
      const runEnd = Math.min(end, (s + 1) * VHD.SECTOR);
      const present = ((bitmap[s >>> 3] as number) >>> (7 - (s & 7))) & 1;
      pushSegment(plan, present ? { kind: 'file', pos: data + pos, length: runEnd - pos } : { kind: 'parent', length: runEnd - pos });
      pos = runEnd;
    }
  }

  private async sectorBitmap(sector: number, bytes: number): Promise<Buffer> {
    const cached = this.bitmapCache.get(sector);
    if (cached) return cached;
    const buf = await this.file.read(sector * VHD.SECTOR, bytes, 'sector bitmap');
    if (this.bitmapCache.size >= BITMAP_CACHE_BLOCKS) this.bitmapCache.delete(this.bitmapCache.keys().next().value as number);
    this.bitmapCache.set(sector, buf);
    return buf;
  }

  describe(): string {
    const own = `vhd ${this.variant}:${this.path}`;
    return this.parent ? `${own} <- ${this.parent.describe()}` : own;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.file.close();
    } finally {
      await this.parent?.close();
    }
  }
}
