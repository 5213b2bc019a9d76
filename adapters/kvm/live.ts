/**
 * `kvm+qmp:/path/qmp.sock?node=NODE`: one disk of a running QEMU VM, reached over its
 * QMP socket, as a front-end (pull backup with fleecing; bitmap life cycle in
 * bitmaps.ts).
 *
 * One backup:
 *   1. query-named-block-nodes: the node's size and bitmaps; decide incremental or full.
 *   2. nbd-server-start on a private unix socket (unless the VM already runs an NBD
 *      server and the source names its socket with `nbd=`).
 *   3. blockdev-add a qcow2 "fleece" overlay whose backing is NODE.
 *   4. absorb leftovers into B_old (one transaction: enable, merge, remove).
 *   5. ONE transaction: block-dirty-bitmap-add B_new (persistent), block-dirty-bitmap-
 *      disable B_old, blockdev-backup NODE -> fleece sync=none. This instant is the
 *      point in time: from now on the backup job copies each old cluster into the
 *      fleece before the guest overwrites it, and new writes go to B_new only.
 *   6. block-export-add of the fleece (read-only) with `bitmaps: [B_old]` (QEMU finds
 *      B_old through the fleece's backing chain); read dirty(B_old), or the allocated
 *      extents for a full backup, while the guest keeps writing.
 *   7. finish, always, each step even if an earlier one failed: close the client,
 *      block-export-del (hard), block-job-cancel, blockdev-del fleece, nbd-server-stop
 *      (if ours); then remove B_old (committed) or enable B_old, merge B_new into it
 *      and remove B_new in one transaction (failed).
 *
 * Names of what we create in QEMU: `cv-f-XXXXXXXX` (fleece node), `cv-j-...` (job),
 * `cv-e-...` (export id and name), each with 8 random hex digits (QEMU limits node
 * names to 31 characters). A run killed with SIGKILL leaves them in QEMU; they hold
 * only the fleece, never a bitmap change (B_old and B_new stay in the node, and the
 * next run absorbs B_new).
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ChunkvaultError, type Extent } from '../../engine/index.js';
import type { BackupPlan, FrontEnd, PlanContext } from '../front-end.js';
import { NbdClient } from '../nbd/index.js';
import { decide, newBitmapName, removeOnCommit, restoreOnFailure, type BitmapDecision } from './bitmaps.js';
import { DEFAULT_CONNECTIONS, NamedSource, Steps, contextsFor, defaultWarning, extentsToRead, makeWorkDir, type KvmFrontEndOptions } from './_common.js';
import { QmpClient, type QmpOptions } from './qmp.js';
import { runTool } from './_tools.js';

export interface KvmQmpFrontEndOptions extends KvmFrontEndOptions {
  /** The block node (`node-name`) of the disk's format layer, e.g. `disk0`. */
  readonly node: string;
  /** Unix socket of an NBD server the VM already runs (QEMU runs at most one). */
  readonly nbdSocket?: string;
  /** Directory for the fleece overlay (default: the work directory). It grows by what the guest overwrites during the backup. */
  readonly fleeceDir?: string;
  readonly qmp?: QmpOptions;
}

/** A dirty bitmap as query-named-block-nodes lists it. */
interface QmpBitmap {
  readonly name: string;
  readonly recording?: boolean;
  readonly busy?: boolean;
  readonly inconsistent?: boolean;
}

interface QmpNode {
  readonly 'node-name': string;
  readonly drv?: string;
  readonly image?: { readonly 'virtual-size'?: number };
  readonly 'dirty-bitmaps'?: readonly QmpBitmap[];
}

/** Waiting for QEMU to drop an export or end a job after we asked. */
const SETTLE_TIMEOUT_MS = 15_000;

export class KvmQmpFrontEnd implements FrontEnd {
  readonly diskName: string;

  constructor(
    private readonly qmpSocket: string,
    private readonly options: KvmQmpFrontEndOptions,
  ) {
    if (!options.node) throw new ChunkvaultError('INVALID_ARGUMENT', 'kvm+qmp: sources need the block node: kvm+qmp:/path/qmp.sock?node=NODE');
    this.diskName = options.node;
  }

  async plan(ctx: PlanContext): Promise<BackupPlan> {
    const qmp = await QmpClient.connect(this.qmpSocket, this.options.qmp);
    const run = new LiveRun(qmp, this.qmpSocket, this.options);
    try {
      return await run.start(ctx);
    } catch (err) {
      await run.finish(false);
      throw err;
    }
  }
}

/** One backup of a running VM's disk: what has been created, so finish removes exactly that. */
class LiveRun {
  private readonly warn: (message: string) => void;
  private readonly suffix = randomBytes(4).toString('hex');
  private readonly fleeceNode = `cv-f-${this.suffix}`;
  private readonly jobId = `cv-j-${this.suffix}`;
  private readonly exportId = `cv-e-${this.suffix}`;
  private readonly fresh = newBitmapName();
  private decision: BitmapDecision | null = null;
  private work: { path: string; remove: () => Promise<void> } | null = null;
  private fleeceFile: string | null = null;
  private client: NbdClient | null = null;
  private created = { server: false, fleece: false, job: false, bitmap: false, export: false };
  private finished: Promise<void> | null = null;

  constructor(
    private readonly qmp: QmpClient,
    private readonly qmpSocket: string,
    private readonly options: KvmQmpFrontEndOptions,
  ) {
    this.warn = options.onWarning ?? defaultWarning;
  }

  async start(ctx: PlanContext): Promise<BackupPlan> {
    const node = await this.findNode();
    if (node.drv !== 'qcow2') {
      throw new ChunkvaultError('INVALID_ARGUMENT', `node ${this.node()} is a ${node.drv ?? 'unknown'} node: name the disk's qcow2 format node (persistent bitmaps live there)`, { details: { node: this.node(), driver: node.drv ?? null } });
    }
    const size = node.image?.['virtual-size'];
    if (typeof size !== 'number') throw new ChunkvaultError('PROTOCOL_ERROR', `QMP reports no size for node ${this.options.node}`, { details: { node: this.options.node } });
    const bitmaps = node['dirty-bitmaps'] ?? [];
    const d = decide(ctx.parent, ctx.forceFull, bitmaps.map((b) => ({ name: b.name, inconsistent: b.inconsistent === true, enabled: b.recording !== false })));
    this.decision = d;
    if (d.kind === 'incremental' && bitmaps.some((b) => b.name === d.old && b.busy)) {
      throw new ChunkvaultError('REMOTE_ERROR', `bitmap ${d.old} of node ${this.options.node} is busy (another backup, or the export of a killed one, still uses it)`, { details: { node: this.options.node, bitmap: d.old } });
    }
    this.work = await makeWorkDir(this.options.workDir);
    const socket = await this.startServer();
    await this.addFleece(size);
    if (d.kind === 'incremental' && d.absorb.length > 0) await this.absorb(d.old, d.absorb, bitmaps);
    await this.snapshot(d);
    const changed = await this.exportAndPlan(socket, d);
    return {
      source: new NamedSource(this.client as NbdClient, `kvm+qmp:${this.qmpSocket}?node=${this.options.node}`),
      changed,
      base: d.kind === 'incremental' ? 'parent' : 'zero',
      changeToken: this.fresh,
      meta: meta(d, this.fresh),
      finish: (committed) => this.finish(committed),
    };
  }

  /** Tears down what start made, then settles bitmaps. Runs once; never rejects. */
  finish(committed: boolean): Promise<void> {
    this.finished ??= this.release(committed);
    return this.finished;
  }

  private node(): string {
    return this.options.node;
  }

  private async findNode(): Promise<QmpNode> {
    const nodes = await this.qmp.execute<QmpNode[]>('query-named-block-nodes', { flat: true });
    const node = nodes.find((n) => n['node-name'] === this.node());
    if (!node) {
      const names = nodes.map((n) => n['node-name']).filter((n) => !n.startsWith('#'));
      throw new ChunkvaultError('SOURCE_NOT_FOUND', `the VM has no block node ${this.node()} (nodes: ${names.join(', ') || 'none'})`, { details: { node: this.node(), nodes: names } });
    }
    return node;
  }

  private async startServer(): Promise<string> {
    if (this.options.nbdSocket) return this.options.nbdSocket;
    const socket = join((this.work as { path: string }).path, 'nbd.sock');
    try {
      await this.qmp.execute('nbd-server-start', { addr: { type: 'unix', data: { path: socket } } });
    } catch (err) {
      throw new ChunkvaultError('REMOTE_ERROR', 'cannot start an NBD server in the VM (if it already runs one, name its unix socket with &nbd=PATH in the source)', { cause: err, details: { node: this.node() } });
    }
    this.created.server = true;
    return socket;
  }

  private async addFleece(size: number): Promise<void> {
    const file = join(this.options.fleeceDir ?? (this.work as { path: string }).path, `${this.fleeceNode}.qcow2`);
    this.fleeceFile = file;
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', file, String(size)]);
    await this.qmp.execute('blockdev-add', { driver: 'qcow2', 'node-name': this.fleeceNode, file: { driver: 'file', filename: file }, backing: this.node() });
    this.created.fleece = true;
  }

  /** Folds leftover bitmaps into B_old atomically, B_old recording from then on. */
  private async absorb(old: string, leftovers: readonly string[], bitmaps: readonly QmpBitmap[]): Promise<void> {
    const node = this.node();
    const recording = bitmaps.find((b) => b.name === old)?.recording !== false;
    await this.qmp.execute('transaction', {
      actions: [
        ...(recording ? [] : [{ type: 'block-dirty-bitmap-enable', data: { node, name: old } }]),
        { type: 'block-dirty-bitmap-merge', data: { node, target: old, bitmaps: [...leftovers] } },
        ...leftovers.map((name) => ({ type: 'block-dirty-bitmap-remove', data: { node, name } })),
      ],
    });
  }

  /** The point in time: new bitmap, old one frozen and the fleecing job, all at one instant. */
  private async snapshot(d: BitmapDecision): Promise<void> {
    const node = this.node();
    await this.qmp.execute('transaction', {
      actions: [
        { type: 'block-dirty-bitmap-add', data: { node, name: this.fresh, persistent: true } },
        ...(d.kind === 'incremental' ? [{ type: 'block-dirty-bitmap-disable', data: { node, name: d.old } }] : []),
        { type: 'blockdev-backup', data: { device: node, target: this.fleeceNode, sync: 'none', 'job-id': this.jobId } },
      ],
    });
    this.created.bitmap = true;
    this.created.job = true;
  }

  private async exportAndPlan(socket: string, d: BitmapDecision): Promise<Extent[]> {
    const bitmaps = d.kind === 'incremental' ? [d.old] : [];
    await this.qmp.execute('block-export-add', { type: 'nbd', id: this.exportId, 'node-name': this.fleeceNode, name: this.exportId, writable: false, bitmaps });
    this.created.export = true;
    const connections = this.options.connections ?? DEFAULT_CONNECTIONS;
    const uri = `nbd+unix:///${this.exportId}?socket=${encodeURIComponent(socket)}`;
    this.client = await NbdClient.connect({ ...this.options.client, uri, metaContexts: contextsFor(bitmaps), connections });
    return extentsToRead(this.client, bitmaps);
  }

  private async release(committed: boolean): Promise<void> {
    const steps = new Steps(this.warn);
    const q = this.qmp;
    const client = this.client;
    if (client) await steps.step('closing the NBD client', () => client.close());
    if (this.created.export) {
      await steps.step(`removing export ${this.exportId}`, async () => {
        await q.execute('block-export-del', { id: this.exportId, mode: 'hard' });
        await this.until(async () => !(await q.execute<{ id: string }[]>('query-block-exports')).some((e) => e.id === this.exportId));
      });
    }
    if (this.created.job) {
      await steps.step(`cancelling job ${this.jobId}`, async () => {
        await q.execute('block-job-cancel', { device: this.jobId, force: true });
        await this.until(async () => !(await q.execute<{ device: string }[]>('query-block-jobs')).some((j) => j.device === this.jobId));
      });
    }
    if (this.created.fleece) await steps.step(`removing node ${this.fleeceNode}`, () => q.execute('blockdev-del', { 'node-name': this.fleeceNode }));
    if (this.created.server) await steps.step('stopping the NBD server', () => q.execute('nbd-server-stop'));
    await this.settleBitmaps(steps, committed);
    q.close();
    const fleece = this.fleeceFile;
    if (fleece) await steps.step(`removing ${fleece}`, () => rm(fleece, { force: true }));
    const work = this.work;
    if (work) await steps.step(`removing ${work.path}`, () => work.remove());
  }

  private async settleBitmaps(steps: Steps, committed: boolean): Promise<void> {
    const d = this.decision;
    if (!d || !this.created.bitmap) return;
    const node = this.node();
    if (committed) {
      for (const name of removeOnCommit(d)) await steps.step(`removing bitmap ${name}`, () => this.qmp.execute('block-dirty-bitmap-remove', { node, name }));
      return;
    }
    const back = restoreOnFailure(d);
    const actions = [
      ...(back
        ? [
            { type: 'block-dirty-bitmap-enable', data: { node, name: back } },
            { type: 'block-dirty-bitmap-merge', data: { node, target: back, bitmaps: [this.fresh] } },
          ]
        : []),
      { type: 'block-dirty-bitmap-remove', data: { node, name: this.fresh } },
    ];
    // One transaction: no guest write can fall between re-enabling B_old and dropping B_new.
    await steps.step(back ? `merging bitmap ${this.fresh} back into ${back}` : `removing bitmap ${this.fresh}`, () => this.qmp.execute('transaction', { actions }));
  }

  private async until(done: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    while (!(await done())) {
      if (Date.now() > deadline) throw new ChunkvaultError('TIMEOUT', `QEMU did not settle within ${SETTLE_TIMEOUT_MS} ms`, { details: { node: this.node() } });
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }
}

function meta(d: BitmapDecision, fresh: string): Record<string, unknown> {
  if (d.kind === 'full') return { frontEnd: 'kvm+qmp', bitmap: fresh, fullReason: d.reason };
  return { frontEnd: 'kvm+qmp', bitmap: fresh, changesFrom: d.old, ...(d.absorb.length ? { absorbedBitmaps: [...d.absorb] } : {}) };
}
