/**
 * A XenAPI client: JSON-RPC (`POST /jsonrpc`, xapi 1.x+) with a fallback to XML-RPC
 * (`POST /`) when the server has no JSON-RPC endpoint (404).
 *
 * Terms:
 * - session: the opaque reference `session.login_with_password` returns; every other
 *   call takes it as its first parameter. `logout` ends it.
 * - XenAPI error: a failed call's `["CODE", params...]` (XML-RPC: `{Status: "Failure",
 *   ErrorDescription}`; JSON-RPC 2.0: `error: {message: CODE, data: params}`). It
 *   becomes REMOTE_ERROR with `details: {xenCode, params, method}`; callers branch on
 *   `xenCode`. SESSION_AUTHENTICATION_FAILED is CONNECT_FAILED with the same details.
 * - transport errors: unreachable host CONNECT_FAILED, no answer in time TIMEOUT,
 *   anything that is not a XenAPI answer PROTOCOL_ERROR.
 *
 * int64 fields come as strings over XML-RPC and as numbers over JSON-RPC: use `toInt`.
 */
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { ChunkvaultError, isChunkvaultError } from '../../engine/errors.js';
import { decodeResponse, encodeCall, type XmlRpcValue } from './xmlrpc.js';

export interface XapiEndpoint {
  /** `http:` or `https:` */
  readonly protocol: 'http:' | 'https:';
  readonly host: string;
  readonly port: number;
  /** PEM CA certificates for https (default: the system's). */
  readonly ca?: Buffer;
}

export interface XapiLogin {
  readonly endpoint: XapiEndpoint;
  readonly user: string;
  readonly password: string;
  /** Per call (default 60 000 ms). */
  readonly timeoutMs?: number;
}

export type XapiProtocol = 'jsonrpc' | 'xmlrpc';

/** The XenAPI error code of `err`, or null when it is not a XenAPI error. */
export function xenCode(err: unknown): string | null {
  if (!isChunkvaultError(err)) return null;
  const code = err.details['xenCode'];
  return typeof code === 'string' ? code : null;
}

/** An int64 field (string over XML-RPC, number over JSON-RPC). */
export function toInt(value: unknown, what: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : NaN;
  if (!Number.isSafeInteger(n)) throw new ChunkvaultError('PROTOCOL_ERROR', `XenAPI: ${what} is not an integer`, { details: { what, value: String(value) } });
  return n;
}

function xenError(method: string, description: unknown): ChunkvaultError {
  const list = Array.isArray(description) ? description.map(String) : [String(description)];
  const [code = 'UNKNOWN', ...params] = list;
  const details = { xenCode: code, params, method };
  if (code === 'SESSION_AUTHENTICATION_FAILED') return new ChunkvaultError('CONNECT_FAILED', `XenAPI login refused: ${code}`, { details });
  return new ChunkvaultError('REMOTE_ERROR', `XenAPI ${method} failed: ${list.join(' ')}`, { details });
}

interface HttpReply {
  readonly status: number;
  readonly body: string;
}

/** Options for node's http(s).request against this endpoint. */
export function requestOptions(endpoint: XapiEndpoint, method: string, path: string, timeoutMs: number): RequestOptions & { ca?: Buffer } {
  return { host: endpoint.host, port: endpoint.port, method, path, timeout: timeoutMs, ...(endpoint.ca ? { ca: endpoint.ca } : {}) };
}

/** Maps a socket-level failure to CONNECT_FAILED / TIMEOUT / TLS_FAILED. */
export function transportError(endpoint: XapiEndpoint, err: unknown): ChunkvaultError {
  if (isChunkvaultError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  const details = { host: endpoint.host, port: endpoint.port, reason: e.code ?? null };
  if (e.code?.startsWith('ERR_TLS') || /certificate|self.signed/i.test(e.code ?? '')) {
    return new ChunkvaultError('TLS_FAILED', `XenAPI: TLS to ${endpoint.host} failed: ${e.message}`, { cause: err, details });
  }
  return new ChunkvaultError('CONNECT_FAILED', `XenAPI: cannot reach ${endpoint.host}:${endpoint.port}: ${e.message}`, { cause: err, details });
}

export function sendRequest(endpoint: XapiEndpoint, options: RequestOptions, body?: string): Promise<IncomingMessage> {
  const send = endpoint.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<IncomingMessage>((resolve, reject) => {
    const req = send(options, resolve);
    req.on('timeout', () => req.destroy(new ChunkvaultError('TIMEOUT', `XenAPI: no answer from ${endpoint.host} in ${options.timeout} ms`, { details: { host: endpoint.host } })));
    req.on('error', (err) => reject(transportError(endpoint, err)));
    req.end(body);
  });
}

async function post(endpoint: XapiEndpoint, path: string, contentType: string, body: string, timeoutMs: number): Promise<HttpReply> {
  const options = requestOptions(endpoint, 'POST', path, timeoutMs);
  options.headers = { 'content-type': contentType, 'content-length': Buffer.byteLength(body) };
  const res = await sendRequest(endpoint, options, body);
  const parts: Buffer[] = [];
  try {
    for await (const part of res) parts.push(part as Buffer);
  } catch (err) {
    throw transportError(endpoint, err);
  }
  return { status: res.statusCode ?? 0, body: Buffer.concat(parts).toString('utf8') };
}

function notXenApi(reason: string, extra: Record<string, string | number> = {}): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `XenAPI: ${reason}`, { details: { reason, ...extra } });
}

export class XapiClient {
  private session: string | null = null;
  private nextId = 1;

  private constructor(
    readonly endpoint: XapiEndpoint,
    private readonly timeoutMs: number,
    private protocolInUse: XapiProtocol,
  ) {}

  /** Logs in (trying JSON-RPC, then XML-RPC); the client is ready for `call`. */
  static async login(o: XapiLogin): Promise<XapiClient> {
    const client = new XapiClient(o.endpoint, o.timeoutMs ?? 60_000, 'jsonrpc');
    const ref = await client.rawCall('session.login_with_password', [o.user, o.password, '1.0', 'chunkvault']);
    if (typeof ref !== 'string') throw notXenApi('login returned no session reference');
    client.session = ref;
    return client;
  }

  get protocol(): XapiProtocol {
    return this.protocolInUse;
  }

  /** The session reference (for HTTP handlers such as export_raw_vdi). */
  get sessionId(): string {
    if (this.session === null) throw new ChunkvaultError('INVALID_ARGUMENT', 'XenAPI session is closed');
    return this.session;
  }

  /** Calls `method(session, ...args)`. */
  async call<T = unknown>(method: string, ...args: XmlRpcValue[]): Promise<T> {
    return (await this.rawCall(method, [this.sessionId, ...args])) as T;
  }

  /** Ends the session; never throws (a dead session ends anyway). */
  async logout(): Promise<void> {
    if (this.session === null) return;
    const session = this.session;
    this.session = null;
    await this.rawCall('session.logout', [session]).catch(() => undefined);
  }

  private async rawCall(method: string, params: XmlRpcValue[]): Promise<unknown> {
    if (this.protocolInUse === 'jsonrpc') {
      const reply = await this.jsonCall(method, params);
      if (reply !== undefined) return reply.value;
      this.protocolInUse = 'xmlrpc';
    }
    return this.xmlCall(method, params);
  }

  /** Undefined when the server has no JSON-RPC endpoint. */
  private async jsonCall(method: string, params: XmlRpcValue[]): Promise<{ value: unknown } | undefined> {
    const id = this.nextId++;
    const body = JSON.stringify({ jsonrpc: '2.0', method, params, id });
    const reply = await post(this.endpoint, '/jsonrpc', 'application/json', body, this.timeoutMs);
    if (reply.status === 404 || reply.status === 405) return undefined;
    if (reply.status !== 200) throw notXenApi(`HTTP ${reply.status} from /jsonrpc`, { status: reply.status });
    let msg: { result?: unknown; error?: unknown; id?: unknown };
    try {
      msg = JSON.parse(reply.body) as typeof msg;
    } catch (err) {
      throw new ChunkvaultError('PROTOCOL_ERROR', 'XenAPI: JSON-RPC reply is not JSON', { cause: err });
    }
    if (msg === null || typeof msg !== 'object' || msg.id !== id) throw notXenApi('JSON-RPC reply does not answer the call');
    if (msg.error !== undefined && msg.error !== null) {
      // JSON-RPC 2.0: {code, message: CODE, data: params}; 1.0: the description list itself.
      const e = msg.error as { message?: unknown; data?: unknown };
      const description = Array.isArray(e) ? e : [e.message, ...(Array.isArray(e.data) ? e.data : [])];
      throw xenError(method, description);
    }
    if (!('result' in msg)) throw notXenApi('JSON-RPC reply without result');
    return { value: msg.result };
  }

  private async xmlCall(method: string, params: XmlRpcValue[]): Promise<unknown> {
    const reply = await post(this.endpoint, '/', 'text/xml', encodeCall(method, params), this.timeoutMs);
    if (reply.status !== 200) throw notXenApi(`HTTP ${reply.status} from XML-RPC`, { status: reply.status });
    const value = decodeResponse(reply.body) as { Status?: unknown; Value?: unknown; ErrorDescription?: unknown } | null;
    if (value === null || typeof value !== 'object') throw notXenApi('XML-RPC reply is not a XenAPI result struct');
    if (value.Status === 'Success') return value.Value;
    if (value.Status === 'Failure') throw xenError(method, value.ErrorDescription);
    throw notXenApi(`XML-RPC reply with Status ${String(value.Status)}`);
  }
}
