/**
 * A simulator of QueryChangedDiskAreas and of disk changeId, which the vSphere
 * simulator lacks: a SOAP front that passes every other call (and /folder reads) to
 * the real govmomi simulator, and adds what it does not implement, following the
 * vSphere API reference:
 *
 * - `changeId` in the backing of every VirtualDisk of a snapshot's configuration:
 *   `<disk uuid>/<epoch>`, where the epoch is the VM's write epoch when the snapshot
 *   was taken (each CreateSnapshot_Task closes an epoch);
 * - `QueryChangedDiskAreas(vm, snapshot, deviceKey, startOffset, changeId)`: pages of
 *   PAGE bytes; `"*"` answers the allocated (non-zero) 64 KiB blocks, a changeId of
 *   this disk answers the ranges the test wrote after that epoch up to the snapshot's;
 *   a changeId of another uuid (after `resetCbt`) answers a FileFault, as a reset CBT does.
 *
 * Guest writes go through `write`, which writes the disk's flat file in the simulator's
 * datastore and records the range. Fault hooks: a SOAP fault for the next call of a
 * method, a task that ends in error, sessions that expire, /folder answers that drop
 * the connection mid-body or say 503. The front also enforces sessions (the simulator
 * accepts any cookie): a call whose cookie is not from a Login it saw gets
 * NotAuthenticated.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { child, parseXml, textAt } from '../../adapters/_xml.js';

const PAGE = 4 * 1024 * 1024;
const BLOCK = 64 * 1024;

interface TrackedDisk {
  readonly flatFile: string;
  readonly sizeBytes: number;
  uuid: string;
  /** [epoch, offset, length] */
  readonly writes: [number, number, number][];
}

const soapEnvelope = (inner: string): string =>
  '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
  `<soapenv:Body>${inner}</soapenv:Body></soapenv:Envelope>`;

const faultBody = (type: string, message: string): string =>
  soapEnvelope(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${message}</faultstring><detail><${type}Fault xmlns="urn:vim25" xsi:type="${type}"></${type}Fault></detail></soapenv:Fault>`);

export class CbtFront {
  readonly calls: string[] = [];
  /** method -> fault type answered (once) instead of passing the call on. */
  readonly faults = new Map<string, string>();
  /** methods whose next task ends in error (the call is not passed on). */
  readonly failTasks = new Set<string>();
  /** The next property read of a snapshot answers this fault (a failure after the snapshot exists). */
  snapshotReadFault: string | null = null;
  /** method: the sessions expire just before this method's next call. */
  expireBefore: string | null = null;
  /** /folder reads left that drop the connection after half the body (-1: all). */
  dropReads = 0;
  /** /folder reads left that answer 503. */
  busyReads = 0;
  folderReads = 0;
  /** While set, /folder reads wait for it (to interrupt a backup mid-read). */
  holdReads: Promise<void> | null = null;
  private readonly disks = new Map<string, TrackedDisk>();
  private readonly epochs = new Map<string, number>();
  private readonly pending: { vm: string; epoch: number }[] = [];
  private readonly snapshots = new Map<string, { vm: string; epoch: number }>();
  private readonly fakeTasks = new Map<string, string>();
  private readonly sessions = new Set<string>();
  private server!: Server;
  port = 0;

  private constructor(
    private readonly target: number,
    private readonly password: string,
  ) {}

  /** Fronts the simulator on `targetPort`; Login succeeds only with `password` (the simulator accepts any). */
  static async start(targetPort: number, password: string): Promise<CbtFront> {
    const f = new CbtFront(targetPort, password);
    f.server = createServer((req, res) => void f.handle(req, res).catch(() => res.destroy()));
    await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', r));
    f.port = (f.server.address() as AddressInfo).port;
    return f;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  /** Tracks a disk of `vm` (its flat file in the simulator's datastore). */
  track(vm: string, key: number, flatFile: string, sizeBytes: number): void {
    this.disks.set(`${vm}/${key}`, { flatFile, sizeBytes, uuid: newUuid(), writes: [] });
  }

  /** A guest write: into the flat file, recorded for CBT. */
  async write(vm: string, key: number, offset: number, data: Buffer): Promise<void> {
    const d = this.disks.get(`${vm}/${key}`)!;
    const fh = await open(d.flatFile, 'r+');
    try {
      await fh.write(data, 0, data.length, offset);
    } finally {
      await fh.close();
    }
    d.writes.push([this.epochs.get(vm) ?? 0, offset, data.length]);
  }

  /** Forgets a disk's change history, as a storage move does: old changeIds fault. */
  resetCbt(vm: string, key: number): void {
    this.disks.get(`${vm}/${key}`)!.uuid = newUuid();
  }

  expireSessions(): void {
    this.sessions.clear();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readAll(req);
    if (req.url?.startsWith('/folder/')) return this.folder(req, res);
    const method = /<(?:\w+:)?Body[^>]*>\s*<(?:\w+:)?(\w+)/.exec(body.toString())?.[1] ?? '';
    this.calls.push(method);
    if (this.expireBefore === method) {
      this.expireBefore = null;
      this.expireSessions();
    }
    const cookie = /vmware_soap_session=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    if (!['RetrieveServiceContent', 'Login'].includes(method) && (cookie === undefined || !this.sessions.has(cookie))) return send(res, 500, faultBody('NotAuthenticated', 'The session is not authenticated.'));
    const fault = this.faults.get(method);
    if (fault !== undefined) {
      this.faults.delete(method);
      return send(res, 500, faultBody(fault, `injected ${fault}`));
    }
    const answered = await this.answer(method, body.toString());
    if (answered !== null) return send(res, answered.status, answered.body);
    const up = await forward(this.target, req, body);
    let text = up.body.toString();
    const setCookie = up.headers['set-cookie'];
    if (method === 'Login' && up.status === 200) for (const c of setCookie ?? []) this.sessions.add(/vmware_soap_session=([^;]+)/.exec(c)?.[1] ?? '');
    text = this.bindSnapshots(text);
    text = this.addChangeIds(text);
    res.writeHead(up.status, { 'content-type': 'text/xml; charset=utf-8', ...(setCookie ? { 'set-cookie': setCookie } : {}) });
    res.end(text);
  }

  /** Calls the front answers itself, or null to pass on. */
  private async answer(method: string, body: string): Promise<{ status: number; body: string } | null> {
    const call = child(child(parseXml(body), 'Body'), method);
    if (this.failTasks.has(method)) {
      this.failTasks.delete(method);
      const task = `task-fake-${this.fakeTasks.size + 1}`;
      this.fakeTasks.set(task, method);
      return { status: 200, body: soapEnvelope(`<${method}Response xmlns="urn:vim25"><returnval type="Task">${task}</returnval></${method}Response>`) };
    }
    if (method === 'Login' && textAt(call, 'password') !== this.password) return { status: 500, body: faultBody('InvalidLogin', 'Cannot complete login due to an incorrect user name or password.') };
    if (method === 'RetrievePropertiesEx') {
      const obj = textAt(call, 'specSet/objectSet/obj');
      if (obj !== undefined && this.fakeTasks.has(obj)) return { status: 200, body: soapEnvelope(failedTaskInfo(obj)) };
      if (obj?.startsWith('snapshot-') && this.snapshotReadFault !== null) {
        const type = this.snapshotReadFault;
        this.snapshotReadFault = null;
        return { status: 500, body: faultBody(type, `injected ${type}`) };
      }
    }
    if (method === 'CreateSnapshot_Task') {
      const vm = textAt(call, '_this')!;
      const epoch = this.epochs.get(vm) ?? 0;
      this.pending.push({ vm, epoch });
      this.epochs.set(vm, epoch + 1);
    }
    if (method === 'QueryChangedDiskAreas') return this.queryChangedDiskAreas(textAt(call, '_this')!, textAt(call, 'snapshot')!, Number(textAt(call, 'deviceKey')), Number(textAt(call, 'startOffset')), textAt(call, 'changeId') ?? '');
    return null;
  }

  /** Snapshots seen for the first time belong to the oldest pending CreateSnapshot_Task. */
  private bindSnapshots(text: string): string {
    for (const m of text.matchAll(/"VirtualMachineSnapshot">(snapshot-\d+)</g)) {
      if (!this.snapshots.has(m[1]!) && this.pending.length > 0) this.snapshots.set(m[1]!, this.pending.shift()!);
    }
    return text;
  }

  /** Adds `changeId` to the VirtualDisk backings of a snapshot's properties. */
  private addChangeIds(text: string): string {
    const snap = /<obj type="VirtualMachineSnapshot">(snapshot-\d+)<\/obj>/.exec(text)?.[1];
    const at = snap === undefined ? undefined : this.snapshots.get(snap);
    if (at === undefined) return text;
    return text.replace(/([\w-]+:type="VirtualDisk"><key>(\d+)<\/key>[\s\S]*?)(<\/backing>)/g, (all, head: string, key: string, close: string) => {
      const d = this.disks.get(`${at.vm}/${key}`);
      return d ? `${head}<changeId>${d.uuid}/${at.epoch}</changeId>${close}` : all;
    });
  }

  private async queryChangedDiskAreas(vm: string, snapshot: string, key: number, start: number, changeId: string): Promise<{ status: number; body: string }> {
    const d = this.disks.get(`${vm}/${key}`);
    const snap = this.snapshots.get(snapshot);
    if (!d || !snap) return { status: 500, body: faultBody('InvalidArgument', 'unknown disk or snapshot') };
    const end = Math.min(start + PAGE, d.sizeBytes);
    let areas: [number, number][];
    if (changeId === '*') {
      areas = await allocated(d.flatFile, start, end);
    } else {
      const [uuid, from] = changeId.split('/');
      if (uuid !== d.uuid) return { status: 500, body: faultBody('FileFault', 'Error caused by file ' + d.flatFile) };
      areas = d.writes.filter(([e]) => e > Number(from) && e <= snap.epoch).map(([, o, l]): [number, number] => [Math.max(o, start), Math.min(o + l, end) - Math.max(o, start)]);
      areas = areas.filter(([, l]) => l > 0).sort((a, b) => a[0] - b[0]);
    }
    const list = areas.map(([s, l]) => `<changedArea><start>${s}</start><length>${l}</length></changedArea>`).join('');
    return { status: 200, body: soapEnvelope(`<QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval><startOffset>${start}</startOffset><length>${end - start}</length>${list}</returnval></QueryChangedDiskAreasResponse>`) };
  }

  private async folder(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.folderReads++;
    if (this.holdReads) await this.holdReads;
    if (this.busyReads > 0) {
      this.busyReads--;
      return send(res, 503, 'busy');
    }
    const up = await forward(this.target, req, Buffer.alloc(0));
    if (this.dropReads !== 0 && up.body.length > 1) {
      if (this.dropReads > 0) this.dropReads--;
      res.writeHead(up.status, { 'content-length': String(up.body.length), 'content-range': String(up.headers['content-range'] ?? '') });
      res.write(up.body.subarray(0, up.body.length >> 1), () => res.destroy());
      return;
    }
    res.writeHead(up.status, { 'content-length': String(up.body.length), ...(up.headers['content-range'] ? { 'content-range': String(up.headers['content-range']) } : {}) });
    res.end(up.body);
  }
}

function newUuid(): string {
  return randomBytes(16).toString('hex').replace(/(..)(?!$)/g, '$1 ');
}

function failedTaskInfo(task: string): string {
  return (
    `<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">${task}</obj><propSet><name>info</name>` +
    `<val xsi:type="TaskInfo"><key>${task}</key><descriptionId>injected</descriptionId><state>error</state>` +
    '<error><fault xsi:type="FileFault"><file>[LocalDS_0] injected</file></fault><localizedMessage>injected task failure</localizedMessage></error>' +
    '</val></propSet></objects></returnval></RetrievePropertiesExResponse>'
  );
}

async function allocated(file: string, start: number, end: number): Promise<[number, number][]> {
  const data = await readFile(file);
  const out: [number, number][] = [];
  for (let at = start; at < end; at += BLOCK) {
    const len = Math.min(BLOCK, end - at);
    const block = data.subarray(at, at + len);
    if (block.some((b) => b !== 0)) {
      const last = out[out.length - 1];
      if (last && last[0] + last[1] === at) last[1] += len;
      else out.push([at, len]);
    }
  }
  return out;
}

function send(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/xml; charset=utf-8' });
  res.end(body);
}

async function readAll(s: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of s) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

function forward(port: number, req: IncomingMessage, body: Buffer): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const headers = { ...req.headers, host: `127.0.0.1:${port}` };
    const up = request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers }, (r) => {
      readAll(r).then((b) => resolve({ status: r.statusCode ?? 500, headers: r.headers, body: b }), reject);
    });
    up.on('error', reject);
    up.end(body);
  });
}
