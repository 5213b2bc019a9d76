/**
 * The Hyper-V VM front-end (Windows Server 2016+): recovery checkpoints and resilient
 * change tracking (RCT) over WS-Management, disks read as VHDX/VHD chains from a path
 * (a mounted share of the host's VM folder, mapped with `map=`).
 *
 * One run, in this order (and why):
 *
 *   1. checkpoint A (crash-consistent, recovery)  -> ConvertToReferencePoint(A) = R(n)
 *      R(n)'s ResilientChangeTrackingIdentifiers[i] is disk i's change token;
 *   2. checkpoint B (application-consistent by default, recovery) -> read B's disks;
 *      incrementals ask GetVirtualDiskChanges(LimitId = R(n-1)'s id, TargetSnapshotId = B)
 *   committed:     destroy B; destroy R(n-1) (the reference points the parents named)
 *   not committed: destroy B; destroy R(n)   (R(n-1) stays the base of the next run)
 *
 * The engine stores each point's change token at commit, but reads the disks after
 * `plan` returns, so the token must be known before the read. Converting B itself
 * would merge B's differencing disks back into the VHDX we are about to read (on a
 * real host the checkpoint's frozen view is gone after conversion), so the reference
 * point is taken first, from its own checkpoint A. R(n) is no later than B: every
 * write after B is also after R(n), so "changes since R(n)" next time covers
 * everything this backup did not see (writes between R(n) and B are read twice,
 * which costs a little and loses nothing). A is crash-consistent because only its
 * position in time matters, not its contents.
 *
 * A full read (base zero) replaces the changed extents when there is no earlier point,
 * a full backup is asked for, the parent has no RCT id, or GetVirtualDiskChanges
 * refuses the id (a fault or failing return value: the RCT id expired, e.g. after a
 * disk was compacted or moved); the reason is kept in `meta.fullReason`. Transport
 * failures (dropped connection, timeout) fail the backup instead.
 *
 * Disks pair with the RCT ids by position: Hyper-V lists a reference point's ids in
 * the order of the VM's virtual hard disks, the order B's settings list them in.
 */
import { ChunkvaultError, isChunkvaultError } from '../../engine/errors.js';
import type { Extent } from '../../engine/source.js';
import type { PointRecord } from '../../engine/catalog.js';
import type { VmBackupPlan, VmDiskPlan, VmFrontEnd, VmPlanContext } from '../front-end.js';
import { openVirtualDisk } from './disk-chain.js';
import { HYPERV_PASSWORD_ENV, mapHostPath, parseHypervSource, type HypervSource } from './source.js';
import { arrayProp, classUri, embeddedInstance, isEpr, prop, WsmanClient, type CimInstance, type Epr } from './wsman.js';

export interface HypervVmFrontEndOptions {
  /** Default: the CHUNKVAULT_HYPERV_PASSWORD environment variable. */
  readonly password?: string;
  /** Per WS-Man request (default 60 000 ms). */
  readonly timeoutMs?: number;
  /** Per WMI job (default 30 min). */
  readonly jobTimeoutMs?: number;
  /** First job polling interval, doubled up to 5 s (default 50 ms). */
  readonly pollMs?: number;
  /** Cleanup problems that do not fail the backup (default: a line on stderr). */
  readonly onWarning?: (message: string) => void;
}

/** Msvm_VirtualSystemSnapshotSettingData.ConsistencyLevel */
export const CONSISTENCY_LEVEL = { application: 1, crash: 2 } as const;
/** CreateSnapshot SnapshotType of a recovery checkpoint. */
export const RECOVERY_SNAPSHOT = 32768;
/** Msvm_StorageAllocationSettingData.ResourceType of a virtual hard disk ("Logical Disk"). */
const RESOURCE_TYPE_LOGICAL_DISK = '31';
const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SERVICE_KEYS = ['CreationClassName', 'Name', 'SystemCreationClassName', 'SystemName'] as const;

/** The EPR of an instance from its key properties. */
export function eprOf(className: string, inst: CimInstance, keys: readonly string[]): Epr {
  const selectors: Record<string, string> = {};
  for (const k of keys) selectors[k] = prop(inst, k);
  return { resourceUri: classUri(className), selectors };
}

function wqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** A disk name from a host path: the file name without extension, in the catalog's alphabet. */
export function diskNameOf(hostPath: string): string {
  const base = hostPath.replace(/\//g, '\\').split('\\').pop() ?? hostPath;
  const stem = base.replace(/\.a?vhdx?$/i, '').replace(/[^A-Za-z0-9._:@+-]/g, '_').slice(0, 128);
  return stem === '' || stem === '.' || stem === '..' ? 'disk' : stem;
}

interface CheckpointDisk {
  readonly name: string;
  readonly hostPath: string;
}

/** Everything one run made, for cleanup. */
class RunState {
  checkpointB: Epr | null = null;
  checkpointA: Epr | null = null;
  referencePoint: Epr | null = null;
  rctIds: string[] = [];
}

export class HypervVmFrontEnd implements VmFrontEnd {
  readonly vmName: string;
  private readonly src: HypervSource;

  constructor(
    source: string | HypervSource,
    private readonly options: HypervVmFrontEndOptions = {},
  ) {
    this.src = typeof source === 'string' ? parseHypervSource(source) : source;
    this.vmName = this.src.vm;
  }

  private warn(message: string): void {
    if (this.options.onWarning) this.options.onWarning(message);
    else process.stderr.write(`chunkvault: warning: ${message}\n`);
  }

  private client(): WsmanClient {
    const password = this.options.password ?? process.env[HYPERV_PASSWORD_ENV];
    if (password === undefined) throw new ChunkvaultError('INVALID_ARGUMENT', `no WinRM password: set ${HYPERV_PASSWORD_ENV}`, { details: { env: HYPERV_PASSWORD_ENV } });
    const { https, insecure, host, port, user, auth } = this.src;
    return new WsmanClient({ https, insecure, host, port, user, password, auth, ...(this.options.timeoutMs ? { timeoutMs: this.options.timeoutMs } : {}) });
  }

  async plan(ctx: VmPlanContext): Promise<VmBackupPlan> {
    const w = this.client();
    const run = new RunState();
    const planned: VmDiskPlan[] = [];
    try {
      const vm = await this.findVm(w);
      const vmEpr = eprOf('Msvm_ComputerSystem', vm, ['CreationClassName', 'Name']);
      const snapSvc = await service(w, 'Msvm_VirtualSystemSnapshotService');
      run.checkpointA = await this.checkpoint(w, snapSvc, vmEpr, 'crash', (epr) => (run.checkpointA = epr));
      await this.convertToReferencePoint(w, snapSvc, run);
      run.checkpointB = await this.checkpoint(w, snapSvc, vmEpr, this.src.consistency, (epr) => (run.checkpointB = epr));
      const disks = await checkpointDisks(w, run.checkpointB);
      if (disks.length === 0) throw new ChunkvaultError('SOURCE_NOT_FOUND', `VM "${this.src.vm}" has no virtual hard disks`, { details: { vm: this.src.vm } });
      if (run.rctIds.length !== disks.length) {
        throw new ChunkvaultError('PROTOCOL_ERROR', `the reference point has ${run.rctIds.length} RCT ids for ${disks.length} disks`, { details: { rctIds: run.rctIds.length, disks: disks.length } });
      }
      const imageSvc = await service(w, 'Msvm_ImageManagementService');
      for (const [i, d] of disks.entries()) {
        if (ctx.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
        planned.push(await this.planDisk(w, imageSvc, run, d, run.rctIds[i]!, ctx.forceFull ? null : await ctx.parentOf(d.name), ctx.forceFull));
      }
      const vmId = prop(vm, 'Name');
      const config = { hypervVm: vmId, elementName: vm['ElementName'] ?? null, disks: disks.map((d, i) => ({ disk: d.name, hostPath: d.hostPath, rctId: run.rctIds[i] ?? null })) };
      const parentTokens = await parentTokensOf(ctx, disks);
      return { disks: planned, config, meta: { hypervVm: vmId, referencePoint: run.referencePoint?.selectors['InstanceID'] ?? null }, finish: (committed) => this.finishRun(w, vmId, run, committed, parentTokens) };
    } catch (err) {
      for (const { plan } of planned) await plan.source.close().catch(() => undefined);
      await this.cleanup(w, run, false);
      w.close();
      throw err;
    }
  }

  /** The VM by GUID (`Name`) or by ElementName: exactly one. */
  private async findVm(w: WsmanClient): Promise<CimInstance> {
    const where = GUID_RE.test(this.src.vm) ? `Name=${wqlString(this.src.vm)}` : `ElementName=${wqlString(this.src.vm)}`;
    const vms = (await w.enumerate('Msvm_ComputerSystem', `SELECT * FROM Msvm_ComputerSystem WHERE ${where}`)).filter((v) => v['Caption'] !== 'Hosting Computer System');
    if (vms.length === 0) throw new ChunkvaultError('SOURCE_NOT_FOUND', `no VM "${this.src.vm}" on ${this.src.host}`, { details: { vm: this.src.vm } });
    if (vms.length > 1) throw new ChunkvaultError('INVALID_ARGUMENT', `${vms.length} VMs are named "${this.src.vm}": name it by GUID`, { details: { vm: this.src.vm, guids: vms.map((v) => String(v['Name'])) } });
    return vms[0]!;
  }

  private jobArgs(): [number, number] {
    return [this.options.jobTimeoutMs ?? 1_800_000, this.options.pollMs ?? 50];
  }

  /**
   * CreateSnapshot as a recovery checkpoint; resolves to the checkpoint's EPR. `made`
   * hears of it as soon as the host names it, before the job ends, so that a failure
   * while polling still removes it.
   */
  private async checkpoint(w: WsmanClient, svc: Epr, vm: Epr, consistency: 'application' | 'crash', made: (epr: Epr) => void): Promise<Epr> {
    const settings = embeddedInstance('Msvm_VirtualSystemSnapshotSettingData', { ConsistencyLevel: { type: 'uint8', value: CONSISTENCY_LEVEL[consistency] } });
    const started = await w.invoke(svc, 'CreateSnapshot', { AffectedSystem: vm, SnapshotSettings: settings, SnapshotType: RECOVERY_SNAPSHOT });
    const early = started['ResultingSnapshot'];
    if (isEpr(early)) made(early);
    const out = await w.awaitOutput(started, 'CreateSnapshot', ...this.jobArgs());
    return resulting(w, out, 'ResultingSnapshot', 'Msvm_VirtualSystemSettingData');
  }

  /**
   * Checkpoint A becomes reference point R(n); its RCT ids are this run's tokens. Once
   * the host names R(n), A is no longer ours to remove (it is being converted) and R(n) is.
   */
  private async convertToReferencePoint(w: WsmanClient, svc: Epr, run: RunState): Promise<void> {
    const started = await w.invoke(svc, 'ConvertToReferencePoint', { AffectedSnapshot: run.checkpointA! });
    const early = started['ResultingReferencePoint'];
    if (isEpr(early)) {
      run.referencePoint = early;
      run.checkpointA = null;
    }
    const out = await w.awaitOutput(started, 'ConvertToReferencePoint', ...this.jobArgs());
    run.referencePoint = await resulting(w, out, 'ResultingReferencePoint', 'Msvm_VirtualSystemReferencePoint');
    run.checkpointA = null;
    const rp = await w.get('Msvm_VirtualSystemReferencePoint', { ...run.referencePoint.selectors });
    run.rctIds = arrayProp(rp, 'ResilientChangeTrackingIdentifiers');
  }

  private async planDisk(w: WsmanClient, imageSvc: Epr, run: RunState, d: CheckpointDisk, rctId: string, parent: PointRecord | null, forceFull: boolean): Promise<VmDiskPlan> {
    const source = await openVirtualDisk(mapHostPath(d.hostPath, this.src.map));
    try {
      let fullReason: string | null = forceFull ? 'full backup requested' : parent === null ? 'first backup of this disk' : parent.changeToken === null ? 'the previous point has no RCT id' : null;
      let changed: Extent[] | undefined;
      if (fullReason === null) {
        try {
          changed = await diskChanges(w, imageSvc, d.hostPath, parent!.changeToken!, run.checkpointB!, source.sizeBytes);
        } catch (err) {
          if (!isChunkvaultError(err, 'REMOTE_ERROR')) throw err;
          fullReason = `GetVirtualDiskChanges refused RCT id ${parent!.changeToken}: ${err.message}`;
        }
      }
      const meta = { hypervDiskPath: d.hostPath, rctId, checkpoint: run.checkpointB!.selectors['InstanceID'] ?? null, ...(fullReason !== null ? { fullReason } : {}) };
      return { disk: d.name, plan: { source, ...(changed ? { changed } : {}), base: fullReason === null ? 'parent' : 'zero', changeToken: rctId, meta, finish: async () => undefined } };
    } catch (err) {
      await source.close().catch(() => undefined);
      throw err;
    }
  }

  private async finishRun(w: WsmanClient, vmId: string, run: RunState, committed: boolean, parentTokens: ReadonlySet<string>): Promise<void> {
    try {
      await this.cleanup(w, run, committed);
      if (committed && parentTokens.size > 0) await this.destroyOlderReferencePoints(w, vmId, run, parentTokens);
    } finally {
      w.close();
    }
  }

  /** Removes checkpoint B (always) and, unless committed, what A became; never throws. */
  private async cleanup(w: WsmanClient, run: RunState, committed: boolean): Promise<void> {
    const snap = async (epr: Epr | null, what: string): Promise<void> => {
      if (epr === null) return;
      try {
        await w.invokeAndWait(await service(w, 'Msvm_VirtualSystemSnapshotService'), 'DestroySnapshot', { AffectedSnapshot: epr }, ...this.jobArgs());
      } catch (err) {
        this.warn(`cannot remove ${what} ${epr.selectors['InstanceID'] ?? ''}: ${err instanceof Error ? err.message : String(err)}`);
      }
    };
    await snap(run.checkpointB, 'the checkpoint');
    await snap(run.checkpointA, 'the reference checkpoint');
    if (!committed && run.referencePoint !== null) await this.destroyReferencePoint(w, run.referencePoint);
  }

  private async destroyReferencePoint(w: WsmanClient, rp: Epr): Promise<void> {
    try {
      await w.invokeAndWait(await service(w, 'Msvm_VirtualSystemReferencePointService'), 'DestroyReferencePoint', { AffectedReferencePoint: rp }, ...this.jobArgs());
    } catch (err) {
      this.warn(`cannot destroy reference point ${rp.selectors['InstanceID'] ?? ''}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /** The reference points the parents' tokens name (never R(n) nor another product's). */
  private async destroyOlderReferencePoints(w: WsmanClient, vmId: string, run: RunState, parentTokens: ReadonlySet<string>): Promise<void> {
    let points: CimInstance[];
    try {
      points = await w.enumerate('Msvm_VirtualSystemReferencePoint', `SELECT * FROM Msvm_VirtualSystemReferencePoint WHERE VirtualSystemIdentifier=${wqlString(vmId)}`);
    } catch (err) {
      this.warn(`cannot list reference points: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    const current = run.referencePoint?.selectors['InstanceID'];
    for (const p of points) {
      if (p['InstanceID'] === current) continue;
      if (arrayProp(p, 'ResilientChangeTrackingIdentifiers').some((id) => parentTokens.has(id))) {
        await this.destroyReferencePoint(w, eprOf('Msvm_VirtualSystemReferencePoint', p, ['InstanceID']));
      }
    }
  }
}

async function parentTokensOf(ctx: VmPlanContext, disks: readonly CheckpointDisk[]): Promise<Set<string>> {
  const out = new Set<string>();
  for (const d of disks) {
    const t = (await ctx.parentOf(d.name))?.changeToken;
    if (t) out.add(t);
  }
  return out;
}

/** The single instance of a Hyper-V service class, as an EPR. */
async function service(w: WsmanClient, className: string): Promise<Epr> {
  const all = await w.enumerate(className);
  if (all.length === 0) throw new ChunkvaultError('SOURCE_NOT_FOUND', `the host has no ${className}: is the Hyper-V role installed?`, { details: { className } });
  return eprOf(className, all[0]!, SERVICE_KEYS);
}

/** An output reference (`ResultingSnapshot`, ...), or else what the job names as affected. */
async function resulting(w: WsmanClient, out: CimInstance, name: string, className: string): Promise<Epr> {
  const v = out[name];
  if (isEpr(v)) return v;
  const job = out['Job'];
  if (isEpr(job)) {
    const q = `ASSOCIATORS OF {Msvm_ConcreteJob.InstanceID=${wqlString(job.selectors['InstanceID'] ?? '')}} WHERE AssocClass=Msvm_AffectedJobElement ResultClass=${className}`;
    const found = await w.enumerate(className, q);
    if (found[0]) return eprOf(className, found[0], ['InstanceID']);
  }
  throw new ChunkvaultError('PROTOCOL_ERROR', `no ${name} after the job completed`, { details: { output: name } });
}

/** The virtual hard disks of a checkpoint, in the order its settings list them. */
async function checkpointDisks(w: WsmanClient, snapshot: Epr): Promise<CheckpointDisk[]> {
  const id = snapshot.selectors['InstanceID'] ?? '';
  const q = `ASSOCIATORS OF {Msvm_VirtualSystemSettingData.InstanceID=${wqlString(id)}} WHERE ResultClass=Msvm_StorageAllocationSettingData`;
  const sasd = await w.enumerate('Msvm_StorageAllocationSettingData', q);
  const disks: CheckpointDisk[] = [];
  const seen = new Set<string>();
  for (const s of sasd) {
    if (s['ResourceType'] !== RESOURCE_TYPE_LOGICAL_DISK) continue;
    const hostPath = arrayProp(s, 'HostResource')[0];
    if (hostPath === undefined || hostPath === '') continue;
    let name = diskNameOf(hostPath);
    for (let n = 2; seen.has(name); n++) name = `${diskNameOf(hostPath)}-${n}`;
    seen.add(name);
    disks.push({ name, hostPath });
  }
  return disks;
}

/**
 * GetVirtualDiskChanges from `limitId` to the checkpoint, paging on ProcessedByteLength
 * (the host may answer for less than it was asked). Extents are checked, clipped to the
 * disk, sorted and merged.
 */
export async function diskChanges(w: WsmanClient, imageSvc: Epr, path: string, limitId: string, target: Epr, sizeBytes: number): Promise<Extent[]> {
  const out: Extent[] = [];
  for (let offset = 0; offset < sizeBytes; ) {
    const r = await w.invokeAndWait(imageSvc, 'GetVirtualDiskChanges', {
      Path: path,
      LimitId: limitId,
      TargetSnapshotId: target.selectors['InstanceID'] ?? '',
      ByteOffset: offset,
      ByteLength: sizeBytes - offset,
    });
    const offsets = arrayProp(r, 'ChangedByteOffsets').map(Number);
    const lengths = arrayProp(r, 'ChangedByteLengths').map(Number);
    const processed = Number(r['ProcessedByteLength']);
    if (offsets.length !== lengths.length || !Number.isSafeInteger(processed) || processed <= 0) {
      throw new ChunkvaultError('PROTOCOL_ERROR', 'GetVirtualDiskChanges answered an invalid page', { details: { offsets: offsets.length, lengths: lengths.length, processed: String(r['ProcessedByteLength']) } });
    }
    for (const [i, at] of offsets.entries()) {
      const end = Math.min(at + lengths[i]!, sizeBytes);
      if (!Number.isSafeInteger(at) || at < offset || end <= at) {
        if (end === at) continue;
        throw new ChunkvaultError('PROTOCOL_ERROR', `GetVirtualDiskChanges returned the extent ${at}+${lengths[i]} outside ${offset}+${sizeBytes - offset}`, { details: { offset: at, length: lengths[i] ?? null } });
      }
      out.push({ offset: at, length: end - at });
    }
    offset += processed;
  }
  return normalizeExtents(out);
}

/** Sorted, with overlapping or touching extents merged (the engine wants them disjoint and ordered). */
export function normalizeExtents(extents: readonly Extent[]): Extent[] {
  const out: { offset: number; length: number }[] = [];
  for (const e of [...extents].sort((a, b) => a.offset - b.offset)) {
    const last = out[out.length - 1];
    if (last && e.offset <= last.offset + last.length) last.length = Math.max(last.length, e.offset + e.length - last.offset);
    else out.push({ offset: e.offset, length: e.length });
  }
  return out;
}
