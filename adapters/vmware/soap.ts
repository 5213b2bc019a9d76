/**
 * A lean vSphere Web Services client (`urn:vim25`, `POST /sdk`).
 *
 * Terms:
 * - moref: a managed object reference `{type, value}` (`VirtualMachine`, `vm-42`).
 * - session: the `vmware_soap_session` cookie `Login` sets; every later call sends it.
 *   A `NotAuthenticated` fault (the session expired or was terminated) logs in again
 *   once and repeats the call.
 * - fault: a SOAP fault becomes REMOTE_ERROR with `details: {faultType, method}` where
 *   faultType is the vim25 fault type (`InvalidState`, `FileFault`, ...); callers branch
 *   on `faultType`. A refused login (`InvalidLogin`) is CONNECT_FAILED.
 * - task: `*_Task` methods answer a Task moref; `waitTask` polls `info` until the task
 *   succeeds (its `info.result`), fails (REMOTE_ERROR with the task's fault) or the
 *   timeout passes (TIMEOUT).
 *
 * Transport errors: unreachable host CONNECT_FAILED, no answer in time TIMEOUT, a
 * certificate that fails verification or the pinned thumbprint TLS_FAILED, an answer
 * that is not a SOAP envelope PROTOCOL_ERROR.
 */
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { ChunkvaultError, isChunkvaultError } from '../../engine/errors.js';
import { child, children, escapeXml, parseXml, textAt, type XmlElement } from '../_xml.js';

export interface VimEndpoint {
  readonly protocol: 'http:' | 'https:';
  readonly host: string;
  readonly port: number;
  /** Skip certificate verification (self-signed hosts); prefer `thumbprint`. */
  readonly insecure?: boolean;
  /** SHA-256 of the server certificate (hex, colons optional): pinned instead of a CA check. */
  readonly thumbprint?: string;
}

export interface MoRef {
  readonly type: string;
  readonly value: string;
}

export interface VimLogin {
  readonly endpoint: VimEndpoint;
  readonly user: string;
  readonly password: string;
  /** Per call (default 60 000 ms). */
  readonly timeoutMs?: number;
}

export const SESSION_COOKIE = 'vmware_soap_session';

/** The vim25 fault type of `err`, or null when it is not a SOAP fault. */
export function faultType(err: unknown): string | null {
  if (!isChunkvaultError(err)) return null;
  const t = err.details['faultType'];
  return typeof t === 'string' ? t : null;
}

/** A moref as a request element. */
export function moXml(tag: string, ref: MoRef): string {
  return `<${tag} type="${escapeXml(ref.type)}">${escapeXml(ref.value)}</${tag}>`;
}

/** An element as a moref (its `type` attribute and text). */
export function toMoRef(el: XmlElement | undefined, what: string): MoRef {
  const type = el?.attrs['type'];
  if (!el || !type || el.text === '') throw new ChunkvaultError('PROTOCOL_ERROR', `vSphere: ${what} is not a managed object reference`, { details: { what } });
  return { type, value: el.text.trim() };
}

/**
 * A TLS connection whose certificate is checked against the pinned thumbprint before
 * the request is written (the password must not reach an unverified host).
 */
function pinnedConnection(ep: VimEndpoint, pin: string) {
  return (_o: unknown, done: (err: Error | null, socket?: Duplex) => void): undefined => {
    const socket = tlsConnect({ host: ep.host, port: ep.port, servername: isIP(ep.host) ? undefined : ep.host, rejectUnauthorized: false });
    socket.once('error', (err) => done(err));
    socket.once('secureConnect', () => {
      const got = socket.getPeerCertificate().fingerprint256?.replace(/:/g, '').toLowerCase();
      if (got === pin) return done(null, socket);
      socket.destroy();
      done(new ChunkvaultError('TLS_FAILED', `the certificate of ${ep.host} does not match the pinned thumbprint`, { details: { host: ep.host, got: got ?? null } }));
    });
    return undefined;
  };
}

/** Plain requests and their typed transport errors, shared with the /folder reader. */
export function vimRequest(ep: VimEndpoint, o: RequestOptions, body?: string): Promise<IncomingMessage> {
  const https = ep.protocol === 'https:';
  const send = https ? httpsRequest : httpRequest;
  const pin = https && ep.thumbprint ? ep.thumbprint.replace(/:/g, '').toLowerCase() : null;
  const options: RequestOptions & { rejectUnauthorized?: boolean } = {
    ...o,
    host: ep.host,
    port: ep.port,
    ...(https ? { rejectUnauthorized: !ep.insecure } : {}),
    ...(pin !== null ? { createConnection: pinnedConnection(ep, pin) as unknown as RequestOptions['createConnection'] } : {}),
  };
  return new Promise((resolve, reject) => {
    const req = send(options, resolve);
    req.setTimeout(o.timeout ?? 60_000, () => req.destroy(new ChunkvaultError('TIMEOUT', `no answer from ${ep.host}:${ep.port}`, { details: { host: ep.host, port: ep.port } })));
    req.on('error', (err) => reject(transportError(ep, err)));
    req.end(body);
  });
}

/** Maps a socket error to CONNECT_FAILED / TLS_FAILED (typed errors pass through). */
export function transportError(ep: VimEndpoint, err: unknown): ChunkvaultError {
  if (isChunkvaultError(err)) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const details = { host: ep.host, port: ep.port, errno: code };
  if (/CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_VERIFY/.test(code)) return new ChunkvaultError('TLS_FAILED', `TLS with ${ep.host} failed: ${code}`, { cause: err, details });
  return new ChunkvaultError('CONNECT_FAILED', `connection to ${ep.host}:${ep.port} failed: ${code || String(err)}`, { cause: err, details });
}

async function readBody(res: IncomingMessage, ep: VimEndpoint): Promise<string> {
  const parts: Buffer[] = [];
  try {
    for await (const p of res) parts.push(p as Buffer);
  } catch (err) {
    throw transportError(ep, err);
  }
  return Buffer.concat(parts).toString('utf8');
}

function envelope(method: string, inner: string): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>' +
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
    `<soapenv:Body><${method} xmlns="urn:vim25">${inner}</${method}></soapenv:Body></soapenv:Envelope>`
  );
}

/** The SOAP fault of a response body as a typed error. */
export function faultError(method: string, fault: XmlElement): ChunkvaultError {
  const message = textAt(fault, 'faultstring') ?? 'SOAP fault';
  const detail = child(fault, 'detail')?.children[0];
  const type = detail?.type ?? detail?.name.replace(/Fault$/, '') ?? 'Unknown';
  const details = { faultType: type, method };
  if (type === 'InvalidLogin') return new ChunkvaultError('CONNECT_FAILED', `vSphere login refused: ${message}`, { details });
  return new ChunkvaultError('REMOTE_ERROR', `vSphere ${method} failed: ${type}: ${message}`, { details });
}

export interface ServiceContent {
  readonly propertyCollector: MoRef;
  readonly sessionManager: MoRef;
  readonly searchIndex: MoRef;
  readonly rootFolder: MoRef;
}

export class VimClient {
  private cookie: string | null = null;
  private content: ServiceContent | null = null;
  /** Logins so far (the first and every re-login after NotAuthenticated). */
  logins = 0;

  private constructor(private readonly o: VimLogin) {}

  get endpoint(): VimEndpoint {
    return this.o.endpoint;
  }

  /** The session cookie header value (for /folder reads). */
  get sessionCookie(): string | null {
    return this.cookie;
  }

  get serviceContent(): ServiceContent {
    if (!this.content) throw new ChunkvaultError('INTERNAL', 'vSphere client used before login');
    return this.content;
  }

  static async login(o: VimLogin): Promise<VimClient> {
    const c = new VimClient(o);
    await c.relogin();
    return c;
  }

  private async relogin(): Promise<void> {
    this.cookie = null;
    if (!this.content) {
      const sc = await this.raw('RetrieveServiceContent', moXml('_this', { type: 'ServiceInstance', value: 'ServiceInstance' }));
      const rv = child(sc, 'returnval');
      this.content = {
        propertyCollector: toMoRef(child(rv, 'propertyCollector'), 'propertyCollector'),
        sessionManager: toMoRef(child(rv, 'sessionManager'), 'sessionManager'),
        searchIndex: toMoRef(child(rv, 'searchIndex'), 'searchIndex'),
        rootFolder: toMoRef(child(rv, 'rootFolder'), 'rootFolder'),
      };
    }
    const inner = moXml('_this', this.content.sessionManager) + `<userName>${escapeXml(this.o.user)}</userName><password>${escapeXml(this.o.password)}</password>`;
    await this.raw('Login', inner);
    this.logins++;
  }

  /** Calls `method` on `self`; `inner` is the rest of the request body (already XML). */
  async call(method: string, self: MoRef, inner = ''): Promise<XmlElement> {
    try {
      return await this.raw(method, moXml('_this', self) + inner);
    } catch (err) {
      if (faultType(err) !== 'NotAuthenticated') throw err;
      await this.relogin();
      return this.raw(method, moXml('_this', self) + inner);
    }
  }

  private async raw(method: string, inner: string): Promise<XmlElement> {
    const ep = this.o.endpoint;
    const headers: Record<string, string> = { 'content-type': 'text/xml; charset=utf-8', soapaction: 'urn:vim25/6.5' };
    if (this.cookie) headers['cookie'] = `${SESSION_COOKIE}=${this.cookie}`;
    const res = await vimRequest(ep, { method: 'POST', path: '/sdk', headers, timeout: this.o.timeoutMs ?? 60_000 }, envelope(method, inner));
    const setCookie = (res.headers['set-cookie'] ?? []).map((c) => new RegExp(`^${SESSION_COOKIE}=([^;]*)`).exec(c)?.[1]).find((v) => v !== undefined);
    if (setCookie !== undefined) this.cookie = setCookie;
    const text = await readBody(res, ep);
    let body: XmlElement | undefined;
    try {
      body = child(parseXml(text), 'Body');
    } catch (err) {
      throw new ChunkvaultError('PROTOCOL_ERROR', `vSphere ${method}: the answer (HTTP ${res.statusCode}) is not XML`, { cause: err, details: { method, status: res.statusCode ?? 0 } });
    }
    const fault = child(body, 'Fault');
    if (fault) throw faultError(method, fault);
    const answer = child(body, `${method}Response`);
    if (!answer) throw new ChunkvaultError('PROTOCOL_ERROR', `vSphere ${method}: no ${method}Response in the answer (HTTP ${res.statusCode})`, { details: { method, status: res.statusCode ?? 0 } });
    return answer;
  }

  /** Properties of one object: path -> its `val` element (absent paths are missing). */
  async properties(obj: MoRef, paths: readonly string[]): Promise<Map<string, XmlElement>> {
    const spec =
      `<specSet><propSet><type>${escapeXml(obj.type)}</type>${paths.map((p) => `<pathSet>${escapeXml(p)}</pathSet>`).join('')}</propSet>` +
      `<objectSet>${moXml('obj', obj)}<skip>false</skip></objectSet></specSet><options></options>`;
    const out = new Map<string, XmlElement>();
    const pc = this.serviceContent.propertyCollector;
    let answer = await this.call('RetrievePropertiesEx', pc, spec);
    for (;;) {
      const rv = child(answer, 'returnval');
      for (const o of children(rv, 'objects')) for (const ps of children(o, 'propSet')) out.set(textAt(ps, 'name') ?? '', child(ps, 'val')!);
      const token = textAt(rv, 'token');
      if (token === undefined) return out;
      answer = await this.call('ContinueRetrievePropertiesEx', pc, `<token>${escapeXml(token)}</token>`);
    }
  }

  /** Polls a task until it ends; its `info.result` on success. */
  async waitTask(task: MoRef, timeoutMs: number, signal?: AbortSignal): Promise<XmlElement | undefined> {
    const deadline = Date.now() + timeoutMs;
    let delay = 20;
    for (;;) {
      const info = (await this.properties(task, ['info'])).get('info');
      const state = textAt(info, 'state');
      if (state === 'success') return child(info, 'result');
      if (state === 'error') {
        const fault = child(child(info, 'error'), 'fault');
        const type = fault?.type ?? 'Unknown';
        const message = textAt(info, 'error/localizedMessage') ?? type;
        throw new ChunkvaultError('REMOTE_ERROR', `vSphere task ${textAt(info, 'descriptionId') ?? task.value} failed: ${type}: ${message}`, { details: { faultType: type, method: 'task', task: task.value } });
      }
      if (Date.now() > deadline) throw new ChunkvaultError('TIMEOUT', `vSphere task ${task.value} did not end in ${timeoutMs} ms`, { details: { task: task.value, timeoutMs } });
      if (signal?.aborted) throw new ChunkvaultError('INTERRUPTED', 'interrupted while waiting for a vSphere task');
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1000);
    }
  }

  /** Runs a `*_Task` method and waits for it. */
  async task(method: string, self: MoRef, inner: string, timeoutMs: number, signal?: AbortSignal): Promise<XmlElement | undefined> {
    const answer = await this.call(method, self, inner);
    return this.waitTask(toMoRef(child(answer, 'returnval'), `${method} task`), timeoutMs, signal);
  }

  /** Ends the session; never throws. */
  async logout(): Promise<void> {
    if (!this.content || !this.cookie) return;
    await this.raw('Logout', moXml('_this', this.content.sessionManager)).catch(() => undefined);
    this.cookie = null;
  }
}
