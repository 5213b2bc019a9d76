/**
 * A WS-Management client (DMTF DSP0226, SOAP 1.2) for WMI over WinRM: Get, Enumerate +
 * Pull, and Invoke of WMI methods, with Basic or NTLMv2 authentication over HTTP (5985)
 * or HTTPS (5986). Terms:
 *
 * - resource URI: a WMI class, `http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2/<Class>`;
 * - selectors: the key properties naming one instance (`Name`, `InstanceID`, ...);
 * - EPR: an endpoint reference (resource URI + selectors), how WMI passes object
 *   references (`AffectedSystem`, `Job`, `ResultingSnapshot`);
 * - CIM instance: an element per property, arrays repeated, null as `xsi:nil`.
 *
 * Errors: a SOAP fault is REMOTE_ERROR with `details.wsmanFault` (the subcode, e.g.
 * `w:InvalidSelectors`) and `details.wsmanCode` (the WMI/WinRM error number); HTTP 401 is
 * CONNECT_FAILED (`details.status`); no answer in time is TIMEOUT; a dropped connection
 * is CONNECT_FAILED; an answer that is not a SOAP envelope is PROTOCOL_ERROR.
 * A WMI method that returns non-zero (other than 4096, job started) is REMOTE_ERROR with
 * `details.returnValue`; a job that ends in a state other than 7 (Completed) is
 * REMOTE_ERROR with `details.jobState` and the job's ErrorCode/ErrorDescription.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { ChunkvaultError } from '../../engine/errors.js';
import { child, escapeXml, find, parseXml, type XmlElement } from '../_xml.js';
import { authenticateMessage, negotiateMessage, parseChallenge } from './ntlm.js';

export const NS = {
  soap: 'http://www.w3.org/2003/05/soap-envelope',
  addressing: 'http://schemas.xmlsoap.org/ws/2004/08/addressing',
  wsman: 'http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd',
  enumeration: 'http://schemas.xmlsoap.org/ws/2004/09/enumeration',
  transfer: 'http://schemas.xmlsoap.org/ws/2004/09/transfer',
  xsi: 'http://www.w3.org/2001/XMLSchema-instance',
  anonymous: 'http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous',
  wql: 'http://schemas.microsoft.com/wbem/wsman/1/WQL',
} as const;

/** Resource URI prefix of the Hyper-V WMI namespace. */
export const VIRTUALIZATION_V2 = 'http://schemas.microsoft.com/wbem/wsman/1/wmi/root/virtualization/v2';

export const ACTIONS = {
  get: `${NS.transfer}/Get`,
  enumerate: `${NS.enumeration}/Enumerate`,
  pull: `${NS.enumeration}/Pull`,
  release: `${NS.enumeration}/Release`,
} as const;

/** WMI return values (CIM method conventions). */
export const RETURN_VALUE = { completed: 0, jobStarted: 4096 } as const;
/** CIM_ConcreteJob.JobState values. */
export const JOB_STATE = { new: 2, starting: 3, running: 4, suspended: 5, shuttingDown: 6, completed: 7, terminated: 8, killed: 9, exception: 10 } as const;

/** An endpoint reference: a class and the key values of one instance. */
export interface Epr {
  readonly resourceUri: string;
  readonly selectors: Readonly<Record<string, string>>;
}

export type CimValue = string | null | string[] | Epr;
export type CimInstance = Readonly<Record<string, CimValue>> & { readonly __class?: string };

/** A WMI method argument: a scalar, an array, an EPR, or an embedded instance (CIM-XML string). */
export type MethodArg = string | number | boolean | readonly (string | number)[] | Epr;

export interface WsmanOptions {
  readonly https: boolean;
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly password: string;
  /**
   * `basic` (default) or `ntlm` (NTLMv2 through the Negotiate scheme, authentication
   * only: use HTTPS, as WinRM refuses unencrypted payloads on HTTP by default).
   */
  readonly auth?: 'basic' | 'ntlm';
  /** Per request (default 60 000 ms). */
  readonly timeoutMs?: number;
  /** HTTPS: accept a certificate no CA vouches for (WinRM's self-signed ones). Default false. */
  readonly insecure?: boolean;
  readonly ca?: Buffer;
}

export function isEpr(v: CimValue | undefined): v is Epr {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function classUri(className: string): string {
  return `${VIRTUALIZATION_V2}/${className}`;
}

/** Serializes an EPR as the body of an element (Address + ReferenceParameters). */
export function eprXml(epr: Epr): string {
  const sel = Object.entries(epr.selectors)
    .map(([k, v]) => `<w:Selector Name="${escapeXml(k)}">${escapeXml(v)}</w:Selector>`)
    .join('');
  return `<a:Address>${NS.anonymous}</a:Address><a:ReferenceParameters><w:ResourceURI>${escapeXml(epr.resourceUri)}</w:ResourceURI><w:SelectorSet>${sel}</w:SelectorSet></a:ReferenceParameters>`;
}

/** Reads an EPR (Address + ReferenceParameters) from an element, or undefined. */
export function parseEpr(el: XmlElement): Epr | undefined {
  const params = child(el, 'ReferenceParameters');
  const uri = child(params, 'ResourceURI');
  if (!params || !uri) return undefined;
  const selectors: Record<string, string> = {};
  for (const s of child(params, 'SelectorSet')?.children ?? []) if (s.attrs['Name']) selectors[s.attrs['Name']] = s.text;
  return { resourceUri: uri.text.trim(), selectors };
}

/** A CIM instance element as an object: scalars as strings, repeated elements as arrays. */
export function parseInstance(el: XmlElement): CimInstance {
  const out: Record<string, CimValue> = {};
  for (const p of el.children) {
    const value: CimValue = p.attrs['nil'] === 'true' ? null : (parseEpr(p) ?? p.text);
    const prev = out[p.name];
    if (prev === undefined) out[p.name] = value;
    else if (Array.isArray(prev)) prev.push(String(value));
    else out[p.name] = [String(prev), String(value)];
  }
  Object.defineProperty(out, '__class', { value: el.name, enumerable: false });
  return out;
}

/** A CIM-XML embedded instance, as WMI methods take `SnapshotSettings` and similar. */
export function embeddedInstance(className: string, props: Record<string, { type: string; value: string | number }>): string {
  const body = Object.entries(props)
    .map(([k, p]) => `<PROPERTY NAME="${escapeXml(k)}" TYPE="${p.type}"><VALUE>${escapeXml(String(p.value))}</VALUE></PROPERTY>`)
    .join('');
  return `<INSTANCE CLASSNAME="${escapeXml(className)}">${body}</INSTANCE>`;
}

function argXml(name: string, v: MethodArg): string {
  if (Array.isArray(v)) return v.map((x) => argXml(name, x as string)).join('');
  if (typeof v === 'object') return `<p:${name}>${eprXml(v as Epr)}</p:${name}>`;
  return `<p:${name}>${escapeXml(String(v))}</p:${name}>`;
}

/** A required string property. */
export function prop(inst: CimInstance, name: string): string {
  const v = inst[name];
  if (typeof v !== 'string') throw new ChunkvaultError('PROTOCOL_ERROR', `${inst.__class ?? 'instance'}.${name} is missing`, { details: { property: name } });
  return v;
}

/** An array property (a single element is an array of one; absent or null is empty). */
export function arrayProp(inst: CimInstance, name: string): string[] {
  const v = inst[name];
  if (v === undefined || v === null) return [];
  if (Array.isArray(v)) return v;
  if (typeof v === 'string') return [v];
  throw new ChunkvaultError('PROTOCOL_ERROR', `${inst.__class ?? 'instance'}.${name} is not an array`, { details: { property: name } });
}

interface Envelope {
  readonly action: string;
  readonly resourceUri: string;
  readonly selectors?: Readonly<Record<string, string>>;
  readonly body: string;
}

export class WsmanClient {
  private readonly url: URL;
  private readonly agent: http.Agent;
  /** NTLM authenticates a connection, not a request: true once this agent's socket is. */
  private ntlmReady = false;

  constructor(private readonly o: WsmanOptions) {
    this.url = new URL(`${o.https ? 'https' : 'http'}://${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}/wsman`);
    // One socket for NTLM: the handshake and the requests after it must share it.
    const sockets = o.auth === 'ntlm' ? { maxSockets: 1 } : {};
    this.agent = o.https ? new https.Agent({ keepAlive: true, ...sockets, rejectUnauthorized: !o.insecure, ...(o.ca ? { ca: o.ca } : {}) }) : new http.Agent({ keepAlive: true, ...sockets });
  }

  get endpoint(): string {
    return this.url.href;
  }

  close(): void {
    this.agent.destroy();
  }

  /** Transfer Get of one instance. */
  async get(className: string, selectors: Record<string, string>): Promise<CimInstance> {
    const body = await this.send({ action: ACTIONS.get, resourceUri: classUri(className), selectors, body: '' });
    const inst = body.children[0];
    if (!inst) throw new ChunkvaultError('PROTOCOL_ERROR', `Get ${className} returned no instance`);
    return parseInstance(inst);
  }

  /** Enumerate + Pull until EndOfSequence; `wql` filters (a SELECT or ASSOCIATORS OF query). */
  async enumerate(className: string, wql?: string): Promise<CimInstance[]> {
    const filter = wql === undefined ? '' : `<w:Filter Dialect="${NS.wql}">${escapeXml(wql)}</w:Filter>`;
    const uri = wql?.trim().toUpperCase().startsWith('ASSOCIATORS') ? `${VIRTUALIZATION_V2}/*` : classUri(className);
    const started = await this.send({ action: ACTIONS.enumerate, resourceUri: uri, body: `<n:Enumerate>${filter}</n:Enumerate>` });
    let context = find(started, 'EnumerationContext')?.text;
    const out: CimInstance[] = [];
    for (let round = 0; context !== undefined && context !== ''; round++) {
      if (round > 100_000) throw new ChunkvaultError('PROTOCOL_ERROR', 'enumeration never ends');
      const page = await this.send({ action: ACTIONS.pull, resourceUri: uri, body: `<n:Pull><n:EnumerationContext>${escapeXml(context)}</n:EnumerationContext><n:MaxElements>32</n:MaxElements></n:Pull>` });
      for (const item of find(page, 'Items')?.children ?? []) out.push(parseInstance(item));
      if (find(page, 'EndOfSequence')) break;
      const next = find(page, 'EnumerationContext')?.text;
      if (next === undefined) throw new ChunkvaultError('PROTOCOL_ERROR', 'PullResponse without EnumerationContext or EndOfSequence');
      context = next;
    }
    return out;
  }

  /** Invokes a WMI method; resolves to the `<Method>_OUTPUT` instance (ReturnValue not checked). */
  async invoke(target: Epr, method: string, args: Record<string, MethodArg | undefined>): Promise<CimInstance> {
    const params = Object.entries(args)
      .filter((e): e is [string, MethodArg] => e[1] !== undefined)
      .map(([k, v]) => argXml(k, v))
      .join('');
    const body = await this.send({
      action: `${target.resourceUri}/${method}`,
      resourceUri: target.resourceUri,
      selectors: target.selectors,
      body: `<p:${method}_INPUT xmlns:p="${escapeXml(target.resourceUri)}">${params}</p:${method}_INPUT>`,
    });
    const out = child(body, `${method}_OUTPUT`);
    if (!out) throw new ChunkvaultError('PROTOCOL_ERROR', `${method} returned no ${method}_OUTPUT`, { details: { method } });
    return parseInstance(out);
  }

  /**
   * Invokes a method and waits for it: 0 resolves at once, 4096 polls the returned
   * CIM_ConcreteJob until it ends (`jobTimeoutMs`, default 10 min), anything else is
   * REMOTE_ERROR with `details.returnValue`.
   */
  async invokeAndWait(target: Epr, method: string, args: Record<string, MethodArg | undefined>, jobTimeoutMs = 600_000, pollMs = 50): Promise<CimInstance> {
    return this.awaitOutput(await this.invoke(target, method, args), method, jobTimeoutMs, pollMs);
  }

  /**
   * The second half of `invokeAndWait`, for callers that must note what a method made
   * (its Resulting* reference) before waiting, so that a failure while waiting can
   * still remove it.
   */
  async awaitOutput(out: CimInstance, method: string, jobTimeoutMs = 600_000, pollMs = 50): Promise<CimInstance> {
    const rv = Number(out['ReturnValue']);
    if (rv === RETURN_VALUE.completed) return out;
    if (rv !== RETURN_VALUE.jobStarted) {
      throw new ChunkvaultError('REMOTE_ERROR', `${method} failed with return value ${String(out['ReturnValue'])}`, { details: { method, returnValue: rv } });
    }
    const job = out['Job'];
    if (!isEpr(job)) throw new ChunkvaultError('PROTOCOL_ERROR', `${method} started a job but returned no Job reference`, { details: { method } });
    await this.waitJob(job, method, jobTimeoutMs, pollMs);
    return out;
  }

  /** Polls a CIM_ConcreteJob (from `pollMs`, doubling to 5 s) until it is completed (7) or ends otherwise (REMOTE_ERROR). */
  async waitJob(job: Epr, what: string, timeoutMs: number, pollMs: number): Promise<CimInstance> {
    const deadline = Date.now() + timeoutMs;
    const className = job.resourceUri.slice(job.resourceUri.lastIndexOf('/') + 1);
    // Short jobs end in well under a second; long ones (a VSS checkpoint) need no tight loop.
    let delay = pollMs;
    for (;;) {
      const j = await this.get(className, { ...job.selectors });
      const state = Number(j['JobState']);
      if (state === JOB_STATE.completed) return j;
      if (state >= JOB_STATE.terminated || state === JOB_STATE.suspended || state === JOB_STATE.shuttingDown) {
        throw new ChunkvaultError('REMOTE_ERROR', `${what}: the job ended in state ${state}: ${String(j['ErrorDescription'] ?? '')}`, {
          details: { method: what, jobState: state, errorCode: typeof j['ErrorCode'] === 'string' ? j['ErrorCode'] : null, errorDescription: typeof j['ErrorDescription'] === 'string' ? j['ErrorDescription'] : null },
        });
      }
      if (Date.now() > deadline) throw new ChunkvaultError('TIMEOUT', `${what}: the job did not end within ${timeoutMs} ms`, { details: { method: what, jobState: state, timeoutMs } });
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      delay = Math.min(delay * 2, 5000);
    }
  }

  private envelope(e: Envelope): string {
    const sel = e.selectors && Object.keys(e.selectors).length > 0
      ? `<w:SelectorSet>${Object.entries(e.selectors).map(([k, v]) => `<w:Selector Name="${escapeXml(k)}">${escapeXml(v)}</w:Selector>`).join('')}</w:SelectorSet>`
      : '';
    return (
      `<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="${NS.soap}" xmlns:a="${NS.addressing}" xmlns:w="${NS.wsman}" xmlns:n="${NS.enumeration}" xmlns:xsi="${NS.xsi}"><s:Header>` +
      `<a:To>${escapeXml(this.url.href)}</a:To><w:ResourceURI s:mustUnderstand="true">${escapeXml(e.resourceUri)}</w:ResourceURI>` +
      `<a:ReplyTo><a:Address s:mustUnderstand="true">${NS.anonymous}</a:Address></a:ReplyTo><a:Action s:mustUnderstand="true">${escapeXml(e.action)}</a:Action>` +
      `<w:MaxEnvelopeSize s:mustUnderstand="true">512000</w:MaxEnvelopeSize><a:MessageID>uuid:${randomUUID()}</a:MessageID>` +
      `<w:OperationTimeout>PT${Math.ceil((this.o.timeoutMs ?? 60_000) / 1000)}S</w:OperationTimeout>${sel}</s:Header><s:Body>${e.body}</s:Body></s:Envelope>`
    );
  }

  /** Posts an envelope; resolves to the SOAP Body, maps faults and transport errors. */
  private async send(e: Envelope): Promise<XmlElement> {
    const { status, text } = await this.authenticated(this.envelope(e), e.action);
    if (status === 401) throw new ChunkvaultError('CONNECT_FAILED', `WinRM refused the credentials of ${this.o.user} at ${this.url.host}`, { details: { status, host: this.o.host } });
    let doc: XmlElement;
    try {
      doc = parseXml(text);
    } catch (err) {
      throw new ChunkvaultError('PROTOCOL_ERROR', `WinRM answered HTTP ${status} without a SOAP envelope`, { cause: err, details: { status } });
    }
    const body = child(doc, 'Body');
    if (doc.name !== 'Envelope' || !body) throw new ChunkvaultError('PROTOCOL_ERROR', `WinRM answered HTTP ${status} without a SOAP body`, { details: { status } });
    const fault = child(body, 'Fault');
    if (fault) throw faultError(fault, e.action);
    if (status !== 200) throw new ChunkvaultError('PROTOCOL_ERROR', `WinRM answered HTTP ${status}`, { details: { status } });
    return body;
  }

  /** Posts with Basic credentials, or over an NTLM-authenticated connection (handshaking when needed, once more after a 401). */
  private async authenticated(payload: string, action: string): Promise<{ status: number; text: string }> {
    if (this.o.auth !== 'ntlm') return this.post(payload, action, `Basic ${Buffer.from(`${this.o.user}:${this.o.password}`).toString('base64')}`);
    if (this.ntlmReady) {
      const r = await this.post(payload, action);
      if (r.status !== 401) return r;
      this.ntlmReady = false;
    }
    const first = await this.post('', action, `Negotiate ${negotiateMessage()}`);
    const token = /^(?:Negotiate|NTLM) (\S+)/.exec(first.authenticate ?? '')?.[1];
    if (first.status !== 401 || token === undefined) {
      throw new ChunkvaultError('CONNECT_FAILED', `WinRM at ${this.url.host} did not offer an NTLM challenge (HTTP ${first.status})`, { details: { status: first.status, host: this.o.host } });
    }
    const r = await this.post(payload, action, `Negotiate ${authenticateMessage(parseChallenge(token), this.o.user, this.o.password)}`);
    this.ntlmReady = r.status !== 401;
    return r;
  }

  private post(payload: string, action: string, authorization?: string): Promise<{ status: number; text: string; authenticate?: string }> {
    const timeoutMs = this.o.timeoutMs ?? 60_000;
    const lib = this.o.https ? https : http;
    return new Promise((resolve, reject) => {
      const req = lib.request(this.url, {
        method: 'POST',
        agent: this.agent,
        headers: { 'content-type': 'application/soap+xml;charset=UTF-8', ...(authorization ? { authorization } : {}), 'content-length': Buffer.byteLength(payload) },
      });
      req.setTimeout(timeoutMs, () => req.destroy(new ChunkvaultError('TIMEOUT', `WinRM did not answer ${shortAction(action)} within ${timeoutMs} ms`, { details: { timeoutMs, action } })));
      req.on('error', (err) => {
        if (err instanceof ChunkvaultError) reject(err);
        else reject(new ChunkvaultError('CONNECT_FAILED', `WinRM at ${this.url.host}: ${err.message}`, { cause: err, details: { host: this.o.host, port: this.o.port, action: shortAction(action) } }));
      });
      req.on('response', (res) => {
        const parts: Buffer[] = [];
        res.on('data', (c: Buffer) => parts.push(c));
        res.on('error', (err) => reject(new ChunkvaultError('CONNECT_FAILED', `WinRM connection dropped: ${err.message}`, { cause: err })));
        const authenticate = res.headers['www-authenticate'];
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString('utf8'), ...(authenticate ? { authenticate: String(authenticate) } : {}) }));
      });
      req.end(payload);
    });
  }
}

function shortAction(action: string): string {
  return action.slice(action.lastIndexOf('/') + 1);
}

function faultError(fault: XmlElement, action: string): ChunkvaultError {
  const code = child(fault, 'Code');
  const subcode = child(child(code, 'Subcode'), 'Value')?.text ?? child(code, 'Value')?.text ?? 'unknown';
  const reason = find(child(fault, 'Reason'), 'Text')?.text ?? '';
  const wsmanFault = find(child(fault, 'Detail'), 'WSManFault');
  const message = find(wsmanFault, 'Message')?.text.trim() || reason.trim();
  return new ChunkvaultError('REMOTE_ERROR', `WinRM fault on ${shortAction(action)}: ${message || subcode}`, {
    details: { wsmanFault: subcode.trim(), wsmanCode: wsmanFault?.attrs['Code'] ?? null, action: shortAction(action) },
  });
}
