/**
 * Any NBD export as a front-end. A full backup reads only allocated data (holes and
 * zero extents from `base:allocation` are not read); with a dirty bitmap
 * (`qemu:dirty-bitmap:NAME`) only the dirty extents are read, on top of the previous
 * point. Without a previous point the bitmap cannot be used: the backup is full and
 * the point records why.
 */
import type { Extent } from '../../engine/index.js';
import type { BackupPlan, FrontEnd, PlanContext } from '../front-end.js';
import { NbdClient, type NbdClientOptions } from './client.js';
import { CONTEXT_BASE_ALLOCATION, CONTEXT_DIRTY_BITMAP_PREFIX } from './protocol.js';
import { parseNbdUri } from './uri.js';

export interface NbdFrontEndOptions {
  /** Dirty bitmap to read changes from. */
  readonly bitmap?: string;
  /** Connections to open (default 1: qemu-nbd serves one client unless started with --shared). */
  readonly connections?: number;
  readonly client?: Partial<Omit<NbdClientOptions, 'uri' | 'metaContexts'>>;
}

async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

export class NbdFrontEnd implements FrontEnd {
  readonly diskName: string;

  constructor(
    private readonly uri: string,
    private readonly options: NbdFrontEndOptions = {},
  ) {
    const parsed = parseNbdUri(uri);
    this.diskName = parsed.exportName || 'disk';
  }

  async plan(ctx: PlanContext): Promise<BackupPlan> {
    const bitmap = this.options.bitmap;
    const useBitmap = bitmap !== undefined && ctx.parent !== null && !ctx.forceFull;
    const contexts = useBitmap ? [CONTEXT_BASE_ALLOCATION, CONTEXT_DIRTY_BITMAP_PREFIX + bitmap] : [CONTEXT_BASE_ALLOCATION];
    const client = await NbdClient.connect({ ...this.options.client, uri: this.uri, metaContexts: contexts, connections: this.options.connections ?? 1 });
    try {
      const finish = async () => undefined;
      const changeToken = bitmap ?? null;
      if (useBitmap) {
        const changed = await collect(client.dirtyExtents(bitmap));
        return { source: client, changed, base: 'parent', changeToken, finish };
      }
      const changed = await collect(client.allocatedExtents());
      const meta = bitmap !== undefined ? { fullReason: ctx.forceFull ? 'full backup requested' : 'no earlier point to apply the bitmap to' } : undefined;
      return { source: client, changed, base: 'zero', changeToken, ...(meta ? { meta } : {}), finish };
    } catch (err) {
      await client.close();
      throw err;
    }
  }
}
