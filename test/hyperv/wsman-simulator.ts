/**
 * A simulator of the published Msvm_* WMI methods over WS-Management, because no
 * Windows host runs here. It answers SOAP 1.2 envelopes on 127.0.0.1 (Basic auth) as
 * WinRM does for `root/virtualization/v2`, following Microsoft's class reference:
 *
 * - Enumerate + Pull (WQL: `SELECT * FROM C [WHERE P='v']`, `ASSOCIATORS OF {VSSD.InstanceID='x'}
 *   WHERE ResultClass=Msvm_StorageAllocationSettingData`), paged to exercise Pull;
 * - Get of Msvm_ConcreteJob and Msvm_VirtualSystemReferencePoint by InstanceID;
 * - Msvm_VirtualSystemSnapshotService: CreateSnapshot, DestroySnapshot,
 *   ConvertToReferencePoint; Msvm_VirtualSystemReferencePointService:
 *   DestroyReferencePoint; Msvm_ImageManagementService: GetVirtualDiskChanges, paged on
 *   ProcessedByteLength. Methods answer 4096 with a CIM_ConcreteJob that is Running
 *   (JobState 4) on the first poll and Completed (7) on the next, as hosts do.
 *
 * Disks are real VHDX files (`qemu-img create -f vhdx`), written between backups with
 * qemu-io through `write`, which also records the changed range for RCT. A checkpoint
 * is a copy of each VHDX (its raw image is hashed with `qemu-img convert -O raw` when
 * taken, for the tests to compare with). A reference point remembers the position in
 * the write log; GetVirtualDiskChanges returns the writes after it, up to the target
 * checkpoint, rounded out to 4 KiB as RCT's block granularity would.
 *
 * Authentication: Basic, or NTLMv2 through `Negotiate` (the AUTHENTICATE message's
 * NTProofStr is checked against the password; the connection is then authenticated).
 *
 * Faults to inject: a job that ends in JobState 10 (`failJob`), an RCT id the host no
 * longer knows (`expire`), a connection closed without an answer (`dropOn`), a SOAP
 * fault for unknown classes/selectors (w:InvalidSelectors).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ChunkvaultError } from '../../engine/errors.js';
import { ntlmv2Response, ntowfv2, parseAuthenticate, VIRTUALIZATION_V2 } from '../../adapters/hyperv/index.js';
import { escapeXml, parseXml, type XmlElement } from '../../adapters/_xml.js';

const execFileAsync = promisify(execFile);
const NS_DECL =
  'xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:n="http://schemas.xmlsoap.org/ws/2004/09/enumeration" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"';
const RCT_BLOCK = 4096;
export const HOST_ROOT = 'C:\\ClusterStorage\\VMs';

type Props = Record<string, string | string[] | null | { epr: string; sel: Record<string, string> }>;

export interface SimDiskSpec {
  readonly name: string;
  readonly sizeBytes: number;
}
export interface SimVmSpec {
  readonly name: string;
  readonly disks: readonly SimDiskSpec[];
}

interface SimDisk {
  readonly name: string;
  readonly sizeBytes: number;
  readonly file: string;
  readonly hostPath: string;
}
interface SimVm {
  readonly guid: string;
  readonly name: string;
  readonly disks: SimDisk[];
}
export interface SimCheckpoint {
  readonly id: string;
  readonly vm: SimVm;
  readonly seq: number;
  readonly consistency: number;
  readonly copies: { file: string; hostPath: string }[];
}
export interface SimReferencePoint {
  readonly id: string;
  readonly vm: SimVm;
  readonly seq: number;
  readonly rctIds: string[];
}
interface SimWrite {
  readonly seq: number;
  readonly vm: string;
  readonly disk: number;
  readonly offset: number;
  readonly length: number;
}
interface SimJob {
  readonly id: string;
  polls: number;
  readonly fail: boolean;
  readonly method: string;
}

class SimFault extends ChunkvaultError {
  constructor(
    readonly subcode: string,
    message: string,
  ) {
    super('REMOTE_ERROR', message);
  }
}

export interface SimulatorOptions {
  readonly dir: string;
  readonly user: string;
  readonly password: string;
  readonly vms: readonly SimVmSpec[];
}

export class WsmanSimulator {
  readonly vms = new Map<string, SimVm>();
  readonly checkpoints = new Map<string, SimCheckpoint>();
  readonly referencePoints = new Map<string, SimReferencePoint>();
  /** sha256 of `qemu-img convert -O raw` of each checkpoint's copies: id -> disk -> sha. */
  readonly checkpointSha = new Map<string, Map<string, string>>();
  /** Method names and WS-Man operations, in order. */
  readonly calls: string[] = [];
  /** A job of this method ends in JobState 10, after `after` more calls succeed. */
  failJob: { method: string; after: number } | null = null;
  /** Every checkpoint ever taken: id and ConsistencyLevel. */
  readonly history: { id: string; consistency: number }[] = [];
  /** The next request whose action ends in this name (after `dropAfter` more) gets its connection closed. */
  dropOn: string | null = null;
  dropAfter = 0;
  /** Largest ByteLength one GetVirtualDiskChanges answers for (forces paging). */
  changesPage = 4 * 1024 * 1024;
  /** Runs once, right after the next conversion to a reference point (a guest write racing the backup). */
  afterConvert: (() => Promise<void>) | null = null;
  /** Items per Pull. */
  pullPage = 2;
  private readonly expired = new Set<string>();
  private readonly writes: SimWrite[] = [];
  private readonly jobs = new Map<string, SimJob>();
  private readonly enumerations = new Map<string, Props[]>();
  private seq = 0;
  /** NTLM: the challenge sent on a connection, and the connections that authenticated. */
  private readonly challenges = new WeakMap<Socket, Buffer>();
  private readonly ntlmSockets = new WeakSet<Socket>();
  /** Successful NTLM authentications. */
  ntlmLogins = 0;
  private server!: http.Server;
  port = 0;

  private constructor(private readonly o: SimulatorOptions) {}

  static async start(o: SimulatorOptions): Promise<WsmanSimulator> {
    const sim = new WsmanSimulator(o);
    await sim.createVms();
    sim.server = http.createServer((req, res) => void sim.handle(req, res));
    await new Promise<void>((resolve) => sim.server.listen(0, '127.0.0.1', resolve));
    sim.port = (sim.server.address() as AddressInfo).port;
    return sim;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Local directory that `HOST_ROOT` maps to. */
  get localRoot(): string {
    return join(this.o.dir, 'vms');
  }

  private async createVms(): Promise<void> {
    for (const spec of this.o.vms) {
      const guid = randomUUID().toUpperCase();
      const dir = join(this.localRoot, spec.name);
      await mkdir(join(dir, 'Snapshots'), { recursive: true });
      const disks: SimDisk[] = [];
      for (const d of spec.disks) {
        const file = join(dir, `${d.name}.vhdx`);
        await execFileAsync('qemu-img', ['create', '-q', '-f', 'vhdx', file, String(d.sizeBytes)]);
        disks.push({ name: d.name, sizeBytes: d.sizeBytes, file, hostPath: `${HOST_ROOT}\\${spec.name}\\${d.name}.vhdx` });
      }
      this.vms.set(guid, { guid, name: spec.name, disks });
    }
  }

  private vmByName(name: string): SimVm {
    const vm = [...this.vms.values()].find((v) => v.name === name);
    if (!vm) throw new ChunkvaultError('INVALID_ARGUMENT', `no simulated VM ${name}`);
    return vm;
  }

  /** A guest write: qemu-io writes `pattern` over the range; RCT records it. */
  async write(vmName: string, diskName: string, offset: number, length: number, pattern: number): Promise<void> {
    const vm = this.vmByName(vmName);
    const index = vm.disks.findIndex((d) => d.name === diskName);
    const disk = vm.disks[index]!;
    await execFileAsync('qemu-io', ['-f', 'vhdx', '-c', `write -P ${pattern & 0xff} ${offset} ${length}`, disk.file]);
    this.writes.push({ seq: ++this.seq, vm: vm.guid, disk: index, offset, length });
  }

  /** Makes the host forget an RCT id (as after a disk was moved or compacted). */
  expire(rctId: string): void {
    this.expired.add(rctId);
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (!this.authorized(req, res)) return;
    let reply: string;
    let status = 200;
    try {
      const env = parseXml(Buffer.concat(chunks).toString('utf8'));
      const action = text(env, 'Action');
      if (this.dropOn !== null && action.endsWith(`/${this.dropOn}`) && this.dropAfter-- === 0) {
        this.dropOn = null;
        this.dropAfter = 0;
        req.socket.destroy();
        return;
      }
      reply = envelope(action, await this.dispatch(env, action));
    } catch (err) {
      status = 500;
      const subcode = err instanceof SimFault ? err.subcode : 'w:InternalError';
      reply = faultEnvelope(subcode, err instanceof Error ? err.message : String(err));
    }
    res.writeHead(status, { 'content-type': 'application/soap+xml;charset=UTF-8' }).end(reply);
  }

  private challenge(req: http.IncomingMessage, res: http.ServerResponse): false {
    const challenge = randomBytes(8);
    this.challenges.set(req.socket, challenge);
    res.writeHead(401, { 'www-authenticate': `Negotiate ${challengeMessage(challenge).toString('base64')}` }).end();
    return false;
  }

  /** False when it has answered (401, or the NTLM challenge). */
  private authorized(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    const header = req.headers.authorization ?? '';
    const deny = (): false => {
      res.writeHead(401, { 'www-authenticate': 'Negotiate' }).end();
      return false;
    };
    if (header === '') return this.ntlmSockets.has(req.socket) || deny();
    if (header.startsWith('Basic ')) return header === `Basic ${Buffer.from(`${this.o.user}:${this.o.password}`).toString('base64')}` || deny();
    const token = Buffer.from(header.replace(/^Negotiate /, ''), 'base64');
    if (!header.startsWith('Negotiate ') || token.length < 64) return token.length >= 12 && token.readUInt32LE(8) === 1 ? this.challenge(req, res) : deny();
    const challenge = this.challenges.get(req.socket);
    const auth = parseAuthenticate(token.toString('base64'));
    const temp = auth.ntResponse.subarray(16);
    const want = challenge && ntlmv2Response(ntowfv2(this.o.password, auth.user, auth.domain), challenge, temp.subarray(16, 24), temp.subarray(8, 16), temp.subarray(28, temp.length - 4));
    const account = (auth.domain === '' ? auth.user : `${auth.domain}\\${auth.user}`).toLowerCase();
    if (!want?.equals(auth.ntResponse) || account !== this.o.user.toLowerCase()) return deny();
    this.ntlmSockets.add(req.socket);
    this.ntlmLogins++;
    return true;
  }

  private async dispatch(env: XmlElement, action: string): Promise<string> {
    const resourceUri = text(env, 'ResourceURI');
    const selectors = selectorsOf(findEl(env, 'Header'));
    const body = findEl(env, 'Body')!;
    const op = action.slice(action.lastIndexOf('/') + 1);
    this.calls.push(op);
    if (action.endsWith('transfer/Get')) return this.get(resourceUri, selectors);
    if (action.endsWith('enumeration/Enumerate')) return this.enumerate(resourceUri, findEl(body, 'Filter')?.text ?? null);
    if (action.endsWith('enumeration/Pull')) return this.pull(text(body, 'EnumerationContext'), Number(findEl(body, 'MaxElements')?.text ?? 1));
    if (action === `${resourceUri}/${op}` && resourceUri.startsWith(VIRTUALIZATION_V2)) {
      const input = findEl(body, `${op}_INPUT`);
      if (!input) throw new SimFault('w:SchemaValidationError', `no ${op}_INPUT`);
      return `<p:${op}_OUTPUT xmlns:p="${resourceUri}">${await this.invoke(op, input)}</p:${op}_OUTPUT>`;
    }
    throw new SimFault('a:ActionNotSupported', `unsupported action ${action}`);
  }

  // ------------------------------------------------------------ instances

  private service(cls: string): Props {
    return { CreationClassName: cls, Name: cls.replace('Msvm_', ''), SystemCreationClassName: 'Msvm_ComputerSystem', SystemName: 'SIMHOST' };
  }

  private instances(cls: string): Props[] {
    switch (cls) {
      case 'Msvm_ComputerSystem':
        return [
          { CreationClassName: cls, Name: 'SIMHOST', ElementName: 'SIMHOST', Caption: 'Hosting Computer System' },
          ...[...this.vms.values()].map((v) => ({ CreationClassName: cls, Name: v.guid, ElementName: v.name, Caption: 'Virtual Machine', EnabledState: '2' })),
        ];
      case 'Msvm_VirtualSystemSnapshotService':
      case 'Msvm_VirtualSystemReferencePointService':
      case 'Msvm_ImageManagementService':
        return [this.service(cls)];
      case 'Msvm_VirtualSystemReferencePoint':
        return [...this.referencePoints.values()].map((r) => this.referencePointProps(r));
      case 'Msvm_VirtualSystemSettingData':
        return [...this.checkpoints.values()].map((c) => ({ InstanceID: c.id, VirtualSystemIdentifier: c.vm.guid, VirtualSystemType: 'Microsoft:Hyper-V:Snapshot:Recovery' }));
      default:
        throw new SimFault('w:InvalidSelectors', `unknown class ${cls}`);
    }
  }

  private referencePointProps(r: SimReferencePoint): Props {
    return { InstanceID: r.id, VirtualSystemIdentifier: r.vm.guid, ResilientChangeTrackingIdentifiers: r.rctIds, ReferencePointType: '1' };
  }

  private get(resourceUri: string, sel: Record<string, string>): string {
    const cls = resourceUri.slice(resourceUri.lastIndexOf('/') + 1);
    const id = sel['InstanceID'] ?? '';
    if (cls === 'Msvm_ConcreteJob') {
      const job = this.jobs.get(id);
      if (!job) throw new SimFault('w:InvalidSelectors', `no job ${id}`);
      job.polls++;
      const state = job.polls < 2 ? '4' : job.fail ? '10' : '7';
      const failed = state === '10';
      return instanceXml(cls, { InstanceID: id, JobState: state, ErrorCode: failed ? '32768' : '0', ErrorDescription: failed ? `${job.method} failed (injected)` : null, PercentComplete: state === '4' ? '50' : '100' });
    }
    if (cls === 'Msvm_VirtualSystemReferencePoint') {
      const r = this.referencePoints.get(id);
      if (!r) throw new SimFault('w:InvalidSelectors', `no reference point ${id}`);
      return instanceXml(cls, this.referencePointProps(r));
    }
    throw new SimFault('w:InvalidSelectors', `Get of ${cls} is not simulated`);
  }

  private enumerate(resourceUri: string, wql: string | null): string {
    let items: Props[];
    let cls: string;
    const assoc = wql === null ? null : /^ASSOCIATORS OF \{Msvm_VirtualSystemSettingData\.InstanceID='((?:[^'\\]|\\.)*)'\} WHERE ResultClass\s*=\s*Msvm_StorageAllocationSettingData$/i.exec(wql.trim());
    if (assoc) {
      cls = 'Msvm_StorageAllocationSettingData';
      const cp = this.checkpoints.get(unquote(assoc[1]!));
      if (!cp) throw new SimFault('w:InvalidSelectors', 'no such settings');
      items = [
        { InstanceID: `${cp.id}\\dvd`, ResourceType: '16', HostResource: null },
        ...cp.copies.map((c, i) => ({ InstanceID: `${cp.id}\\disk${i}`, ResourceType: '31', HostResource: [c.hostPath] })),
      ];
    } else {
      cls = resourceUri.slice(resourceUri.lastIndexOf('/') + 1);
      items = this.instances(cls);
      if (wql !== null) items = filterWql(wql, cls, items);
    }
    const context = `uuid:${randomUUID()}`;
    this.enumerations.set(context, items.map((p) => ({ ...p, __class: cls })));
    return `<n:EnumerateResponse><n:EnumerationContext>${context}</n:EnumerationContext></n:EnumerateResponse>`;
  }

  private pull(context: string, max: number): string {
    const items = this.enumerations.get(context);
    if (!items) throw new SimFault('n:InvalidEnumerationContext', 'unknown enumeration context');
    const page = items.splice(0, Math.min(max, this.pullPage));
    const xml = page.map(({ __class, ...p }) => instanceXml(String(__class), p)).join('');
    if (items.length > 0) return `<n:PullResponse><n:EnumerationContext>${context}</n:EnumerationContext><n:Items>${xml}</n:Items></n:PullResponse>`;
    this.enumerations.delete(context);
    return `<n:PullResponse><n:Items>${xml}</n:Items><n:EndOfSequence/></n:PullResponse>`;
  }

  // ------------------------------------------------------------ methods

  private startJob(method: string): string {
    const id = randomUUID().toUpperCase();
    const fail = this.failing(method);
    this.jobs.set(id, { id, polls: 0, fail, method });
    return `<p:Job>${eprBody('Msvm_ConcreteJob', { InstanceID: id })}</p:Job><p:ReturnValue>4096</p:ReturnValue>`;
  }

  /** Consumes the injected failure when this call is the one to fail. */
  private failing(method: string): boolean {
    if (this.failJob?.method !== method) return false;
    if (this.failJob.after > 0) {
      this.failJob.after--;
      return false;
    }
    this.failJob = null;
    return true;
  }

  private async invoke(op: string, input: XmlElement): Promise<string> {
    switch (op) {
      case 'CreateSnapshot':
        return this.createSnapshot(input);
      case 'DestroySnapshot': {
        const cp = this.checkpointOf(input, 'AffectedSnapshot');
        await this.dropCheckpoint(cp);
        return this.startJob(op);
      }
      case 'ConvertToReferencePoint': {
        const cp = this.checkpointOf(input, 'AffectedSnapshot');
        // A conversion whose job fails leaves the checkpoint as it was.
        if (this.failJob?.method === op && this.failJob.after === 0) return this.startJob(op);
        await this.dropCheckpoint(cp);
        const id = `Microsoft:${randomUUID().toUpperCase()}`;
        const rctIds = cp.vm.disks.map((d) => `rct:${randomUUID()}:${d.name}`);
        this.referencePoints.set(id, { id, vm: cp.vm, seq: cp.seq, rctIds });
        const hook = this.afterConvert;
        this.afterConvert = null;
        await hook?.();
        return `<p:ResultingReferencePoint>${eprBody('Msvm_VirtualSystemReferencePoint', { InstanceID: id })}</p:ResultingReferencePoint>${this.startJob(op)}`;
      }
      case 'DestroyReferencePoint': {
        const id = eprSelector(input, 'AffectedReferencePoint');
        if (!this.referencePoints.delete(id)) return '<p:ReturnValue>32773</p:ReturnValue>';
        return this.startJob(op);
      }
      case 'GetVirtualDiskChanges':
        return this.diskChanges(input);
      default:
        throw new SimFault('w:ActionNotSupported', `method ${op} is not simulated`);
    }
  }

  private async createSnapshot(input: XmlElement): Promise<string> {
    const guid = eprSelector(input, 'AffectedSystem', 'Name');
    const vm = this.vms.get(guid);
    if (!vm) throw new SimFault('w:InvalidSelectors', `no VM ${guid}`);
    if (text(input, 'SnapshotType') !== '32768') return '<p:ReturnValue>32773</p:ReturnValue>';
    // A checkpoint whose job fails leaves nothing behind, as on a host.
    if (this.failJob?.method === 'CreateSnapshot' && this.failJob.after === 0) return this.startJob('CreateSnapshot');
    const settings = parseXml(text(input, 'SnapshotSettings'));
    const level = settings.children.find((p) => p.attrs['NAME'] === 'ConsistencyLevel');
    const id = `Microsoft:${randomUUID().toUpperCase()}`;
    const dir = join(this.localRoot, vm.name, 'Snapshots', id.slice(10));
    await mkdir(dir, { recursive: true });
    const copies: { file: string; hostPath: string }[] = [];
    const shas = new Map<string, string>();
    for (const d of vm.disks) {
      const file = join(dir, `${d.name}.vhdx`);
      await copyFile(d.file, file);
      copies.push({ file, hostPath: `${HOST_ROOT}\\${vm.name}\\Snapshots\\${id.slice(10)}\\${d.name}.vhdx` });
      await execFileAsync('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', file, `${file}.raw`]);
      shas.set(d.name, createHash('sha256').update(await readFile(`${file}.raw`)).digest('hex'));
      await rm(`${file}.raw`);
    }
    const cp: SimCheckpoint = { id, vm, seq: ++this.seq, consistency: Number(level?.children[0]?.text ?? 0), copies };
    this.checkpoints.set(id, cp);
    this.history.push({ id, consistency: cp.consistency });
    this.checkpointSha.set(id, shas);
    return `<p:ResultingSnapshot>${eprBody('Msvm_VirtualSystemSettingData', { InstanceID: id })}</p:ResultingSnapshot>${this.startJob('CreateSnapshot')}`;
  }

  private checkpointOf(input: XmlElement, param: string): SimCheckpoint {
    const id = eprSelector(input, param);
    const cp = this.checkpoints.get(id);
    if (!cp) throw new SimFault('w:InvalidSelectors', `no checkpoint ${id}`);
    return cp;
  }

  private async dropCheckpoint(cp: SimCheckpoint): Promise<void> {
    this.checkpoints.delete(cp.id);
    for (const c of cp.copies) await rm(c.file, { force: true });
  }

  /** Writes after the reference point and up to the target checkpoint, in [ByteOffset, +ByteLength). */
  private diskChanges(input: XmlElement): string {
    const path = text(input, 'Path');
    const limit = text(input, 'LimitId');
    const target = this.checkpoints.get(text(input, 'TargetSnapshotId'));
    const start = Number(text(input, 'ByteOffset'));
    const asked = Number(text(input, 'ByteLength'));
    const rp = [...this.referencePoints.values()].find((r) => r.rctIds.includes(limit));
    if (!rp || this.expired.has(limit)) return '<p:ReturnValue>32775</p:ReturnValue>';
    const disk = rp.rctIds.indexOf(limit);
    const size = rp.vm.disks[disk]!.sizeBytes;
    const copy = target?.copies[disk];
    if (!target || target.vm !== rp.vm || copy?.hostPath.toLowerCase() !== path.toLowerCase()) return '<p:ReturnValue>32773</p:ReturnValue>';
    const length = Math.min(asked, this.changesPage, size - start);
    const end = start + length;
    const ranges: [number, number][] = [];
    for (const w of this.writes) {
      if (w.vm !== rp.vm.guid || w.disk !== disk || w.seq <= rp.seq || w.seq > target.seq) continue;
      const a = Math.max(start, Math.floor(w.offset / RCT_BLOCK) * RCT_BLOCK);
      const b = Math.min(end, Math.ceil((w.offset + w.length) / RCT_BLOCK) * RCT_BLOCK);
      if (a < b) ranges.push([a, b]);
    }
    const merged = coalesce(ranges);
    return (
      merged.map(([a]) => `<p:ChangedByteOffsets>${a}</p:ChangedByteOffsets>`).join('') +
      merged.map(([a, b]) => `<p:ChangedByteLengths>${b - a}</p:ChangedByteLengths>`).join('') +
      `<p:ProcessedByteLength>${length}</p:ProcessedByteLength><p:ReturnValue>0</p:ReturnValue>`
    );
  }
}

/** An NTLM CHALLENGE message with target info (NetBIOS domain SIM, then MsvAvEOL). */
function challengeMessage(challenge: Buffer): Buffer {
  const name = Buffer.from('SIM', 'utf16le');
  const info = Buffer.alloc(4 + name.length + 4);
  info.writeUInt16LE(2, 0);
  info.writeUInt16LE(name.length, 2);
  name.copy(info, 4);
  const m = Buffer.alloc(48);
  Buffer.from('NTLMSSP\0', 'latin1').copy(m);
  m.writeUInt32LE(2, 8);
  m.writeUInt32LE(0xe2888215, 20);
  challenge.copy(m, 24);
  m.writeUInt16LE(info.length, 40);
  m.writeUInt16LE(info.length, 42);
  m.writeUInt32LE(48, 44);
  return Buffer.concat([m, info]);
}

function coalesce(ranges: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const r of ranges.sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && r[0] <= last[1]) last[1] = Math.max(last[1], r[1]);
    else out.push([r[0], r[1]]);
  }
  return out;
}

function unquote(s: string): string {
  return s.replace(/\\(.)/g, '$1');
}

function filterWql(wql: string, cls: string, items: Props[]): Props[] {
  const m = /^SELECT \* FROM (\w+)(?: WHERE (\w+)\s*=\s*'((?:[^'\\]|\\.)*)')?$/i.exec(wql.trim());
  if (!m || m[1] !== cls) throw new SimFault('w:CannotProcessFilter', `WQL not simulated: ${wql}`);
  if (m[2] === undefined) return items;
  const want = unquote(m[3]!);
  return items.filter((p) => typeof p[m[2]!] === 'string' && (p[m[2]!] as string).toLowerCase() === want.toLowerCase());
}

function findEl(el: XmlElement | undefined, name: string): XmlElement | undefined {
  if (!el) return undefined;
  for (const c of el.children) {
    if (c.name === name) return c;
    const d = findEl(c, name);
    if (d) return d;
  }
  return undefined;
}

function text(el: XmlElement, name: string): string {
  const found = findEl(el, name);
  if (!found) throw new SimFault('w:SchemaValidationError', `missing ${name}`);
  return found.text.trim();
}

function selectorsOf(el: XmlElement | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  const set = el?.children.find((c) => c.name === 'SelectorSet');
  for (const s of set?.children ?? []) if (s.attrs['Name']) out[s.attrs['Name']] = s.text;
  return out;
}

function eprSelector(input: XmlElement, param: string, key = 'InstanceID'): string {
  const p = findEl(input, param);
  if (!p) throw new SimFault('w:SchemaValidationError', `missing ${param}`);
  const id = selectorsOf(findEl(p, 'ReferenceParameters'))[key];
  if (id === undefined) throw new SimFault('w:InvalidSelectors', `${param} has no ${key}`);
  return id;
}

function eprBody(cls: string, sel: Record<string, string>): string {
  const s = Object.entries(sel).map(([k, v]) => `<w:Selector Name="${k}">${escapeXml(v)}</w:Selector>`).join('');
  return `<a:Address>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:Address><a:ReferenceParameters><w:ResourceURI>${VIRTUALIZATION_V2}/${cls}</w:ResourceURI><w:SelectorSet>${s}</w:SelectorSet></a:ReferenceParameters>`;
}

function instanceXml(cls: string, props: Props): string {
  const body = Object.entries(props)
    .map(([k, v]) => {
      if (v === null) return `<p:${k} xsi:nil="true"/>`;
      if (Array.isArray(v)) return v.map((x) => `<p:${k}>${escapeXml(x)}</p:${k}>`).join('');
      if (typeof v === 'object') return `<p:${k}>${eprBody(v.epr, v.sel)}</p:${k}>`;
      return `<p:${k}>${escapeXml(v)}</p:${k}>`;
    })
    .join('');
  return `<p:${cls} xmlns:p="${VIRTUALIZATION_V2}/${cls}">${body}</p:${cls}>`;
}

function envelope(action: string, body: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?><s:Envelope ${NS_DECL}><s:Header><a:Action>${escapeXml(action)}Response</a:Action><a:MessageID>uuid:${randomUUID()}</a:MessageID></s:Header><s:Body>${body}</s:Body></s:Envelope>`;
}

function faultEnvelope(subcode: string, message: string): string {
  return (
    `<?xml version="1.0" encoding="UTF-8"?><s:Envelope ${NS_DECL}><s:Header><a:Action>http://schemas.dmtf.org/wbem/wsman/1/wsman/fault</a:Action></s:Header><s:Body><s:Fault>` +
    `<s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>${subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">${escapeXml(message)}</s:Text></s:Reason>` +
    `<s:Detail><f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" Code="2150858843" Machine="SIMHOST"><f:Message>${escapeXml(message)}</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>`
  );
}
