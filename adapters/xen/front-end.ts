/**
 * The XenServer / XCP-ng VM front-end: what Xen backup products do with XenAPI
 * changed block tracking.
 *
 * Per disk (a VBD of type Disk with a VDI; CDs and empty drives are skipped):
 *
 *   enable_cbt (if off) -> snapshot S(n) -> list_changed_blocks(S(n-1), S(n))
 *        -> get_nbd_info(S(n)) -> read over NBD+TLS (or export_raw_vdi over HTTP)
 *   committed:     data_destroy S(n-1)  (its CBT metadata stays; S(n) is the next base)
 *   not committed: destroy S(n)         (S(n-1) stays the base of the next run)
 *
 * The point's change token is S(n)'s uuid. A full read of allocated data replaces
 * the bitmap when there is no earlier point, a full backup is asked for, CBT was off,
 * S(n-1) is gone or belongs to another VDI, or list_changed_blocks fails with a
 * XenAPI error (e.g. VDI_NO_CBT_METADATA after a CBT reset); the reason is kept in the
 * point's `meta.fullReason`.
 *
 * The NBD server is authenticated by the certificate get_nbd_info returns, pinned by
 * its SHA-256 (XAPI's certificates are self-signed, so a CA check would not apply).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ChunkvaultError, isChunkvaultError } from '../../engine/errors.js';
import type { BlockSource, Extent } from '../../engine/source.js';
import type { PointRecord } from '../../engine/catalog.js';
import type { BackupPlan, VmBackupPlan, VmDiskPlan, VmFrontEnd, VmPlanContext } from '../front-end.js';
import { NbdClient, type NbdClientOptions } from '../nbd/client.js';
import type { NbdUri } from '../nbd/uri.js';
import { decodeChangedBlocks } from './bitmap.js';
import { HttpVdiSource } from './http-source.js';
import { parseXenSource, XEN_PASSWORD_ENV, type XenSource } from './source.js';
import { toInt, XapiClient, xenCode, type XapiEndpoint } from './xapi.js';

export interface XenVmFrontEndOptions {
  /** Default: the CHUNKVAULT_XEN_PASSWORD environment variable. */
  readonly password?: string;
  /** NBD connections per disk (default 2). */
  readonly nbdConnections?: number;
  readonly nbdClient?: Partial<Omit<NbdClientOptions, 'uri'>>;
  /** XenAPI call timeout (default 60 000 ms). */
  readonly timeoutMs?: number;
  /** Cleanup problems that do not fail the backup (default: a line on stderr). */
  readonly onWarning?: (message: string) => void;
}

/** A disk of the VM as XenAPI describes it. */
interface XenDisk {
  readonly name: string;
  readonly vdiRef: string;
  readonly vdiUuid: string;
  readonly sizeBytes: number;
  readonly cbtEnabled: boolean;
}

/** One entry of VDI.get_nbd_info. */
interface NbdInfo {
  readonly address: string;
  readonly port: number | string;
  readonly exportname: string;
  readonly cert: string;
  readonly subject?: string;
}

type Rec = Record<string, unknown>;

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function userdeviceName(userdevice: string): string {
  const n = Number(userdevice);
  return Number.isInteger(n) && n >= 0 && n < 26 ? `xvd${String.fromCharCode(97 + n)}` : `xvd-${userdevice}`;
}

async function collect(it: AsyncIterable<Extent>): Promise<Extent[]> {
  const out: Extent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

export class XenVmFrontEnd implements VmFrontEnd {
  readonly vmName: string;
  private readonly src: XenSource;

  constructor(
    source: string | XenSource,
    private readonly options: XenVmFrontEndOptions = {},
  ) {
    this.src = typeof source === 'string' ? parseXenSource(source) : source;
    this.vmName = this.src.vm;
  }

  private endpoint(): XapiEndpoint {
    const { https, host, port, caFile } = this.src;
    let ca: Buffer | undefined;
    if (caFile !== undefined) {
      try {
        ca = readFileSync(caFile);
      } catch (err) {
        throw new ChunkvaultError('INVALID_ARGUMENT', `cannot read the CA file ${caFile}`, { cause: err, details: { path: caFile } });
      }
    }
    return { protocol: https ? 'https:' : 'http:', host, port, ...(ca ? { ca } : {}) };
  }

  private warn(message: string): void {
    if (this.options.onWarning) this.options.onWarning(message);
    else process.stderr.write(`chunkvault: warning: ${message}\n`);
  }

  async plan(ctx: VmPlanContext): Promise<VmBackupPlan> {
    const password = this.options.password ?? process.env[XEN_PASSWORD_ENV];
    if (password === undefined) throw new ChunkvaultError('INVALID_ARGUMENT', `no XenAPI password: set ${XEN_PASSWORD_ENV}`, { details: { env: XEN_PASSWORD_ENV } });
    const x = await XapiClient.login({ endpoint: this.endpoint(), user: this.src.user, password, ...(this.options.timeoutMs ? { timeoutMs: this.options.timeoutMs } : {}) });
    const planned: VmDiskPlan[] = [];
    try {
      const vm = await this.findVm(x);
      const disks = await this.listDisks(x, vm.ref);
      for (const d of disks) {
        if (ctx.signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'backup interrupted');
        planned.push({ disk: d.name, plan: await this.planDisk(x, d, await ctx.parentOf(d.name), ctx.forceFull) });
      }
      const config = { xenVm: vm.uuid, nameLabel: vm.nameLabel, disks: disks.map((d) => ({ disk: d.name, vdi: d.vdiUuid, sizeBytes: d.sizeBytes })) };
      return { disks: planned, config, meta: { xenApi: x.protocol }, finish: () => x.logout() };
    } catch (err) {
      for (const { plan } of planned) {
        await plan.finish(false).catch(() => undefined);
        await plan.source.close().catch(() => undefined);
      }
      await x.logout();
      throw err;
    }
  }

  /** The VM by uuid, else by name label (exactly one, not a template or snapshot). */
  private async findVm(x: XapiClient): Promise<{ ref: string; uuid: string; nameLabel: string }> {
    let refs: string[] = [];
    if (UUID_RE.test(this.src.vm)) {
      try {
        refs = [await x.call<string>('VM.get_by_uuid', this.src.vm)];
      } catch (err) {
        if (xenCode(err) !== 'UUID_INVALID') throw err;
      }
    }
    if (refs.length === 0) refs = await x.call<string[]>('VM.get_by_name_label', this.src.vm);
    const vms: { ref: string; uuid: string; nameLabel: string }[] = [];
    for (const ref of refs) {
      const r = await x.call<Rec>('VM.get_record', ref);
      if (r['is_a_template'] === true || r['is_a_snapshot'] === true) continue;
      vms.push({ ref, uuid: String(r['uuid']), nameLabel: String(r['name_label']) });
    }
    if (vms.length === 0) throw new ChunkvaultError('SOURCE_NOT_FOUND', `no VM "${this.src.vm}" on ${this.src.host}`, { details: { vm: this.src.vm } });
    if (vms.length > 1) {
      throw new ChunkvaultError('INVALID_ARGUMENT', `${vms.length} VMs are named "${this.src.vm}": name it by uuid`, { details: { vm: this.src.vm, uuids: vms.map((v) => v.uuid) } });
    }
    return vms[0] as { ref: string; uuid: string; nameLabel: string };
  }

  private async listDisks(x: XapiClient, vmRef: string): Promise<XenDisk[]> {
    const vbds = await x.call<string[]>('VM.get_VBDs', vmRef);
    const disks: (XenDisk & { order: number })[] = [];
    for (const vbdRef of vbds) {
      const vbd = await x.call<Rec>('VBD.get_record', vbdRef);
      const vdiRef = String(vbd['VDI'] ?? 'OpaqueRef:NULL');
      if (vbd['type'] !== 'Disk' || vbd['empty'] === true || vdiRef === 'OpaqueRef:NULL') continue;
      const vdi = await x.call<Rec>('VDI.get_record', vdiRef);
      const userdevice = String(vbd['userdevice'] ?? '');
      const device = typeof vbd['device'] === 'string' && vbd['device'] !== '' ? vbd['device'] : userdeviceName(userdevice);
      const name = this.src.names === 'vdi' ? String(vdi['name_label']) : device;
      disks.push({
        name,
        vdiRef,
        vdiUuid: String(vdi['uuid']),
        sizeBytes: toInt(vdi['virtual_size'], 'VDI.virtual_size'),
        cbtEnabled: vdi['cbt_enabled'] === true,
        order: Number(userdevice) || 0,
      });
    }
    if (disks.length === 0) throw new ChunkvaultError('SOURCE_NOT_FOUND', `VM "${this.src.vm}" has no disks`, { details: { vm: this.src.vm } });
    return disks.sort((a, b) => a.order - b.order).map(({ order: _order, ...d }) => d);
  }

  private async planDisk(x: XapiClient, d: XenDisk, parent: PointRecord | null, forceFull: boolean): Promise<BackupPlan> {
    let fullReason: string | null = forceFull ? 'full backup requested' : parent === null ? 'first backup of this disk' : null;
    if (!d.cbtEnabled) {
      await x.call('VDI.enable_cbt', d.vdiRef);
      fullReason ??= 'CBT was not enabled on the VDI (enabled now)';
    }
    const snapRef = await x.call<string>('VDI.snapshot', d.vdiRef, {});
    try {
      const snapUuid = await x.call<string>('VDI.get_uuid', snapRef);
      const prev = await previousSnapshot(x, d, parent);
      let changed: Extent[] | undefined;
      if (fullReason === null) fullReason = prev.reason;
      if (fullReason === null && prev.ref !== null) {
        try {
          changed = decodeChangedBlocks(await x.call<string>('VDI.list_changed_blocks', prev.ref, snapRef), d.sizeBytes);
        } catch (err) {
          if (xenCode(err) === null) throw err;
          fullReason = `VDI.list_changed_blocks failed: ${xenCode(err)}`;
        }
      }
      const transport = await this.openTransport(x, snapRef, d);
      if (fullReason !== null) {
        try {
          changed = transport.allocated ? await transport.allocated() : undefined;
        } catch (err) {
          await transport.source.close();
          throw err;
        }
      }
      return {
        source: transport.source,
        ...(changed ? { changed } : {}),
        base: fullReason === null ? 'parent' : 'zero',
        changeToken: snapUuid,
        meta: { xenVdi: d.vdiUuid, xenSnapshot: snapUuid, transport: transport.kind, ...(fullReason !== null ? { fullReason } : {}) },
        finish: (committed) => this.finishDisk(x, d, committed, snapRef, prev.destroyable),
      };
    } catch (err) {
      await x.call('VDI.destroy', snapRef).catch((e: unknown) => this.warn(`cannot destroy snapshot ${snapRef} of ${d.name}: ${String(e)}`));
      throw err;
    }
  }

  private async finishDisk(x: XapiClient, d: XenDisk, committed: boolean, snapRef: string, prevRef: string | null): Promise<void> {
    try {
      if (!committed) await x.call('VDI.destroy', snapRef);
      else if (prevRef !== null) await x.call('VDI.data_destroy', prevRef);
    } catch (err) {
      const what = committed ? `data_destroy of the previous snapshot ${prevRef}` : `destroy of the new snapshot ${snapRef}`;
      this.warn(`disk ${d.name}: ${what} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private async openTransport(x: XapiClient, snapRef: string, d: XenDisk): Promise<{ source: BlockSource; kind: 'nbd' | 'http'; allocated?: () => Promise<Extent[]> }> {
    const infos = this.src.transport === 'http' ? [] : await x.call<NbdInfo[]>('VDI.get_nbd_info', snapRef);
    if (infos.length === 0) {
      if (this.src.transport === 'nbd') throw new ChunkvaultError('SOURCE_NOT_FOUND', 'VDI.get_nbd_info returned no NBD endpoint: NBD is not enabled on the pool', { details: { vdi: d.vdiUuid } });
      const source = new HttpVdiSource({ endpoint: x.endpoint, vdiRef: snapRef, sessionId: x.sessionId, sizeBytes: d.sizeBytes });
      return { source, kind: 'http' };
    }
    const client = await this.connectNbd(infos, d);
    return { source: client, kind: 'nbd', allocated: () => collect(client.allocatedExtents()) };
  }

  /** Tries each endpoint in turn; a TLS failure stops at once (never fall over to a less trusted path). */
  private async connectNbd(infos: readonly NbdInfo[], d: XenDisk): Promise<NbdClient> {
    let last: unknown;
    for (const info of infos) {
      const uri: NbdUri = {
        address: { transport: 'tcp', host: info.address, port: toInt(info.port, 'nbd_info.port') },
        exportName: info.exportname,
        tls: { pinSha256: certificatePin(info.cert) },
      };
      try {
        const client = await NbdClient.connect({ ...this.options.nbdClient, uri, connections: this.options.nbdConnections ?? 2 });
        if (client.sizeBytes !== d.sizeBytes) {
          await client.close();
          throw new ChunkvaultError('PROTOCOL_ERROR', `NBD export of ${d.name} has ${client.sizeBytes} bytes, the VDI ${d.sizeBytes}`, { details: { nbd: client.sizeBytes, vdi: d.sizeBytes } });
        }
        return client;
      } catch (err) {
        if (!isChunkvaultError(err, 'CONNECT_FAILED') && !isChunkvaultError(err, 'TIMEOUT')) throw err;
        last = err;
      }
    }
    throw last;
  }
}

/** SHA-256 of the certificate XAPI returned; a certificate that does not parse is TLS_FAILED. */
function certificatePin(pem: string): string {
  try {
    return new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();
  } catch (err) {
    throw new ChunkvaultError('TLS_FAILED', 'VDI.get_nbd_info returned a certificate that does not parse', { cause: err });
  }
}

/**
 * The previous point's snapshot: `ref` to diff from (null with a `reason` when the chain
 * is broken) and `destroyable`, the snapshot to data_destroy once this backup commits.
 */
async function previousSnapshot(x: XapiClient, d: XenDisk, parent: PointRecord | null): Promise<{ ref: string | null; reason: string | null; destroyable: string | null }> {
  if (parent === null) return { ref: null, reason: null, destroyable: null };
  const token = parent.changeToken;
  if (token === null || !UUID_RE.test(token)) return { ref: null, reason: 'the previous point has no Xen snapshot uuid', destroyable: null };
  let ref: string;
  try {
    ref = await x.call<string>('VDI.get_by_uuid', token);
  } catch (err) {
    if (xenCode(err) !== 'UUID_INVALID') throw err;
    return { ref: null, reason: `the previous snapshot ${token} is gone`, destroyable: null };
  }
  const rec = await x.call<Rec>('VDI.get_record', ref);
  if (rec['snapshot_of'] !== d.vdiRef) return { ref: null, reason: `the previous snapshot ${token} is not a snapshot of this VDI`, destroyable: null };
  return { ref, reason: null, destroyable: rec['type'] === 'cbt_metadata' ? null : ref };
}
