/**
 * The VMware vSphere VM front-end: the VADP backup flow without VDDK.
 *
 *   login -> find VM -> (CBT off: ReconfigVM_Task changeTrackingEnabled=true, then a
 *   create+remove snapshot round so it takes effect) -> CreateSnapshot_Task S
 *   -> per VirtualDisk of S's config.hardware.device: QueryChangedDiskAreas(S, key,
 *      offset, previous changeId or "*") paged over the capacity
 *   -> read the areas over san / nbd / http (/folder Range reads), in the configured order
 *   -> VM plan finish: RemoveSnapshot_Task(S, consolidate) ALWAYS, then Logout.
 *
 * The point's change token is the disk's `backing.changeId` in S. A full read (of the
 * areas "*" returns, i.e. the allocated data) replaces the changed areas when there is
 * no earlier point, a full backup is asked for, CBT was just enabled, the previous point
 * has no changeId, or QueryChangedDiskAreas faults (a CBT reset); the reason is kept in
 * the point's `meta.fullReason`.
 */
import { readFile, stat } from 'node:fs/promises';
import { ChunkvaultError } from '../../engine/errors.js';
import type { BlockSource, Extent } from '../../engine/source.js';
import type { PointRecord } from '../../engine/catalog.js';
import type { BackupPlan, VmBackupPlan, VmDiskPlan, VmFrontEnd, VmPlanContext } from '../front-end.js';
import { FileSource } from '../file/file-source.js';
import { NbdClient } from '../nbd/client.js';
import { parseNbdUri } from '../nbd/uri.js';
import { FolderDiskSource } from './http-source.js';
import { faultType, moXml, toMoRef, VimClient, type MoRef, type VimEndpoint } from './soap.js';
import { parseVmwareSource, VMWARE_PASSWORD_ENV, VMWARE_PASSWORD_FILE_ENV, type VmwareSource, type VmwareTransport } from './source.js';
import { child, children, escapeXml, textAt, type XmlElement } from '../_xml.js';

export interface VmwareVmFrontEndOptions {
  /** Default: the CHUNKVAULT_VMWARE_PASSWORD environment variable. */
  readonly password?: string;
  /** Per SOAP call (default 60 000 ms). */
  readonly timeoutMs?: number;
  /** Per task (default 600 000 ms). */
  readonly taskTimeoutMs?: number;
  /** Cleanup problems that do not fail the backup (default: a line on stderr). */
  readonly onWarning?: (message: string) => void;
}

/** A virtual disk as the snapshot's configuration describes it. */
export interface VmwareDisk {
  readonly name: string;
  readonly key: number;
  /** `[datastore] dir/name.vmdk` */
  readonly fileName: string;
  readonly sizeBytes: number;
  readonly changeId: string | null;
}

const MOREF_RE = /^vm-\d+$/;

/** `[ds] dir/file.vmdk` -> {datastore, path}. */
export function splitDatastorePath(fileName: string): { datastore: string; path: string } {
  const m = /^\[([^\]]+)\]\s*(.+)$/.exec(fileName);
  if (!m) throw new ChunkvaultError('PROTOCOL_ERROR', `vSphere: disk file "${fileName}" is not a datastore path`, { details: { fileName } });
  return { datastore: m[1]!, path: m[2]! };
}

const flatPath = (path: string): string => path.replace(/\.vmdk$/, '-flat.vmdk');
const int = (s: string | undefined, what: string): number => {
  const n = Number(s);
  if (s === undefined || !Number.isSafeInteger(n)) throw new ChunkvaultError('PROTOCOL_ERROR', `vSphere: ${what} is not an integer`, { details: { what, value: s ?? null } });
  return n;
};

/** The VirtualDisk devices of a `config.hardware.device` value. */
export function disksOf(devices: XmlElement | undefined): VmwareDisk[] {
  const out: VmwareDisk[] = [];
  for (const d of devices?.children ?? []) {
    if (d.type !== 'VirtualDisk') continue;
    const key = int(textAt(d, 'key'), 'device key');
    const bytes = textAt(d, 'capacityInBytes');
    const backing = child(d, 'backing');
    out.push({
      name: `disk-${key}`,
      key,
      fileName: textAt(backing, 'fileName') ?? '',
      sizeBytes: bytes !== undefined ? int(bytes, 'capacityInBytes') : int(textAt(d, 'capacityInKB'), 'capacityInKB') * 1024,
      changeId: textAt(backing, 'changeId') ?? null,
    });
  }
  return out.sort((a, b) => a.key - b.key);
}

export class VmwareVmFrontEnd implements VmFrontEnd {
  readonly vmName: string;
  private readonly src: VmwareSource;

  constructor(
    source: string | VmwareSource,
    private readonly options: VmwareVmFrontEndOptions = {},
  ) {
    this.src = typeof source === 'string' ? parseVmwareSource(source) : source;
    this.vmName = (this.src.vm.split('/').pop() ?? this.src.vm).replace(/[^A-Za-z0-9._-]/g, '_');
  }

  private warn(message: string): void {
    if (this.options.onWarning) this.options.onWarning(message);
    else process.stderr.write(`chunkvault: warning: ${message}\n`);
  }

  private endpoint(): VimEndpoint {
    const { https, host, port, insecure, thumbprint } = this.src;
    return { protocol: https ? 'https:' : 'http:', host, port, insecure, ...(thumbprint ? { thumbprint } : {}) };
  }

  /** The caller's, the environment's, or the first line of the password file. */
  private async password(): Promise<string> {
    const given = this.options.password ?? process.env[VMWARE_PASSWORD_ENV];
    if (given !== undefined) return given;
    const file = process.env[VMWARE_PASSWORD_FILE_ENV];
    if (file === undefined) throw new ChunkvaultError('INVALID_ARGUMENT', `no vSphere password: set ${VMWARE_PASSWORD_ENV} or ${VMWARE_PASSWORD_FILE_ENV}`, { details: { env: VMWARE_PASSWORD_ENV } });
    try {
      return (await readFile(file, 'utf8')).split(/\r?\n/)[0] ?? '';
    } catch (err) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `cannot read the vSphere password file ${file}`, { cause: err, details: { path: file } });
    }
  }

  private get taskTimeout(): number {
    return this.options.taskTimeoutMs ?? 600_000;
  }

  async plan(ctx: VmPlanContext): Promise<VmBackupPlan> {
    const password = await this.password();
    const vim = await VimClient.login({ endpoint: this.endpoint(), user: this.src.user, password, ...(this.options.timeoutMs ? { timeoutMs: this.options.timeoutMs } : {}) });
    let snapshot: MoRef | null = null;
    const planned: VmDiskPlan[] = [];
    try {
      const vm = await this.findVm(vim);
      const props = await vim.properties(vm, ['name', 'config.changeTrackingEnabled', 'config.uuid']);
      let cbtReason: string | null = null;
      if (props.get('config.changeTrackingEnabled')?.text !== 'true') {
        await this.enableCbt(vim, vm, ctx.signal);
        cbtReason = 'CBT was not enabled on the VM (enabled now)';
      }
      snapshot = await this.createSnapshot(vim, vm, 'chunkvault backup', ctx.signal);
      const disks = disksOf((await vim.properties(snapshot, ['config.hardware.device'])).get('config.hardware.device'));
      if (disks.length === 0) throw new ChunkvaultError('SOURCE_NOT_FOUND', `VM "${this.src.vm}" has no virtual disks`, { details: { vm: this.src.vm } });
      const datacenter = this.src.datacenter ?? (await datacenterOf(vim, vm));
      for (const d of disks) {
        if (ctx.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
        planned.push({ disk: d.name, plan: await this.planDisk(vim, { vm, snapshot, datacenter }, d, await ctx.parentOf(d.name), ctx.forceFull ? 'full backup requested' : cbtReason) });
      }
      const config = { vmwareVm: vm.value, name: props.get('name')?.text ?? null, uuid: props.get('config.uuid')?.text ?? null, disks: disks.map(({ changeId: _c, ...d }) => d) };
      const snap = snapshot;
      return { disks: planned, config, meta: { vmwareSnapshot: snap.value, logins: vim.logins }, finish: () => this.release(vim, snap) };
    } catch (err) {
      for (const { plan } of planned) await plan.source.close().catch(() => undefined);
      await this.release(vim, snapshot);
      throw err;
    }
  }

  /** Removes the backup snapshot (if any) and logs out; never throws. */
  private async release(vim: VimClient, snapshot: MoRef | null): Promise<void> {
    if (snapshot !== null) {
      const inner = '<removeChildren>false</removeChildren><consolidate>true</consolidate>';
      await vim.task('RemoveSnapshot_Task', snapshot, inner, this.taskTimeout).catch((e: unknown) => this.warn(`cannot remove snapshot ${snapshot.value}: ${e instanceof Error ? e.message : String(e)}`));
    }
    await vim.logout();
  }

  /** By moref id, by inventory path (with a '/'), else by name (exactly one VM). */
  private async findVm(vim: VimClient): Promise<MoRef> {
    const name = this.src.vm;
    if (MOREF_RE.test(name)) {
      const vm = { type: 'VirtualMachine', value: name };
      try {
        await vim.properties(vm, ['name']);
        return vm;
      } catch (err) {
        if (faultType(err) !== 'ManagedObjectNotFound') throw err;
      }
    }
    if (name.includes('/')) {
      const answer = await vim.call('FindByInventoryPath', vim.serviceContent.searchIndex, `<inventoryPath>${escapeXml(name)}</inventoryPath>`);
      const rv = child(answer, 'returnval');
      if (rv && rv.attrs['type'] === 'VirtualMachine') return toMoRef(rv, 'VM');
    } else {
      const matches = await vmsNamed(vim, name);
      if (matches.length > 1) throw new ChunkvaultError('INVALID_ARGUMENT', `${matches.length} VMs are named "${name}": give its inventory path or id`, { details: { vm: name, ids: matches.map((m) => m.value) } });
      if (matches.length === 1) return matches[0]!;
    }
    throw new ChunkvaultError('SOURCE_NOT_FOUND', `no VM "${name}" on ${this.src.host}`, { details: { vm: name } });
  }

  /** ReconfigVM_Task changeTrackingEnabled=true, then a snapshot round so it takes effect. */
  private async enableCbt(vim: VimClient, vm: MoRef, signal?: AbortSignal): Promise<void> {
    await vim.task('ReconfigVM_Task', vm, '<spec><changeTrackingEnabled>true</changeTrackingEnabled></spec>', this.taskTimeout, signal);
    const round = await this.createSnapshot(vim, vm, 'chunkvault CBT activation', signal);
    await vim.task('RemoveSnapshot_Task', round, '<removeChildren>false</removeChildren><consolidate>true</consolidate>', this.taskTimeout);
  }

  private async createSnapshot(vim: VimClient, vm: MoRef, name: string, signal?: AbortSignal): Promise<MoRef> {
    const inner = `<name>${escapeXml(name)}</name><description>${escapeXml(`${name} (chunkvault)`)}</description><memory>false</memory><quiesce>${this.src.quiesce}</quiesce>`;
    return toMoRef(await vim.task('CreateSnapshot_Task', vm, inner, this.taskTimeout, signal), 'snapshot');
  }

  private async planDisk(vim: VimClient, at: { vm: MoRef; snapshot: MoRef; datacenter: string }, d: VmwareDisk, parent: PointRecord | null, forced: string | null): Promise<BackupPlan> {
    let fullReason = forced ?? (parent === null ? 'first backup of this disk' : parent.changeToken === null ? 'the previous point has no changeId' : null);
    let changed: Extent[] | undefined;
    if (fullReason === null) {
      try {
        changed = await changedAreas(vim, at, d, parent!.changeToken!);
      } catch (err) {
        if (faultType(err) === null) throw err;
        fullReason = `QueryChangedDiskAreas failed: ${faultType(err)} (CBT reset)`;
      }
    }
    if (fullReason !== null) {
      try {
        changed = await changedAreas(vim, at, d, '*');
      } catch (err) {
        if (faultType(err) === null) throw err;
        changed = undefined; // no allocation map either: read the whole disk
      }
    }
    const transport = await this.openTransport(vim, at.datacenter, d);
    return {
      source: transport.source,
      ...(changed ? { changed } : {}),
      base: fullReason === null ? 'parent' : 'zero',
      changeToken: d.changeId,
      meta: { vmwareSnapshot: at.snapshot.value, deviceKey: d.key, fileName: d.fileName, transport: transport.kind, ...(fullReason !== null ? { fullReason } : {}) },
      finish: async () => undefined, // the VM plan removes the one snapshot
    };
  }

  /** Tries each configured transport in order; the last failure is thrown. */
  private async openTransport(vim: VimClient, datacenter: string, d: VmwareDisk): Promise<{ source: BlockSource; kind: VmwareTransport }> {
    const { datastore, path } = splitDatastorePath(d.fileName);
    let last: unknown;
    for (const kind of this.src.transports) {
      try {
        if (kind === 'san') {
          const file = `${this.src.sanDir}/${datastore}/${flatPath(path)}`;
          await stat(file);
          return { source: await FileSource.open(file), kind };
        }
        if (kind === 'nbd') {
          const uri = parseNbdUri(this.src.nbdUri!.replaceAll('{disk}', encodeURIComponent(path.replace(/^.*\//, '').replace(/\.vmdk$/, ''))));
          const client = await NbdClient.connect({ uri });
          if (client.sizeBytes !== d.sizeBytes) {
            await client.close();
            throw new ChunkvaultError('PROTOCOL_ERROR', `NBD export of ${d.name} has ${client.sizeBytes} bytes, the disk ${d.sizeBytes}`, { details: { nbd: client.sizeBytes, disk: d.sizeBytes } });
          }
          return { source: client, kind };
        }
        const source = new FolderDiskSource({ endpoint: vim.endpoint, path: flatPath(path), datastore, datacenter, sizeBytes: d.sizeBytes, cookie: () => vim.sessionCookie });
        return { source, kind };
      } catch (err) {
        last = err;
      }
    }
    throw new ChunkvaultError('SOURCE_NOT_FOUND', `no transport could open ${d.fileName} (tried ${this.src.transports.join(', ')}; last: ${last instanceof Error ? last.message : String(last)})`, { cause: last, details: { disk: d.name } });
  }
}

/** QueryChangedDiskAreas paged over the disk's capacity. */
export async function changedAreas(vim: VimClient, at: { vm: MoRef; snapshot: MoRef }, d: VmwareDisk, changeId: string): Promise<Extent[]> {
  const out: Extent[] = [];
  let offset = 0;
  while (offset < d.sizeBytes) {
    const inner = `${moXml('snapshot', at.snapshot)}<deviceKey>${d.key}</deviceKey><startOffset>${offset}</startOffset><changeId>${escapeXml(changeId)}</changeId>`;
    const rv = child(await vim.call('QueryChangedDiskAreas', at.vm, inner), 'returnval');
    const start = int(textAt(rv, 'startOffset'), 'DiskChangeInfo.startOffset');
    const length = int(textAt(rv, 'length'), 'DiskChangeInfo.length');
    if (start !== offset || length <= 0) throw new ChunkvaultError('PROTOCOL_ERROR', 'QueryChangedDiskAreas did not advance', { details: { offset, start, length } });
    for (const a of children(rv, 'changedArea')) {
      const s = int(textAt(a, 'start'), 'changedArea.start');
      const l = int(textAt(a, 'length'), 'changedArea.length');
      if (s < 0 || l < 0 || s + l > d.sizeBytes) throw new ChunkvaultError('PROTOCOL_ERROR', 'QueryChangedDiskAreas returned an area past the disk', { details: { start: s, length: l, size: d.sizeBytes } });
      if (l > 0) out.push({ offset: s, length: l });
    }
    offset = start + length;
  }
  return out;
}

/** Every VM whose name is `name` (a container view over the whole inventory). */
async function vmsNamed(vim: VimClient, name: string): Promise<MoRef[]> {
  const viewManager = { type: 'ViewManager', value: 'ViewManager' };
  const view = toMoRef(child(await vim.call('CreateContainerView', viewManager, `${moXml('container', vim.serviceContent.rootFolder)}<type>VirtualMachine</type><recursive>true</recursive>`), 'returnval'), 'view');
  try {
    const vms = (await vim.properties(view, ['view'])).get('view')?.children.map((c) => toMoRef(c, 'VM')) ?? [];
    const out: MoRef[] = [];
    for (const vm of vms) if ((await vim.properties(vm, ['name'])).get('name')?.text === name) out.push(vm);
    return out;
  } finally {
    await vim.call('DestroyView', view).catch(() => undefined);
  }
}

/** The name of the datacenter holding `vm` (for /folder's dcPath). */
async function datacenterOf(vim: VimClient, vm: MoRef): Promise<string> {
  let at: MoRef = vm;
  for (let depth = 0; depth < 64; depth++) {
    const parent = (await vim.properties(at, at.type === 'VirtualMachine' ? ['parent', 'resourcePool'] : ['parent'])).get('parent');
    if (!parent) break;
    at = toMoRef(parent, 'parent');
    if (at.type === 'Datacenter') return (await vim.properties(at, ['name'])).get('name')?.text ?? at.value;
  }
  throw new ChunkvaultError('PROTOCOL_ERROR', 'vSphere: cannot find the datacenter of the VM: give dc=NAME', { details: { vm: vm.value } });
}
