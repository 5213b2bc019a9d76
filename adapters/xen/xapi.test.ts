import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { XapiClient, xenCode, type XapiEndpoint } from './xapi.js';
import { decodeCall, encodeResponse } from './xmlrpc.js';

let server: Server | null = null;

async function serve(handler: (req: IncomingMessage, body: string, res: ServerResponse) => void): Promise<XapiEndpoint> {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => handler(req, body, res));
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { protocol: 'http:', host: '127.0.0.1', port: (server.address() as AddressInfo).port };
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = null;
});

async function failure(p: Promise<unknown>): Promise<{ code: string; details: Record<string, unknown> }> {
  return p.then(
    () => {
      throw new Error('expected a failure');
    },
    (err: { code: string; details: Record<string, unknown> }) => err,
  );
}

describe('XapiClient', () => {
  it('speaks JSON-RPC 2.0 and maps XenAPI errors to REMOTE_ERROR with the code and params', async () => {
    const endpoint = await serve((req, body, res) => {
      const { method, id } = JSON.parse(body) as { method: string; id: number };
      expect(req.url).toBe('/jsonrpc');
      const reply =
        method === 'session.login_with_password'
          ? { jsonrpc: '2.0', result: 'OpaqueRef:s', id }
          : { jsonrpc: '2.0', error: { code: 1, message: 'HANDLE_INVALID', data: ['VDI', 'OpaqueRef:x'] }, id };
      res.end(JSON.stringify(reply));
    });
    const x = await XapiClient.login({ endpoint, user: 'u', password: 'p' });
    expect(x.protocol).toBe('jsonrpc');
    const err = await failure(x.call('VDI.snapshot', 'OpaqueRef:x', {}));
    expect(err.code).toBe('REMOTE_ERROR');
    expect(err.details).toMatchObject({ xenCode: 'HANDLE_INVALID', params: ['VDI', 'OpaqueRef:x'], method: 'VDI.snapshot' });
    expect(xenCode(err)).toBe('HANDLE_INVALID');
  });

  it('falls back to XML-RPC on 404 and reads {Status, Value | ErrorDescription}', async () => {
    const seen: string[] = [];
    const endpoint = await serve((req, body, res) => {
      if (req.url === '/jsonrpc') return void res.writeHead(404).end();
      const call = decodeCall(body);
      seen.push(call.method);
      if (call.method === 'session.login_with_password') {
        const ok = call.params[1] === 'right';
        return void res.end(encodeResponse(ok ? { Status: 'Success', Value: 'OpaqueRef:s' } : { Status: 'Failure', ErrorDescription: ['SESSION_AUTHENTICATION_FAILED', 'u', 'no'] }));
      }
      res.end(encodeResponse({ Status: 'Success', Value: { virtual_size: '1048576', session: call.params[0] ?? null } }));
    });
    const refused = await failure(XapiClient.login({ endpoint, user: 'u', password: 'wrong' }));
    expect(refused).toMatchObject({ code: 'CONNECT_FAILED', details: { xenCode: 'SESSION_AUTHENTICATION_FAILED' } });
    const x = await XapiClient.login({ endpoint, user: 'u', password: 'right' });
    expect(x.protocol).toBe('xmlrpc');
    expect(await x.call('VDI.get_record', 'OpaqueRef:v')).toEqual({ virtual_size: '1048576', session: 'OpaqueRef:s' });
    await x.logout();
    expect(seen.at(-1)).toBe('session.logout');
  });

  it('types transport problems: PROTOCOL_ERROR, TIMEOUT, CONNECT_FAILED', async () => {
    const html = await serve((_req, _body, res) => void res.writeHead(502).end('<html>bad gateway</html>'));
    expect((await failure(XapiClient.login({ endpoint: html, user: 'u', password: 'p' }))).code).toBe('PROTOCOL_ERROR');
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    const silent = await serve(() => undefined);
    expect((await failure(XapiClient.login({ endpoint: silent, user: 'u', password: 'p', timeoutMs: 200 }))).code).toBe('TIMEOUT');
    server!.closeAllConnections();
    await new Promise<void>((resolve) => server!.close(() => resolve()));
    server = null;
    expect((await failure(XapiClient.login({ endpoint: silent, user: 'u', password: 'p' }))).code).toBe('CONNECT_FAILED');
  });
});
