/**
 * HTTP plumbing shared by the routes: JSON replies, error replies with stable codes,
 * bounded body reading. Works on both node:http (HTTP/1.1) and the node:http2
 * compatibility API (the server hands every request over as the HTTP/1.1 types).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ChunkvaultError, toChunkvaultError, type ErrorCode } from '../../engine/index.js';

export type Req = IncomingMessage;
export type Res = ServerResponse;

/** HTTP status of each error code the API returns; anything else is 500. */
const STATUS: Partial<Record<ErrorCode, number>> = {
  USAGE: 400,
  INVALID_ARGUMENT: 400,
  EXTENTS_INVALID: 400,
  POINT_AMBIGUOUS: 400,
  AUTH_REQUIRED: 401,
  AUTH_FAILED: 401,
  FORBIDDEN: 403,
  POINT_NOT_FOUND: 404,
  SESSION_NOT_FOUND: 404,
  NOT_FOUND: 404,
  NO_PARENT: 404,
  BODY_TOO_LARGE: 413,
  TOO_MANY_SESSIONS: 429,
  CHUNK_MISSING: 409,
  HASH_MISMATCH: 409,
  REPO_LOCKED: 503,
};

export function statusOf(code: ErrorCode): number {
  return STATUS[code] ?? 500;
}

export function sendJson(res: Res, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), 'cache-control': 'no-store', ...headers });
  res.end(text);
}

/** Replies `{error: {code, message, details}}`; internal errors keep their details to the log. */
export function sendError(res: Res, err: unknown): ChunkvaultError {
  const e = toChunkvaultError(err, 'request failed');
  const status = statusOf(e.code);
  const body = status === 500 ? { code: e.code, message: 'internal server error', details: {} } : e.toJSON();
  const headers: Record<string, string> = e.code === 'AUTH_REQUIRED' || e.code === 'AUTH_FAILED' ? { 'www-authenticate': 'Bearer' } : {};
  sendJson(res, status, { error: body }, headers);
  if (e.code === 'BODY_TOO_LARGE') lingerThenClose(res);
  return e;
}

/** How long a refused body may keep arriving (and be thrown away) after the reply. */
export const LINGER_MS = 2000;

/**
 * After a 413, the client is usually still sending the body it was refused. Closing
 * the connection at once makes its kernel see a reset while it writes, and a reset
 * can throw away the reply it has not read yet (the client sees EPIPE or ECONNRESET,
 * never the 413). So the rest of the body is read and discarded (node's server does
 * that for a request whose reply is done), the connection stays usable when it ends
 * in time, and it is closed when more than LINGER_MS of it is still coming.
 */
function lingerThenClose(res: Res): void {
  const req = res.req as Req | undefined;
  if (!req || req.httpVersionMajor !== 1 || req.complete) return;
  const timer = setTimeout(() => req.socket.destroy(), LINGER_MS);
  timer.unref();
  req.once('end', () => clearTimeout(timer));
  req.once('close', () => clearTimeout(timer));
  req.resume();
}

/**
 * Reads a request body of at most `limit` bytes (BODY_TOO_LARGE before reading when
 * Content-Length says more, or as soon as more arrives). `onData` sees every piece
 * (activity tracking, metrics).
 */
export async function readBody(req: Req, limit: number, onData?: (n: number) => void): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    throw new ChunkvaultError('BODY_TOO_LARGE', `the request body may hold at most ${limit} bytes`, { details: { limit } });
  }
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let total = 0;
    const done = (err?: Error): void => {
      req.off('data', onPiece).off('end', onEnd).off('error', done).off('close', onClose);
      if (err) reject(err);
      else resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, total));
    };
    const onPiece = (piece: Buffer): void => {
      total += piece.length;
      onData?.(piece.length);
      // Not destroyed: the reply must reach the client first (sendError lingers, then closes).
      if (total > limit) done(new ChunkvaultError('BODY_TOO_LARGE', `the request body may hold at most ${limit} bytes`, { details: { limit } }));
      else parts.push(piece);
    };
    const onEnd = (): void => done();
    const onClose = (): void => done(new ChunkvaultError('INTERRUPTED', 'the client went away during the request body'));
    req.on('data', onPiece).on('end', onEnd).on('error', done).on('close', onClose);
  });
}

/** A JSON object body (INVALID_ARGUMENT when it is not one). */
export async function readJson(req: Req, limit: number): Promise<Record<string, unknown>> {
  const body = await readBody(req, limit);
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    throw new ChunkvaultError('INVALID_ARGUMENT', 'the request body is not valid JSON');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ChunkvaultError('INVALID_ARGUMENT', 'the request body must be a JSON object');
  return value as Record<string, unknown>;
}

/** Writes `data` and waits for drain when the response buffers; rejects when the client went away. */
export async function writeOut(res: Res, data: Uint8Array): Promise<void> {
  if (res.destroyed) throw new ChunkvaultError('OUTPUT_FAILED', 'the client closed the connection');
  if (res.write(data)) return;
  await new Promise<void>((resolve, reject) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', closed);
      resolve();
    };
    const closed = () => {
      res.off('drain', done);
      reject(new ChunkvaultError('OUTPUT_FAILED', 'the client closed the connection'));
    };
    res.once('drain', done);
    res.once('close', closed);
  });
}

/** A non-negative safe integer from a JSON value or query string, else INVALID_ARGUMENT. */
export function intArg(value: unknown, what: string): number {
  const n = typeof value === 'string' && /^\d{1,16}$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new ChunkvaultError('INVALID_ARGUMENT', `${what} must be a non-negative integer`);
  return n;
}
