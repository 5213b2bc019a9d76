/**
 * VHDX reader (MS-VHDX v2.0): fixed, dynamic and differencing files, as a `BlockSource`
 * of the virtual disk. The parent of a differencing file is opened through the chain
 * context, checked (format, size, sector size, DataWriteGuid = parent_linkage) and
 * owned by this reader.
 *
 * Block states read as: FULLY_PRESENT from this file; PARTIALLY_PRESENT per logical
 * sector from this file (bitmap bit 1) or the parent (bit 0); NOT_PRESENT from the
 * parent, or zeros without one; ZERO, UNDEFINED and UNMAPPED as zeros (MS-VHDX 2.5.1.1
 * lets the latter two return arbitrary data or zeros: zeros is the deterministic
 * choice), also in differencing files. State 5 (UNMAPPED in the 0.95 draft, reserved
 * since 1.0) reads as zeros too, as qemu does, for images written to the draft.
 *
 * Log: a header with a non-zero LogGuid means the file was not closed cleanly and its
 * metadata may be stale until the log is replayed. The reader replays the log in
 * memory (`_vhdx-log.ts`) and never writes to the file; `logEntriesReplayed` says how
 * many entries it applied.
 */
import { ChunkvaultError } from '../../engine/index.js';
import { FormatProblem, ImageFile, formatError, parseOrFail } from './_image-file.js';
import { checkNoOverlap, checkParent, checkRange, findParent, parentCandidates, pushSegment, runPlan, type ChainContext, type DiskLayer, type FileRange, type Segment } from './_layer.js';
import {
  BitmapState,
  GUID,
  MiB,
  PayloadState,
  VHDX,
  batEntry,
  batGeometry,
  bitmapIndex,
  checkRegions,
  parseMetadata,
  parseRegionTable,
  payloadIndex,
  pickHeader,
  type BatGeometry,
  type VhdxHeader,
  type VhdxMetadata,
} from './_vhdx-format.js';
import { replayLog } from './_vhdx-log.js';

/** Bitmaps of this many payload blocks stay cached (each is blockSize/sector/8 bytes, <= 64 KiB). */
const BITMAP_CACHE_BLOCKS = 64;

interface Parsed {
  readonly header: VhdxHeader;
  readonly meta: VhdxMetadata;
  readonly geometry: BatGeometry;
  readonly bat: Buffer;
  /** Log entries replayed in memory at open (0 for a cleanly closed file). */
  readonly logEntries: number;
  /** File ranges of the headers, log, BAT and metadata: no block may overlap them. */
  readonly reserved: readonly FileRange[];
}

async function readStructures(file: ImageFile): Promise<Parsed> {
  const ident = await file.read(0, 8, 'file type identifier');
  if (ident.toString('latin1') !== VHDX.FILE_SIGNATURE) {
    throw formatError('vhdx', file.path, 'bad-signature', 'file type identifier is not "vhdxfile"');
  }
  const h1 = await file.read(VHDX.HEADER1_OFFSET, VHDX.HEADER_SIZE, 'header 1');
  const h2 = await file.read(VHDX.HEADER2_OFFSET, VHDX.HEADER_SIZE, 'header 2');
  const header = await parseOrFail('vhdx', file.path, () => pickHeader(h1, h2));
  const logEntries = header.logGuid === GUID.ZERO ? 0 : await replayIntoOverlay(file, header);
  const r1 = await file.read(VHDX.REGION1_OFFSET, VHDX.REGION_TABLE_SIZE, 'region table 1');
  const r2 = await file.read(VHDX.REGION2_OFFSET, VHDX.REGION_TABLE_SIZE, 'region table 2');
  const regions = await parseOrFail('vhdx', file.path, () => {
    const entries = parseRegionTable(r1) ?? parseRegionTable(r2);
    if (entries === null) throw new FormatProblem('no-valid-region-table', 'neither region table has a valid signature and checksum');
    return checkRegions(entries, file.size);
  });
  const metaRegion = await file.read(regions.metadata.fileOffset, regions.metadata.length, 'metadata region');
  const meta = await parseOrFail('vhdx', file.path, () => parseMetadata(metaRegion));
  const geometry = batGeometry(meta);
  if (regions.bat.length < geometry.totalEntries * 8) {
    throw formatError('vhdx', file.path, 'bat-too-small', `BAT region holds ${regions.bat.length / 8} entries, ${geometry.totalEntries} needed`);
  }
  const bat = await file.read(regions.bat.fileOffset, geometry.totalEntries * 8, 'BAT');
  const reserved: FileRange[] = [
    { start: 0, end: MiB, what: 'headers and region tables' },
    { start: regions.bat.fileOffset, end: regions.bat.fileOffset + regions.bat.length, what: 'BAT region' },
    { start: regions.metadata.fileOffset, end: regions.metadata.fileOffset + regions.metadata.length, what: 'metadata region' },
  ];
  if (header.logLength > 0) reserved.push({ start: header.logOffset, end: header.logOffset + header.logLength, what: 'log' });
  return { header, meta, geometry, bat, logEntries, reserved };
}

/**
 * A non-zero LogGuid: the file was not closed cleanly and the log may hold metadata
 * writes not yet in place. Replays the active sequence into the file's read overlay.
 */
async function replayIntoOverlay(file: ImageFile, header: VhdxHeader): Promise<number> {
  const { logOffset, logLength } = header;
  if (header.logVersion !== 0) throw formatError('vhdx', file.path, 'log-invalid', `log version ${header.logVersion} is not 0`);
  if (logOffset % MiB !== 0 || logOffset < MiB || logLength % MiB !== 0 || logLength === 0) {
    throw formatError('vhdx', file.path, 'log-invalid', `log at ${logOffset} (+${logLength}) is not 1 MiB aligned past the first MiB`);
  }
  if (logOffset + logLength > file.size) throw formatError('vhdx', file.path, 'log-invalid', 'the log runs past the end of the file');
  const replay = replayLog(await file.read(logOffset, logLength, 'log'), header.logGuid);
  if (replay.flushedFileOffset > file.size) {
    throw new ChunkvaultError('SOURCE_TRUNCATED', `vhdx image ${file.path}: the log says the file is at least ${replay.flushedFileOffset} bytes, it has ${file.size}`, {
      details: { format: 'vhdx', path: file.path, reason: 'log-file-truncated' },
    });
  }
  file.setOverlay(replay.writes, replay.lastFileOffset);
  return replay.entries;
}

/** Checks every BAT entry against the states allowed and the file's end. */
function validateBat(file: ImageFile, p: Parsed, reserved: readonly FileRange[]): void {
  const { chunkRatio, dataBlocks, bitmapBlocks } = p.geometry;
  const ranges: FileRange[] = [...reserved];
  const fail = (reason: string, message: string, index: number): never => {
    throw formatError('vhdx', file.path, reason, message, { batIndex: index });
  };
  for (let block = 0; block < dataBlocks; block++) {
    const index = payloadIndex(block, chunkRatio);
    const { state, fileOffset } = batEntry(p.bat, index);
    if (state === PayloadState.FULLY_PRESENT || state === PayloadState.PARTIALLY_PRESENT) {
      if (state === PayloadState.PARTIALLY_PRESENT && !p.meta.hasParent) fail('bat-entry-invalid', `block ${block} is PARTIALLY_PRESENT in a file without a parent`, index);
      const need = Math.min(p.meta.blockSize, p.meta.virtualSize - block * p.meta.blockSize);
      if (fileOffset < MiB) fail('bat-entry-invalid', `block ${block} lies in the file's first MiB`, index);
      if (fileOffset + need > file.size) fail('bat-beyond-eof', `block ${block} at ${fileOffset} runs past the end of the file (${file.size})`, index);
      ranges.push({ start: fileOffset, end: fileOffset + need, what: `block ${block}` });
      if (state === PayloadState.PARTIALLY_PRESENT) {
        const bm = batEntry(p.bat, bitmapIndex(Math.floor(block / chunkRatio), chunkRatio));
        if (bm.state !== BitmapState.PRESENT) fail('bat-entry-invalid', `block ${block} is PARTIALLY_PRESENT but its chunk has no sector bitmap`, index);
      }
    } else if (state === 4) { // the one reserved payload state (5 is read as the 0.95 draft UNMAPPED)
      fail('bat-entry-invalid', `block ${block} has unknown state ${state}`, index);
    }
  }
  for (let chunk = 0; chunk < bitmapBlocks; chunk++) {
    const index = bitmapIndex(chunk, chunkRatio);
    if (index >= p.geometry.totalEntries) break; // files without a parent omit the last bitmap entry
    const { state, fileOffset } = batEntry(p.bat, index);
    if (state === BitmapState.NOT_PRESENT) continue;
    if (state !== BitmapState.PRESENT) fail('bat-entry-invalid', `sector bitmap ${chunk} has unknown state ${state}`, index);
    if (fileOffset < MiB) fail('bat-entry-invalid', `sector bitmap ${chunk} lies in the file's first MiB`, index);
    if (fileOffset + VHDX.SECTOR_BITMAP_BLOCK_SIZE > file.size) fail('bat-beyond-eof', `sector bitmap ${chunk} at ${fileOffset} runs past the end of the file`, index);
    ranges.push({ start: fileOffset, end: fileOffset + VHDX.SECTOR_BITMAP_BLOCK_SIZE, what: `sector bitmap ${chunk}` });
  }
  checkNoOverlap('vhdx', file.path, ranges);
}

/** Parent path candidates from a VHDX parent locator, in the order MS-VHDX 2.6.2.6.1 gives. */
function vhdxParentCandidates(locator: ReadonlyMap<string, string>, child: string, ctx: ChainContext): string[] {
  const out: string[] = [];
  const rel = locator.get('relative_path');
  if (rel !== undefined) out.push(...parentCandidates(rel, 'relative', child, ctx.options));
  for (const key of ['volume_path', 'absolute_win32_path']) {
    const p = locator.get(key);
    if (p !== undefined) out.push(...parentCandidates(p, 'absolute', child, ctx.options));
  }
  return [...new Set(out)];
}

export class VhdxReader implements DiskLayer {
  readonly format = 'vhdx' as const;
  private readonly bitmapCache = new Map<number, Buffer>();
  private closed = false;

  private constructor(
    private readonly file: ImageFile,
    private readonly parsed: Parsed,
    readonly parent: DiskLayer | null,
  ) {}

  /**
   * Opens a VHDX file and, for a differencing file, its parent chain through `ctx`.
   * Throws SOURCE_READ_FAILED (`details.reason`) for malformed files, SOURCE_TRUNCATED
   * for files that end early, SOURCE_NOT_FOUND for a missing file or parent.
   */
  static async open(path: string, ctx: ChainContext): Promise<VhdxReader> {
    const file = await ImageFile.open(path, 'vhdx');
    let parent: DiskLayer | null = null;
    try {
      const parsed = await readStructures(file);
      validateBat(file, parsed, parsed.reserved);
      if (parsed.meta.parentLocator !== null) {
        const loc = parsed.meta.parentLocator;
        const ids = [loc.get('parent_linkage'), loc.get('parent_linkage2')].filter((x): x is string => x !== undefined).map((x) => x.toLowerCase());
        if (ids.length === 0) throw formatError('vhdx', path, 'parent-locator-invalid', 'parent locator has no parent_linkage');
        parent = await ctx.openParent(await findParent('vhdx', path, vhdxParentCandidates(loc, path, ctx)), path);
        const reader = new VhdxReader(file, parsed, parent);
        checkParent(reader, parent, ids);
        return reader;
      }
      return new VhdxReader(file, parsed, null);
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
    return this.parsed.meta.virtualSize;
  }
  get logicalSectorSize(): number {
    return this.parsed.meta.logicalSectorSize;
  }
  get blockSize(): number {
    return this.parsed.meta.blockSize;
  }
  get identity(): string {
    return this.parsed.header.dataWriteGuid;
  }
  get variant(): string {
    if (this.parsed.meta.hasParent) return 'differencing';
    return this.parsed.meta.leaveBlockAllocated ? 'fixed' : 'dynamic';
  }
  /** Log entries replayed in memory at open (0 for a cleanly closed file). */
  get logEntriesReplayed(): number {
    return this.parsed.logEntries;
  }
  /** Parsed metadata (block size, sector sizes, page 83 id, parent locator). */
  get metadata(): VhdxMetadata {
    return this.parsed.meta;
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    checkRange(this, target, offset);
    const plan: Segment[] = [];
    const bs = this.blockSize;
    let pos = offset;
    const end = offset + target.length;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const within = pos - block * bs;
      const length = Math.min(end - pos, bs - within);
      await this.planBlock(plan, block, within, length);
      pos += length;
    }
    await runPlan(plan, target, offset, this.file, this.parent);
  }

  private async planBlock(plan: Segment[], block: number, within: number, length: number): Promise<void> {
    const { state, fileOffset } = batEntry(this.parsed.bat, payloadIndex(block, this.parsed.geometry.chunkRatio));
    if (state === PayloadState.FULLY_PRESENT) pushSegment(plan, { kind: 'file', pos: fileOffset + within, length });
    else if (state === PayloadState.NOT_PRESENT) pushSegment(plan, { kind: this.parent ? 'parent' : 'zero', length });
    else if (state === PayloadState.PARTIALLY_PRESENT) await this.planPartial(plan, block, fileOffset, within, length);
    else pushSegment(plan, { kind: 'zero', length });
  }

  /** Sector by sector: bitmap bit 1 = this file, 0 = parent. Runs of equal bits become one segment. */
  private async planPartial(plan: Segment[], block: number, fileOffset: number, within: number, length: number): Promise<void> {
    const bitmap = await this.blockBitmap(block);
    const sector = this.logicalSectorSize;
    let pos = within;
    const end = within + length;
    while (pos < end) {
      const s = Math.floor(pos / sector);
      const runEnd = Math.min(end, (s + 1) * sector);
      const present = ((bitmap[s >>> 3] as number) >>> (s & 7)) & 1;
      const seg: Segment = present ? { kind: 'file', pos: fileOffset + pos, length: runEnd - pos } : { kind: 'parent', length: runEnd - pos };
      pushSegment(plan, seg);
      pos = runEnd;
    }
  }

  /** The slice of the chunk's sector bitmap that covers payload block `block`. */
  private async blockBitmap(block: number): Promise<Buffer> {
    const cached = this.bitmapCache.get(block);
    if (cached) return cached;
    const { chunkRatio } = this.parsed.geometry;
    const { fileOffset } = batEntry(this.parsed.bat, bitmapIndex(Math.floor(block / chunkRatio), chunkRatio));
    const bytes = this.blockSize / this.logicalSectorSize / 8;
    const buf = await this.file.read(fileOffset + (block % chunkRatio) * bytes, bytes, 'sector bitmap');
    if (this.bitmapCache.size >= BITMAP_CACHE_BLOCKS) this.bitmapCache.delete(this.bitmapCache.keys().next().value as number);
    this.bitmapCache.set(block, buf);
    return buf;
  }

  describe(): string {
    const log = this.parsed.logEntries > 0 ? ` (log: ${this.parsed.logEntries} entries replayed in memory)` : '';
    const own = `vhdx ${this.variant}:${this.path}${log}`;
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
