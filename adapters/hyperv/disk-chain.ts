/**
 * Opens a virtual disk file of any supported format, with its whole parent chain, as
 * one `BlockSource`: what a Hyper-V checkpoint's disk (an .avhdx on top of .vhdx
 * parents) looks like to the engine.
 *
 * Detection: `vhdxfile` at offset 0 is VHDX; `conectix` in the last 512 bytes (or, for
 * a dynamic VHD with a damaged end footer, the first 512) is VHD; anything else is raw.
 * A raw file is a valid chain of one layer but never a parent (no identity to check).
 *
 * Chains are limited to `maxDepth` layers (default 64) and may not revisit a file
 * (by real path): SOURCE_READ_FAILED with reason `chain-too-deep` / `chain-cycle`.
 */
import { realpath } from 'node:fs/promises';
import { ChunkvaultError, type BlockSource } from '../../engine/index.js';
import { ImageFile, formatError, type ImageFormat } from './_image-file.js';
import { checkRange, type ChainContext, type ChainOptions, type DiskLayer } from './_layer.js';
import { VHD } from './_vhd-format.js';
import { VHDX } from './_vhdx-format.js';
import { VhdReader } from './vhd.js';
import { VhdxReader } from './vhdx.js';

export type { ChainOptions, DiskLayer } from './_layer.js';

/** Default for `ChainOptions.maxDepth`. */
export const DEFAULT_MAX_CHAIN_DEPTH = 64;

/**
 * A VHDX whose identifier was overwritten still has a header and a region table
 * signature: classify it as VHDX so that it is refused, not served as raw bytes.
 */
async function looksLikeDamagedVhdx(file: ImageFile): Promise<boolean> {
  if (file.size < VHDX.REGION2_OFFSET + 4) return false;
  const sig = async (at: number): Promise<string> => (await file.read(at, 4, 'signature')).toString('latin1');
  const header = (await sig(VHDX.HEADER1_OFFSET)) === VHDX.HEADER_SIGNATURE || (await sig(VHDX.HEADER2_OFFSET)) === VHDX.HEADER_SIGNATURE;
  const region = (await sig(VHDX.REGION1_OFFSET)) === VHDX.REGION_SIGNATURE || (await sig(VHDX.REGION2_OFFSET)) === VHDX.REGION_SIGNATURE;
  return header && region;
}

/** The format of the file at `path`, from its signatures. */
export async function detectFormat(path: string): Promise<ImageFormat> {
  const file = await ImageFile.open(path, 'raw');
  try {
    if (file.size >= 8) {
      const head = await file.read(0, Math.min(file.size, VHD.FOOTER_SIZE), 'signature');
      if (head.toString('latin1', 0, 8) === VHDX.FILE_SIGNATURE) return 'vhdx';
      if (await looksLikeDamagedVhdx(file)) return 'vhdx';
      if (file.size >= VHD.FOOTER_SIZE) {
        const tail = await file.read(file.size - VHD.FOOTER_SIZE, 8, 'footer');
        if (tail.toString('latin1') === VHD.FOOTER_COOKIE) return 'vhd';
        if (head.toString('latin1', 0, 8) === VHD.FOOTER_COOKIE) return 'vhd';
        if (file.size >= 1024 && (await file.read(512, 8, 'dynamic header')).toString('latin1') === VHD.DYNAMIC_COOKIE) return 'vhd';
      }
    }
    return 'raw';
  } finally {
    await file.close();
  }
}

/** A raw image as the bottom (and only) layer of a chain. */
class RawLayer implements DiskLayer {
  readonly format = 'raw' as const;
  readonly variant = 'raw';
  readonly parent = null;
  readonly identity = null;
  readonly logicalSectorSize = 512;

  constructor(private readonly file: ImageFile) {}

  get path(): string {
    return this.file.path;
  }
  get sizeBytes(): number {
    return this.file.size;
  }
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    checkRange(this, target, offset);
    await this.file.readExact(target, offset, 'raw data');
  }
  describe(): string {
    return `raw:${this.path}`;
  }
  close(): Promise<void> {
    return this.file.close();
  }
}

async function canonical(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return path;
  }
}

async function openLayer(path: string, options: ChainOptions, above: readonly string[]): Promise<DiskLayer> {
  const maxDepth = options.maxDepth ?? DEFAULT_MAX_CHAIN_DEPTH;
  const real = await canonical(path);
  const format = await detectFormat(path);
  if (above.includes(real)) {
    throw formatError(format, path, 'chain-cycle', `the parent chain returns to ${real}`, { chain: [...above, real] });
  }
  if (above.length >= maxDepth) {
    throw formatError(format, path, 'chain-too-deep', `the parent chain has more than ${maxDepth} layers`, { maxDepth });
  }
  const chain = [...above, real];
  const ctx: ChainContext = {
    options,
    chain,
    openParent: async (parentPath) => openLayer(parentPath, options, chain),
  };
  if (format === 'vhdx') return VhdxReader.open(path, ctx);
  if (format === 'vhd') return VhdReader.open(path, ctx);
  if (above.length > 0) {
    throw formatError('raw', path, 'parent-format-mismatch', `parent of ${above[above.length - 1]} is not a VHD or VHDX file`);
  }
  return new RawLayer(await ImageFile.open(path, 'raw'));
}

/**
 * A disk chain as one `BlockSource`: reads go to the top layer, which falls through
 * to its parents sector by sector; `close` closes every file of the chain.
 */
export class DiskChain implements BlockSource {
  private constructor(private readonly top: DiskLayer) {}

  /** Opens `path` and its parents. See the module comment for errors. */
  static async open(path: string, options: ChainOptions = {}): Promise<DiskChain> {
    return new DiskChain(await openLayer(path, options, []));
  }

  get sizeBytes(): number {
    return this.top.sizeBytes;
  }

  /** The layers, top (the opened file) first. */
  get layers(): DiskLayer[] {
    const out: DiskLayer[] = [];
    for (let l: DiskLayer | null = this.top; l !== null; l = l.parent) out.push(l);
    return out;
  }

  readInto(target: Uint8Array, offset: number): Promise<void> {
    if (target.length === 0) return Promise.resolve();
    return this.top.readInto(target, offset);
  }

  describe(): string {
    return this.top.describe();
  }

  close(): Promise<void> {
    return this.top.close();
  }
}

/**
 * Opens a VHDX, VHD or raw file (with its parent chain) as a `BlockSource` whose
 * `sizeBytes` is the virtual disk size.
 */
export function openVirtualDisk(path: string, options: ChainOptions = {}): Promise<DiskChain> {
  return DiskChain.open(path, options);
}

/** Opens a VHDX file (and its parents); INVALID_ARGUMENT if `path` is not a VHDX. */
export async function openVhdx(path: string, options: ChainOptions = {}): Promise<DiskChain> {
  return openExpecting(path, 'vhdx', options);
}

/** Opens a VHD file (and its parents); INVALID_ARGUMENT if `path` is not a VHD. */
export async function openVhd(path: string, options: ChainOptions = {}): Promise<DiskChain> {
  return openExpecting(path, 'vhd', options);
}

async function openExpecting(path: string, format: ImageFormat, options: ChainOptions): Promise<DiskChain> {
  const found = await detectFormat(path);
  if (found !== format) {
    if (format === 'vhdx' && found === 'raw') throw formatError('vhdx', path, 'bad-signature', 'file type identifier is not "vhdxfile"');
    if (format === 'vhd' && found === 'raw') throw formatError('vhd', path, 'bad-signature', 'no "conectix" footer at the end of the file');
    throw new ChunkvaultError('INVALID_ARGUMENT', `${path} is a ${found} image, not ${format}`, { details: { path, format: found, reason: 'wrong-format' } });
  }
  return DiskChain.open(path, options);
}
