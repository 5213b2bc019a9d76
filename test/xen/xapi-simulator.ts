/**
 * A simulator of the published XenAPI calls a CBT backup uses (session.login_with_password,
 * session.logout, VM.get_by_uuid, VM.get_by_name_label, VM.get_record, VM.get_VBDs,
 * VBD.get_record, VDI.get_record, VDI.get_uuid, VDI.get_by_uuid, VDI.enable_cbt,
 * VDI.disable_cbt, VDI.snapshot, VDI.list_changed_blocks, VDI.get_nbd_info,
 * VDI.data_destroy, VDI.destroy, and the export_raw_vdi HTTP handler), with their
 * documented error codes (SESSION_AUTHENTICATION_FAILED, SESSION_INVALID,
 * HANDLE_INVALID, UUID_INVALID, MESSAGE_METHOD_UNKNOWN, VDI_NO_CBT_METADATA,
 * VDI_INCOMPATIBLE_TYPE, VDI_IN_USE), because no XAPI server runs here.
 *
 * It answers JSON-RPC 2.0 on `POST /jsonrpc` and XML-RPC on `POST /` (int64 fields as
 * strings there, as xapi sends them) on 127.0.0.1. VDIs are real raw image files;
 * `VDI.snapshot` copies the file (`cp --reflink=auto`); CBT is modelled per VDI as the
 * set of 64 KiB blocks written in each generation (a generation ends at each
 * snapshot), so list_changed_blocks(A, B) is the union of the generations between A
 * and B. Tests write through `write()` so the simulator sees every write. Snapshots
 * are served by one nbdkit (`file dir=`) with `--tls=require` and certificates made
 * at test time; get_nbd_info returns its certificate PEM (or a wrong one, on request).
 *
 * Fault hooks: `failOnce` (a named call fails with a given error, once), `wrongCert`,
 * `jsonRpc = false` (404 on /jsonrpc, as before xapi had it), `nbd = false` (get_nbd_info
 * returns [], as when no network has NBD enabled), `killNbdkit()`, `resetCbt()`.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, rm, stat, truncate } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { decodeCall, encodeFault, encodeResponse, type XmlRpcValue } from '../../adapters/xen/xmlrpc.js';
import { blocksToBitmap, CBT_BLOCK_SIZE } from '../../adapters/xen/bitmap.js';
import { freePort, startNbdkit, type RunningServer } from '../fixtures/peers.js';
import { makeTestPki, type TestPki } from '../fixtures/tls.js';

const execFileAsync = promisify(execFile);

export interface SimDisk {
  /** VBD device, e.g. `xvda`. */
  readonly device: string;
  readonly userdevice: string;
  /** VDI name label. */
  readonly label: string;
  readonly sizeBytes: number;
}

export interface SimVm {
  readonly name: string;
  readonly disks: readonly SimDisk[];
  /** Adds an empty CD drive (which a backup must skip). */
  readonly cdrom?: boolean;
}

export interface SimulatorOptions {
  readonly dir: string;
  readonly user: string;
  readonly password: string;
  readonly vms: readonly SimVm[];
}

/** XenAPI failure: `["CODE", params...]`. */
class XenFailure {
  constructor(readonly description: string[]) {}
}

interface VdiObj {
  readonly ref: string;
  readonly uuid: string;
  readonly label: string;
  readonly sizeBytes: number;
  /** File with the data, null after data_destroy. */
  file: string | null;
  type: 'user' | 'cbt_metadata';
  cbtEnabled: boolean;
  /** Bumped when CBT is (re-)enabled: older snapshots have no metadata for it. */
  cbtEpoch: number;
  snapshotOf: string | null;
  /** Base VDIs: the generation being written; snapshots: the generation they closed. */
  generation: number;
  /** Snapshots: the CBT epoch they were taken in (-1: CBT was off). */
  snapshotEpoch: number;
  /** Base VDIs: blocks written in each generation. */
  readonly changes: Map<number, Set<number>>;
}

interface VbdObj {
  readonly ref: string;
  readonly uuid: string;
  readonly vm: string;
  readonly vdi: string | null;
  readonly type: 'Disk' | 'CD';
  readonly device: string;
  readonly userdevice: string;
}

interface VmObj {
  readonly ref: string;
  readonly uuid: string;
  readonly name: string;
  readonly vbds: string[];
}

type Handler = (args: unknown[]) => Promise<unknown> | unknown;

const ref = (): string => `OpaqueRef:${randomUUID()}`;

/** Deep copy with every number as a decimal string (xapi's XML-RPC int64 encoding). */
function intsAsStrings(v: unknown): XmlRpcValue {
  if (typeof v === 'number') return String(v);
  if (Array.isArray(v)) return v.map(intsAsStrings);
  if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, intsAsStrings(x)]));
  return v as XmlRpcValue;
}

export class XapiSimulator {
  readonly vms = new Map<string, VmObj>();
  readonly vbds = new Map<string, VbdObj>();
  readonly vdis = new Map<string, VdiObj>();
  readonly sessions = new Set<string>();
  /** Every call, in order: `METHOD` (JSON-RPC) or `xml:METHOD`. */
  readonly calls: string[] = [];
  jsonRpc = true;
  nbd = true;
  wrongCert = false;
  /** Extra nbdkit arguments before the plugin (filters) and after it (their parameters). */
  nbdkitFilters: string[] = [];
  nbdkitParams: string[] = [];
  private readonly failures: { method: string; skip: number; description: string[] }[] = [];
  private readonly handlers = new Map<string, Handler>();
  private nbdkit: RunningServer | null = null;
  private server!: Server;
  private pki!: TestPki;
  private otherPki!: TestPki;
  port = 0;

  private constructor(private readonly o: SimulatorOptions) {
    this.registerHandlers();
  }

  static async start(o: SimulatorOptions): Promise<XapiSimulator> {
    const sim = new XapiSimulator(o);
    sim.pki = await makeTestPki(join(o.dir, 'pki'), 'xapi test CA');
    sim.otherPki = await makeTestPki(join(o.dir, 'pki-other'), 'someone else');
    for (const vm of o.vms) await sim.addVm(vm);
    sim.server = createServer((req, res) => void sim.serve(req, res));
    await new Promise<void>((resolve) => sim.server.listen(0, '127.0.0.1', resolve));
    sim.port = (sim.server.address() as AddressInfo).port;
    return sim;
  }

  async stop(): Promise<void> {
    await this.killNbdkit('SIGTERM');
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  // ---- test-side helpers ----

  /** Makes `method` fail once with `description`, after letting `skip` calls pass. */
  failOnce(method: string, description: string[], skip = 0): void {
    this.failures.push({ method, skip, description });
  }

  /** The base VDI behind `vm`'s VBD `device`. */
  disk(vmName: string, device: string): VdiObj {
    const vm = [...this.vms.values()].find((v) => v.name === vmName);
    const vbd = vm?.vbds.map((r) => this.vbds.get(r) as VbdObj).find((b) => b.device === device);
    if (!vbd || vbd.vdi === null) throw new Error(`no disk ${device} on ${vmName}`);
    return this.vdis.get(vbd.vdi) as VdiObj;
  }

  /** A guest write: into the disk's file, and into CBT when enabled. */
  async write(vmName: string, device: string, offset: number, data: Buffer): Promise<void> {
    const vdi = this.disk(vmName, device);
    if (offset + data.byteLength > vdi.sizeBytes) throw new Error('write past the end of the disk');
    const fh = await open(vdi.file as string, 'r+');
    try {
      await fh.write(data, 0, data.byteLength, offset);
    } finally {
      await fh.close();
    }
    if (!vdi.cbtEnabled || data.byteLength === 0) return;
    let set = vdi.changes.get(vdi.generation);
    if (!set) vdi.changes.set(vdi.generation, (set = new Set()));
    for (let b = Math.floor(offset / CBT_BLOCK_SIZE); b * CBT_BLOCK_SIZE < offset + data.byteLength; b++) set.add(b);
  }

  async contents(vmName: string, device: string): Promise<Buffer> {
    return readFile(this.disk(vmName, device).file as string);
  }

  /** Turns CBT off (as `VDI.disable_cbt` or a storage migration does): its metadata is lost. */
  resetCbt(vmName: string, device: string): void {
    const vdi = this.disk(vmName, device);
    vdi.cbtEnabled = false;
    vdi.changes.clear();
  }

  /** The snapshots of a disk, oldest first. */
  snapshotsOf(vmName: string, device: string): { uuid: string; ref: string; type: string; hasData: boolean }[] {
    const base = this.disk(vmName, device);
    return [...this.vdis.values()]
      .filter((v) => v.snapshotOf === base.ref)
      .sort((a, b) => a.generation - b.generation)
      .map((v) => ({ uuid: v.uuid, ref: v.ref, type: v.type, hasData: v.file !== null }));
  }

  /** Deletes a snapshot behind the backup's back (as an administrator or a storage migration might). */
  async deleteSnapshot(uuid: string): Promise<void> {
    const vdi = [...this.vdis.values()].find((v) => v.uuid === uuid && v.snapshotOf !== null);
    if (!vdi) throw new Error(`no snapshot ${uuid}`);
    if (vdi.file) await rm(vdi.file, { force: true });
    this.vdis.delete(vdi.ref);
  }

  get nbdkitPid(): number | null {
    return this.nbdkit?.pid ?? null;
  }

  /** Stops the NBD server (SIGKILL by default: a crash); the next get_nbd_info starts a new one. */
  async killNbdkit(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const running = this.nbdkit;
    this.nbdkit = null;
    if (running) await running.stop(signal);
  }

  /** Kills the NBD server (SIGKILL) and starts a new one on the same port, as a host would restart it. */
  async restartNbdkit(): Promise<void> {
    const port = this.nbdkit?.port ?? undefined;
    await this.killNbdkit('SIGKILL');
    await this.startNbdkit(port ?? undefined);
  }

  private async startNbdkit(port?: number): Promise<RunningServer> {
    const args = ['--tls=require', `--tls-certificates=${this.pki.dir}`, ...this.nbdkitFilters, 'file', `dir=${this.exportDir()}`, ...this.nbdkitParams];
    this.nbdkit = await startNbdkit({ dir: this.o.dir, port: port ?? (await freePort()), tls: true }, args);
    return this.nbdkit;
  }

  // ---- model ----

  private exportDir(): string {
    return join(this.o.dir, 'export');
  }

  private async addVm(spec: SimVm): Promise<void> {
    await execFileAsync('mkdir', ['-p', this.exportDir()]);
    const vm: VmObj = { ref: ref(), uuid: randomUUID(), name: spec.name, vbds: [] };
    this.vms.set(vm.ref, vm);
    for (const d of spec.disks) {
      const vdi = this.newVdi(d.label, d.sizeBytes, null);
      vdi.file = join(this.exportDir(), `${vdi.uuid}.img`);
      await execFileAsync('touch', [vdi.file]);
      await truncate(vdi.file, d.sizeBytes);
      this.addVbd(vm, { vdi: vdi.ref, type: 'Disk', device: d.device, userdevice: d.userdevice });
    }
    if (spec.cdrom) this.addVbd(vm, { vdi: null, type: 'CD', device: 'xvdd', userdevice: '3' });
  }

  private newVdi(label: string, sizeBytes: number, snapshotOf: string | null): VdiObj {
    const vdi: VdiObj = {
      ref: ref(), uuid: randomUUID(), label, sizeBytes, file: null, type: 'user', cbtEnabled: false, cbtEpoch: 0,
      snapshotOf, generation: 0, snapshotEpoch: -1, changes: new Map(),
    };
    this.vdis.set(vdi.ref, vdi);
    return vdi;
  }

  private addVbd(vm: VmObj, b: Omit<VbdObj, 'ref' | 'uuid' | 'vm'>): void {
    const vbd: VbdObj = { ref: ref(), uuid: randomUUID(), vm: vm.ref, ...b };
    this.vbds.set(vbd.ref, vbd);
    vm.vbds.push(vbd.ref);
  }

  private get<T>(map: Map<string, T>, cls: string, r: unknown): T {
    const obj = map.get(String(r));
    if (!obj) throw new XenFailure(['HANDLE_INVALID', cls, String(r)]);
    return obj;
  }

  private vdiRecord(v: VdiObj): Record<string, unknown> {
    const snapshots = [...this.vdis.values()].filter((s) => s.snapshotOf === v.ref).map((s) => s.ref);
    return {
      uuid: v.uuid, name_label: v.label, virtual_size: v.sizeBytes, cbt_enabled: v.cbtEnabled, type: v.type,
      is_a_snapshot: v.snapshotOf !== null, snapshot_of: v.snapshotOf ?? 'OpaqueRef:NULL', snapshots, read_only: false, SR: 'OpaqueRef:sr0',
    };
  }

  private registerHandlers(): void {
    const h = this.handlers;
    h.set('VM.get_by_uuid', ([u]) => {
      const vm = [...this.vms.values()].find((v) => v.uuid === u);
      if (!vm) throw new XenFailure(['UUID_INVALID', 'VM', String(u)]);
      return vm.ref;
    });
    h.set('VM.get_by_name_label', ([n]) => [...this.vms.values()].filter((v) => v.name === n).map((v) => v.ref));
    h.set('VM.get_record', ([r]) => {
      const vm = this.get(this.vms, 'VM', r);
      return { uuid: vm.uuid, name_label: vm.name, is_a_template: false, is_a_snapshot: false, power_state: 'Running', VBDs: vm.vbds };
    });
    h.set('VM.get_VBDs', ([r]) => this.get(this.vms, 'VM', r).vbds);
    h.set('VBD.get_record', ([r]) => {
      const b = this.get(this.vbds, 'VBD', r);
      return { uuid: b.uuid, VM: b.vm, VDI: b.vdi ?? 'OpaqueRef:NULL', type: b.type, device: b.device, userdevice: b.userdevice, empty: b.vdi === null, mode: b.type === 'CD' ? 'RO' : 'RW' };
    });
    h.set('VDI.get_record', ([r]) => this.vdiRecord(this.get(this.vdis, 'VDI', r)));
    h.set('VDI.get_uuid', ([r]) => this.get(this.vdis, 'VDI', r).uuid);
    h.set('VDI.get_by_uuid', ([u]) => {
      const vdi = [...this.vdis.values()].find((v) => v.uuid === u);
      if (!vdi) throw new XenFailure(['UUID_INVALID', 'VDI', String(u)]);
      return vdi.ref;
    });
    h.set('VDI.enable_cbt', ([r]) => {
      const vdi = this.get(this.vdis, 'VDI', r);
      if (!vdi.cbtEnabled) {
        vdi.cbtEnabled = true;
        vdi.cbtEpoch++;
      }
      return null;
    });
    h.set('VDI.disable_cbt', ([r]) => {
      const vdi = this.get(this.vdis, 'VDI', r);
      vdi.cbtEnabled = false;
      vdi.changes.clear();
      return null;
    });
    h.set('VDI.snapshot', ([r]) => this.snapshot(this.get(this.vdis, 'VDI', r)));
    h.set('VDI.list_changed_blocks', ([a, b]) => this.listChangedBlocks(this.get(this.vdis, 'VDI', a), this.get(this.vdis, 'VDI', b)));
    h.set('VDI.get_nbd_info', ([r]) => this.nbdInfo(this.get(this.vdis, 'VDI', r)));
    h.set('VDI.data_destroy', async ([r]) => {
      const vdi = this.get(this.vdis, 'VDI', r);
      if (vdi.snapshotOf === null) throw new XenFailure(['VDI_IN_USE', vdi.ref, 'data_destroy']);
      if (vdi.snapshotEpoch < 0) throw new XenFailure(['VDI_NO_CBT_METADATA', vdi.ref]);
      if (vdi.file) await rm(vdi.file, { force: true });
      vdi.file = null;
      vdi.type = 'cbt_metadata';
      return null;
    });
    h.set('VDI.destroy', async ([r]) => {
      const vdi = this.get(this.vdis, 'VDI', r);
      if ([...this.vbds.values()].some((b) => b.vdi === vdi.ref)) throw new XenFailure(['VDI_IN_USE', vdi.ref, 'destroy']);
      if (vdi.file) await rm(vdi.file, { force: true });
      this.vdis.delete(vdi.ref);
      return null;
    });
  }

  private async snapshot(base: VdiObj): Promise<string> {
    if (base.snapshotOf !== null || base.file === null) throw new XenFailure(['VDI_INCOMPATIBLE_TYPE', base.ref, base.type]);
    const snap = this.newVdi(base.label, base.sizeBytes, base.ref);
    snap.file = join(this.exportDir(), `${snap.uuid}.img`);
    await execFileAsync('cp', ['--reflink=auto', '--sparse=always', base.file, snap.file]);
    snap.generation = base.generation;
    snap.snapshotEpoch = base.cbtEnabled ? base.cbtEpoch : -1;
    base.generation++;
    return snap.ref;
  }

  private listChangedBlocks(from: VdiObj, to: VdiObj): string {
    const base = this.vdis.get(from.snapshotOf ?? from.ref);
    const toBase = to.snapshotOf ?? to.ref;
    if (!base || toBase !== base.ref) throw new XenFailure(['VDI_INCOMPATIBLE_TYPE', to.ref, 'not in the chain of the first VDI']);
    for (const v of [from, to]) {
      const epoch = v.snapshotOf === null ? (v.cbtEnabled ? v.cbtEpoch : -1) : v.snapshotEpoch;
      if (epoch < 0 || epoch !== base.cbtEpoch || !base.cbtEnabled) throw new XenFailure(['VDI_NO_CBT_METADATA', v.ref]);
    }
    const upTo = to.snapshotOf === null ? Number.MAX_SAFE_INTEGER : to.generation;
    const blocks = new Set<number>();
    for (const [gen, set] of base.changes) if (gen > from.generation && gen <= upTo) for (const b of set) blocks.add(b);
    return blocksToBitmap(blocks, base.sizeBytes).toString('base64');
  }

  private async nbdInfo(vdi: VdiObj): Promise<unknown[]> {
    if (!this.nbd) return [];
    if (vdi.file === null) throw new XenFailure(['VDI_INCOMPATIBLE_TYPE', vdi.ref, vdi.type]);
    const nbdkit = this.nbdkit ?? (await this.startNbdkit());
    const pki = this.wrongCert ? this.otherPki : this.pki;
    const cert = await readFile(join(pki.dir, 'server-cert.pem'), 'utf8');
    return [{ address: '127.0.0.1', port: nbdkit.port as number, exportname: `${vdi.uuid}.img`, cert, subject: '127.0.0.1' }];
  }

  // ---- wire ----

  private async dispatch(method: string, params: unknown[]): Promise<unknown> {
    const at = this.failures.findIndex((f) => f.method === method);
    if (at >= 0) {
      const f = this.failures[at]!;
      if (f.skip-- <= 0) {
        this.failures.splice(at, 1);
        throw new XenFailure(f.description);
      }
    }
    if (method === 'session.login_with_password') {
      if (params[0] !== this.o.user || params[1] !== this.o.password) throw new XenFailure(['SESSION_AUTHENTICATION_FAILED', String(params[0]), 'Authentication failure']);
      const session = ref();
      this.sessions.add(session);
      return session;
    }
    const [session, ...args] = params;
    if (!this.sessions.has(String(session))) throw new XenFailure(['SESSION_INVALID', String(session)]);
    if (method === 'session.logout') {
      this.sessions.delete(String(session));
      return null;
    }
    const handler = this.handlers.get(method);
    if (!handler) throw new XenFailure(['MESSAGE_METHOD_UNKNOWN', method]);
    return handler(args);
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (req.method === 'GET' && req.url?.startsWith('/export_raw_vdi')) return await this.serveExport(req, res);
      const body = await readBody(req);
      if (req.method === 'POST' && req.url === '/jsonrpc') return await this.serveJson(body, res);
      if (req.method === 'POST' && req.url === '/') return await this.serveXml(body, res);
      res.writeHead(404).end();
    } catch (err) {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    }
  }

  private async serveJson(body: string, res: ServerResponse): Promise<void> {
    if (!this.jsonRpc) {
      res.writeHead(404).end();
      return;
    }
    const msg = JSON.parse(body) as { method: string; params: unknown[]; id: unknown };
    this.calls.push(msg.method);
    let reply: unknown;
    try {
      reply = { jsonrpc: '2.0', result: await this.dispatch(msg.method, msg.params), id: msg.id };
    } catch (err) {
      if (!(err instanceof XenFailure)) throw err;
      const [code, ...data] = err.description;
      reply = { jsonrpc: '2.0', error: { code: 1, message: code, data }, id: msg.id };
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(reply));
  }

  private async serveXml(body: string, res: ServerResponse): Promise<void> {
    let call: { method: string; params: XmlRpcValue[] };
    try {
      call = decodeCall(body);
    } catch (err) {
      res.writeHead(200, { 'content-type': 'text/xml' }).end(encodeFault(-1, String(err)));
      return;
    }
    this.calls.push(`xml:${call.method}`);
    let value: unknown;
    try {
      value = { Status: 'Success', Value: await this.dispatch(call.method, call.params) };
    } catch (err) {
      if (!(err instanceof XenFailure)) throw err;
      value = { Status: 'Failure', ErrorDescription: err.description };
    }
    res.writeHead(200, { 'content-type': 'text/xml' }).end(encodeResponse(intsAsStrings(value)));
  }

  /** `GET /export_raw_vdi?vdi=REF&format=raw&session_id=S`, with an optional single Range. */
  private async serveExport(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    this.calls.push('GET /export_raw_vdi');
    const vdi = this.vdis.get(url.searchParams.get('vdi') ?? '');
    if (!this.sessions.has(url.searchParams.get('session_id') ?? '')) return void res.writeHead(401).end();
    if (!vdi || vdi.file === null || url.searchParams.get('format') !== 'raw') return void res.writeHead(404).end();
    const size = (await stat(vdi.file)).size;
    const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
    if (!range) {
      res.writeHead(200, { 'content-length': size });
      createReadStream(vdi.file).pipe(res);
      return;
    }
    const start = Number(range[1]);
    const end = Math.min(Number(range[2]), size - 1);
    if (start > end) return void res.writeHead(416).end();
    res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${size}` });
    createReadStream(vdi.file, { start, end }).pipe(res);
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
