/**
 * Disk files as a front-end (raw images and block devices by default; any opener, e.g.
 * VHD/VHDX chains): the whole source, or the extents of a user-supplied
 * changed-extents list on top of the previous point.
 */
import { promises as fsp } from 'node:fs';
import { ChunkvaultError, parseExtentsJson, type BlockSource, type Extent } from '../../engine/index.js';
import type { BackupPlan, FrontEnd, PlanContext } from '../front-end.js';
import { FileSource } from './file-source.js';
import { basename } from 'node:path';

async function readExtentsFile(path: string, diskSize: number): Promise<Extent[]> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    throw new ChunkvaultError('EXTENTS_INVALID', `cannot read the extent list ${path}: ${(err as Error).message}`, { cause: err });
  }
  return parseExtentsJson(text, diskSize);
}

/** Opens the disk behind a path (default: raw image or block device). */
export type DiskOpener = (path: string) => Promise<BlockSource>;

export class FileFrontEnd implements FrontEnd {
  readonly diskName: string;

  constructor(
    private readonly path: string,
    private readonly changedExtentsFile?: string,
    private readonly open: DiskOpener = (p) => FileSource.open(p),
  ) {
    this.diskName = basename(path);
  }

  async plan(ctx: PlanContext): Promise<BackupPlan> {
    const source = await this.open(this.path);
    try {
      const useExtents = this.changedExtentsFile !== undefined && !ctx.forceFull;
      const changed = useExtents ? await readExtentsFile(this.changedExtentsFile!, source.sizeBytes) : undefined;
      if (changed && !ctx.parent) {
        throw new ChunkvaultError('NO_PARENT', '--changed-extents needs an earlier point of this vm and disk; run a full backup first');
      }
      return { source, base: 'parent', changeToken: null, ...(changed ? { changed } : {}), finish: async () => undefined };
    } catch (err) {
      await source.close();
      throw err;
    }
  }
}
