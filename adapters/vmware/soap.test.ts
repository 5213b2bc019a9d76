import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/errors.js';
import { changedAreas } from './front-end.js';
import { faultType, VimClient } from './soap.js';

const env = (inner: string): string => `<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>${inner}</soapenv:Body></soapenv:Envelope>`;
const fault = (type: string): string => env(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>boom</faultstring><detail><${type}Fault xsi:type="${type}"/></detail></soapenv:Fault>`);
const SERVICE_CONTENT = env(
  '<RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">group-d1</rootFolder><propertyCollector type="PropertyCollector">propertyCollector</propertyCollector><searchIndex type="SearchIndex">SearchIndex</searchIndex><sessionManager type="SessionManager">SessionManager</sessionManager></returnval></RetrieveServiceContentResponse>',
);

type Handler = (method: string, body: string, req: IncomingMessage) => { status?: number; body: string; cookie?: string } | 'hang';
let server: Server | null = null;

async function serve(handler: Handler): Promise<number> {
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const method = /<Body><(\w+)/.exec(body.replace(/soapenv:/g, ''))?.[1] ?? '';
      if (method === 'RetrieveServiceContent') return void res.end(SERVICE_CONTENT);
      const out = handler(method, body, req);
      if (out === 'hang') return;
      res.writeHead(out.status ?? 200, out.cookie ? { 'set-cookie': `vmware_soap_session=${out.cookie}; Path=/` } : {});
      res.end(out.body);
    });
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  return (server.address() as AddressInfo).port;
}

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => (server ? server.close(r) : r(undefined)));
  server = null;
});

const login = (port: number, timeoutMs?: number): Promise<VimClient> => VimClient.login({ endpoint: { protocol: 'http:', host: '127.0.0.1', port }, user: 'u', password: 'p', ...(timeoutMs ? { timeoutMs } : {}) });
const ok = (method: string, inner = ''): { body: string } => ({ body: env(`<${method}Response xmlns="urn:vim25">${inner}</${method}Response>`) });

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => null,
    (e: unknown) => e,
  );
}

describe('vSphere SOAP client', () => {
  it('maps a SOAP fault to REMOTE_ERROR with its faultType', async () => {
    const port = await serve((m) => (m === 'Login' ? { ...ok('Login'), cookie: 's1' } : { status: 500, body: fault('InvalidState') }));
    const vim = await login(port);
    const err = await failure(vim.call('CreateSnapshot_Task', { type: 'VirtualMachine', value: 'vm-1' }));
    expect(isChunkvaultError(err, 'REMOTE_ERROR')).toBe(true);
    expect(faultType(err)).toBe('InvalidState');
  });

  it('a refused login is CONNECT_FAILED (InvalidLogin)', async () => {
    const port = await serve(() => ({ status: 500, body: fault('InvalidLogin') }));
    const err = await failure(login(port));
    expect(isChunkvaultError(err, 'CONNECT_FAILED')).toBe(true);
    expect(faultType(err)).toBe('InvalidLogin');
  });

  it('logs in again once on NotAuthenticated and repeats the call with the new cookie', async () => {
    let logins = 0;
    const port = await serve((m, _b, req) => {
      if (m === 'Login') return { ...ok('Login'), cookie: `s${++logins}` };
      return req.headers.cookie?.includes('s2') ? ok(m, '<returnval>x</returnval>') : { status: 500, body: fault('NotAuthenticated') };
    });
    const vim = await login(port);
    const answer = await vim.call('Whatever', { type: 'T', value: 'v' });
    expect(answer.children[0]?.text).toBe('x');
    expect(vim.logins).toBe(2);
  });

  for (const [label, body] of [
    ['not XML', 'Service Unavailable'],
    ['an HTML page', '<html><body>503</body>'],
    ['an envelope without the response', env('<Other/>')],
  ] as const) {
    it(`an answer that is ${label} is PROTOCOL_ERROR`, async () => {
      const port = await serve((m) => (m === 'Login' ? { ...ok('Login'), cookie: 's' } : { status: 503, body }));
      const vim = await login(port);
      const err = await failure(vim.call('RetrievePropertiesEx', { type: 'PropertyCollector', value: 'pc' }));
      expect(isChunkvaultError(err, 'PROTOCOL_ERROR')).toBe(true);
    });
  }

  it('no answer in time is TIMEOUT; a closed port is CONNECT_FAILED', async () => {
    const port = await serve((m) => (m === 'Login' ? 'hang' : ok(m)));
    expect(isChunkvaultError(await failure(login(port, 200)), 'TIMEOUT')).toBe(true);
    await new Promise((r) => server!.close(r));
    server!.closeAllConnections();
    server = null;
    expect(isChunkvaultError(await failure(login(port)), 'CONNECT_FAILED')).toBe(true);
  });

  it('a task that ends in error is REMOTE_ERROR with the task fault type', async () => {
    const port = await serve((m) => {
      if (m === 'Login') return { ...ok('Login'), cookie: 's' };
      if (m === 'ReconfigVM_Task') return ok(m, '<returnval type="Task">task-1</returnval>');
      return ok(m, '<returnval><objects><obj type="Task">task-1</obj><propSet><name>info</name><val><state>error</state><error><fault xsi:type="FileFault"/><localizedMessage>no</localizedMessage></error></val></propSet></objects></returnval>');
    });
    const vim = await login(port);
    const err = await failure(vim.task('ReconfigVM_Task', { type: 'VirtualMachine', value: 'vm-1' }, '', 5000));
    expect(isChunkvaultError(err, 'REMOTE_ERROR')).toBe(true);
    expect(faultType(err)).toBe('FileFault');
  });

  it('a task still running at its deadline is TIMEOUT', async () => {
    const port = await serve((m) => {
      if (m === 'Login') return { ...ok('Login'), cookie: 's' };
      return ok(m, '<returnval><objects><obj type="Task">task-1</obj><propSet><name>info</name><val><state>running</state></val></propSet></objects></returnval>');
    });
    const vim = await login(port);
    expect(isChunkvaultError(await failure(vim.waitTask({ type: 'Task', value: 'task-1' }, 100)), 'TIMEOUT')).toBe(true);
  });

  it('QueryChangedDiskAreas is paged over the capacity; a page that does not advance is PROTOCOL_ERROR', async () => {
    let stall = false;
    const port = await serve((m, body) => {
      if (m === 'Login') return { ...ok('Login'), cookie: 's' };
      const start = Number(/<startOffset>(\d+)</.exec(body)?.[1]);
      const len = stall ? 0 : 1000;
      return ok(m, `<returnval><startOffset>${start}</startOffset><length>${len}</length><changedArea><start>${start + 10}</start><length>5</length></changedArea></returnval>`);
    });
    const vim = await login(port);
    const at = { vm: { type: 'VirtualMachine', value: 'vm-1' }, snapshot: { type: 'VirtualMachineSnapshot', value: 'snapshot-1' } };
    const disk = { name: 'd', key: 2000, fileName: '[ds] a.vmdk', sizeBytes: 2500, changeId: null };
    expect(await changedAreas(vim, at, disk, '*')).toEqual([
      { offset: 10, length: 5 },
      { offset: 1010, length: 5 },
      { offset: 2010, length: 5 },
    ]);
    stall = true;
    expect(isChunkvaultError(await failure(changedAreas(vim, at, disk, '*')), 'PROTOCOL_ERROR')).toBe(true);
  });
});
