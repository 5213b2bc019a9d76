/**
 * `kvm:/path/disk.qcow2`: a qcow2 image at rest (its VM shut down) as a front-end,
 * owning its persistent dirty bitmaps (life cycle in bitmaps.ts).
 *
 * One backup:
 *   1. `qemu-img info`: the bitmaps present; decide incremental or full.
 *   2. `qemu-img bitmap`: absorb leftovers into B_old, add B_new, disable B_old.
 *   3. `qemu-nbd -r -B B_old -B B_new` on a private unix socket; read the union of both
 *      bitmaps' dirty extents (incremental) or the allocated extents (full).
 *   4. finish: close the client, stop qemu-nbd by its PID, then remove B_old
 *      (committed) or merge B_new back into B_old (failed).
 *
 * Point in time: the moment qemu-nbd opens the image. Why no external overlay (the
 * other way PEERS.md names): qemu-nbd -r holds qemu's image lock, which refuses every
 * writer (a VM being started, qemu-img, qemu-io) until we stop it, so the exported
 * data cannot change while we read; an overlay would only help if writers had to run
 * during the backup, and then the VM's configuration would have to point at the
 * overlay, which a backup tool must not change. The overlay's other use, avoiding
 * `qemu-nbd -l SNAPSHOT` exporting the active layer's bitmap, does not arise: we
 * export the active layer. A write that slips in between step 2 and step 3 lands in
 * B_new (B_old is disabled), which is why step 3 reads the union: the point is then
 * exactly the image as qemu-nbd opened it, and B_new keeps those bits for the next
 * run (read twice at worst, never missed).
 */
import { basename, extname, join, resolve } from 'node:path';
import type { Extent } from '../../engine/index.js';
import type { BackupPlan, FrontEnd, PlanContext } from '../front-end.js';
import { NbdClient } from '../nbd/index.js';
import { decide, newBitmapName, removeOnCommit, restoreOnFailure, type BitmapDecision } from './bitmaps.js';
import { DEFAULT_CONNECTIONS, NamedSource, Steps, contextsFor, defaultWarning, extentsToRead, makeWorkDir, type KvmFrontEndOptions } from './_common.js';
import { startQemuNbd, type QemuNbdProcess } from './_qemu-nbd.js';
import { bitmapOps, checkQcow2, imageInfo } from './_tools.js';

export type KvmImageFrontEndOptions = KvmFrontEndOptions;

export class KvmImageFrontEnd implements FrontEnd {
  readonly diskName: string;
  private readonly image: string;

  constructor(
    image: string,
    private readonly options: KvmImageFrontEndOptions = {},
  ) {
    this.image = resolve(image);
    // Disk names allow [A-Za-z0-9._:@+-] only (FORMAT.md); anything else in a file name becomes '_'.
    this.diskName = basename(this.image, extname(this.image)).replace(/[^A-Za-z0-9._:@+-]/g, '_') || 'disk';
  }

  async plan(ctx: PlanContext): Promise<BackupPlan> {
    await checkQcow2(this.image);
    const info = await imageInfo(this.image);
    const decision = decide(ctx.parent, ctx.forceFull, info.bitmaps);
    const run = new AtRestRun(this.image, decision, newBitmapName(), this.options);
    try {
      return await run.start();
    } catch (err) {
      await run.finish(false);
      throw err;
    }
  }
}

/** The state of one backup of an image at rest: what has been done, so finish undoes exactly that. */
class AtRestRun {
  private readonly warn: (message: string) => void;
  private work: { path: string; remove: () => Promise<void> } | null = null;
  private server: QemuNbdProcess | null = null;
  private client: NbdClient | null = null;
  private added = false;
  private finished: Promise<void> | null = null;

  constructor(
    private readonly image: string,
    private readonly decision: BitmapDecision,
    private readonly fresh: string,
    private readonly options: KvmImageFrontEndOptions,
  ) {
    this.warn = options.onWarning ?? defaultWarning;
  }

  async start(): Promise<BackupPlan> {
    const d = this.decision;
    if (d.kind === 'incremental' && d.absorb.length > 0) {
      await bitmapOps(this.image, d.old, ['--enable', ...d.absorb.map((merge) => ({ merge }))]);
      for (const name of d.absorb) await bitmapOps(this.image, name, ['--remove']);
    }
    // Add before disabling, so some bitmap records writes at every moment.
    await bitmapOps(this.image, this.fresh, ['--add']);
    this.added = true;
    if (d.kind === 'incremental') await bitmapOps(this.image, d.old, ['--disable']);
    const changed = await this.export();
    const client = this.client as NbdClient;
    return {
      source: new NamedSource(client, `kvm:${this.image}`),
      changed,
      base: d.kind === 'incremental' ? 'parent' : 'zero',
      changeToken: this.fresh,
      meta: this.meta(),
      finish: (committed) => this.finish(committed),
    };
  }

  /** Releases the export, then rotates or restores bitmaps. Runs once; never rejects. */
  finish(committed: boolean): Promise<void> {
    this.finished ??= this.release(committed);
    return this.finished;
  }

  private async export(): Promise<Extent[]> {
    const d = this.decision;
    this.work = await makeWorkDir(this.options.workDir);
    const connections = this.options.connections ?? DEFAULT_CONNECTIONS;
    const bitmaps = d.kind === 'incremental' ? [d.old, this.fresh] : [];
    this.server = await startQemuNbd({
      image: this.image,
      socketPath: join(this.work.path, 'nbd.sock'),
      pidFile: join(this.work.path, 'qemu-nbd.pid'),
      exportName: 'disk',
      bitmaps,
      shared: connections + 1,
    });
    this.client = await NbdClient.connect({ ...this.options.client, uri: this.server.uri, metaContexts: contextsFor(bitmaps), connections });
    return extentsToRead(this.client, bitmaps);
  }

  private meta(): Record<string, unknown> {
    const d = this.decision;
    if (d.kind === 'full') return { frontEnd: 'kvm', bitmap: this.fresh, fullReason: d.reason };
    return { frontEnd: 'kvm', bitmap: this.fresh, changesFrom: d.old, ...(d.absorb.length ? { absorbedBitmaps: [...d.absorb] } : {}) };
  }

  private async release(committed: boolean): Promise<void> {
    const steps = new Steps(this.warn);
    const client = this.client;
    const server = this.server;
    if (client) await steps.step('closing the NBD client', () => client.close());
    // qemu-nbd holds the image lock: it must be gone before qemu-img may change bitmaps.
    if (server) await steps.step(`stopping qemu-nbd (pid ${server.pid})`, () => server.stop());
    await this.settleBitmaps(steps, committed);
    const work = this.work;
    if (work) await steps.step(`removing ${work.path}`, () => work.remove());
  }

  private async settleBitmaps(steps: Steps, committed: boolean): Promise<void> {
    const d = this.decision;
    const img = this.image;
    if (committed) {
      for (const name of removeOnCommit(d)) await steps.step(`removing bitmap ${name} from ${img}`, () => bitmapOps(img, name, ['--remove']));
      return;
    }
    if (!this.added) return;
    const back = restoreOnFailure(d);
    if (back) {
      // B_old records again and holds every write since the parent point, B_new's too.
      const merged = await steps.step(`merging bitmap ${this.fresh} back into ${back} in ${img}`, () => bitmapOps(img, back, ['--enable', { merge: this.fresh }]));
      if (!merged) return; // keep B_new: the next run absorbs it
    }
    await steps.step(`removing bitmap ${this.fresh} from ${img}`, () => bitmapOps(img, this.fresh, ['--remove']));
  }
}
