import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/errors.js';
import { parseXml } from '../_xml.js';
import { diskNameOf, normalizeExtents } from './front-end.js';
import { mapHostPath, parseHypervSource } from './source.js';
import { classUri, embeddedInstance, parseInstance, WsmanClient } from './wsman.js';

const ENV_HEAD = '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><s:Header/><s:Body>';

async function server(handler: (body: string, res: http.ServerResponse) => void): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => handler(body, res));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as AddressInfo).port, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(() => r()); }) };
}

let stop: (() => Promise<void>) | null = null;
afterEach(async () => {
  await stop?.();
  stop = null;
});

async function clientAnswering(status: number, xml: string): Promise<WsmanClient> {
  const s = await server((_b, res) => res.writeHead(status, { 'content-type': 'application/soap+xml' }).end(xml));
  stop = s.close;
  return new WsmanClient({ https: false, host: '127.0.0.1', port: s.port, user: 'u', password: 'p', timeoutMs: 2000 });
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; details: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    if (isChunkvaultError(err)) return { code: err.code, details: err.details };
    throw err;
  }
  return { code: 'none', details: {} };
}

describe('hyperv xml', () => {
  it('parses prefixes, entities, CDATA, self-closing and nil elements', () => {
    const doc = parseXml('<?xml version="1.0"?><!-- c --><p:A xmlns:p="x" k="a&amp;b"><p:B>1 &lt; 2</p:B><p:C xsi:nil="true"/><![CDATA[<raw>]]></p:A>');
    expect(doc.name).toBe('A');
    expect(doc.attrs['k']).toBe('a&b');
    expect(doc.children.map((c) => [c.name, c.text])).toEqual([['B', '1 < 2'], ['C', '']]);
    expect(doc.text).toBe('<raw>');
  });

  it('refuses DTDs, unknown entities and mismatched tags', () => {
    for (const bad of ['<!DOCTYPE x><a/>', '<a>&foo;</a>', '<a><b></a>', '<a>', '']) {
      expect(() => parseXml(bad), bad).toThrow(expect.objectContaining({ code: 'PROTOCOL_ERROR' }));
    }
  });

  it('reads a CIM instance: arrays, nulls and EPRs', () => {
    const inst = parseInstance(parseXml(`<p:X xmlns:p="u" xmlns:a="a" xmlns:w="w" xmlns:xsi="i"><p:Ids>a</p:Ids><p:Ids>b</p:Ids><p:N xsi:nil="true"/><p:Job><a:Address>anon</a:Address><a:ReferenceParameters><w:ResourceURI>${classUri('Msvm_ConcreteJob')}</w:ResourceURI><w:SelectorSet><w:Selector Name="InstanceID">J1</w:Selector></w:SelectorSet></a:ReferenceParameters></p:Job></p:X>`));
    expect(inst['Ids']).toEqual(['a', 'b']);
    expect(inst['N']).toBeNull();
    expect(inst['Job']).toEqual({ resourceUri: classUri('Msvm_ConcreteJob'), selectors: { InstanceID: 'J1' } });
    expect(embeddedInstance('C', { L: { type: 'uint8', value: 2 } })).toBe('<INSTANCE CLASSNAME="C"><PROPERTY NAME="L" TYPE="uint8"><VALUE>2</VALUE></PROPERTY></INSTANCE>');
  });
});

describe('hyperv WS-Man client errors', () => {
  it('a SOAP fault is REMOTE_ERROR with the subcode and WMI code', async () => {
    const w = await clientAnswering(500, `${ENV_HEAD}<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>w:InvalidSelectors</s:Value></s:Subcode></s:Code><s:Reason><s:Text>bad</s:Text></s:Reason><s:Detail><f:WSManFault xmlns:f="f" Code="2150858843"><f:Message>no such</f:Message></f:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>`);
    expect(await codeOf(w.get('Msvm_ConcreteJob', { InstanceID: 'x' }))).toEqual({ code: 'REMOTE_ERROR', details: { wsmanFault: 'w:InvalidSelectors', wsmanCode: '2150858843', action: 'Get' } });
  });

  it('401 is CONNECT_FAILED, HTML is PROTOCOL_ERROR, a non-zero return value and a failed job are REMOTE_ERROR', async () => {
    expect((await codeOf((await clientAnswering(401, '')).enumerate('Msvm_ComputerSystem'))).code).toBe('CONNECT_FAILED');
    await stop?.();
    expect((await codeOf((await clientAnswering(200, '<html>hi</html>')).enumerate('Msvm_ComputerSystem'))).code).toBe('PROTOCOL_ERROR');
    await stop?.();
    const epr = { resourceUri: classUri('Msvm_ImageManagementService'), selectors: { Name: 'x' } };
    const rv = await clientAnswering(200, `${ENV_HEAD}<p:M_OUTPUT xmlns:p="u"><p:ReturnValue>32775</p:ReturnValue></p:M_OUTPUT></s:Body></s:Envelope>`);
    expect(await codeOf(rv.invokeAndWait(epr, 'M', {}))).toEqual({ code: 'REMOTE_ERROR', details: { method: 'M', returnValue: 32775 } });
  });

  it('a job ending in state 10 is REMOTE_ERROR with jobState; a dropped connection CONNECT_FAILED; silence TIMEOUT', async () => {
    let n = 0;
    const job = `<p:Job><a:Address>x</a:Address><a:ReferenceParameters><w:ResourceURI>${classUri('Msvm_ConcreteJob')}</w:ResourceURI><w:SelectorSet><w:Selector Name="InstanceID">J</w:Selector></w:SelectorSet></a:ReferenceParameters></p:Job>`;
    const s = await server((_b, res) => {
      n++;
      const body = n === 1 ? `<p:M_OUTPUT xmlns:p="u">${job}<p:ReturnValue>4096</p:ReturnValue></p:M_OUTPUT>` : `<p:Msvm_ConcreteJob xmlns:p="u"><p:JobState>${n === 2 ? 4 : 10}</p:JobState><p:ErrorCode>32768</p:ErrorCode><p:ErrorDescription>boom</p:ErrorDescription></p:Msvm_ConcreteJob>`;
      if (n === 4) res.socket?.destroy();
      else if (n === 5) return;
      else res.writeHead(200).end(`${ENV_HEAD}${body}</s:Body></s:Envelope>`);
    });
    stop = s.close;
    const w = new WsmanClient({ https: false, host: '127.0.0.1', port: s.port, user: 'u', password: 'p', timeoutMs: 300 });
    const epr = { resourceUri: classUri('Msvm_VirtualSystemSnapshotService'), selectors: { Name: 'x' } };
    expect(await codeOf(w.invokeAndWait(epr, 'M', {}, 5000, 1))).toEqual({ code: 'REMOTE_ERROR', details: { method: 'M', jobState: 10, errorCode: '32768', errorDescription: 'boom' } });
    expect((await codeOf(w.get('Msvm_ConcreteJob', { InstanceID: 'J' }))).code).toBe('CONNECT_FAILED');
    expect((await codeOf(w.get('Msvm_ConcreteJob', { InstanceID: 'J' }))).code).toBe('TIMEOUT');
    w.close();
  });
});

describe('hyperv source URIs', () => {
  it('parses options and defaults', () => {
    expect(parseHypervSource('hyperv://CORP%5Cbackup@hv1/SQL%2001?map=C:\\VMs=/mnt/vms&consistency=crash')).toEqual({
      https: false, insecure: false, user: 'CORP\\backup', host: 'hv1', port: 5985, vm: 'SQL 01', consistency: 'crash', auth: 'basic', map: [{ host: 'C:\\VMs', local: '/mnt/vms' }],
    });
    expect(parseHypervSource('hyperv://u@hv1:1234/vm?https=1&insecure=1')).toMatchObject({ https: true, insecure: true, port: 1234 });
    expect(parseHypervSource('hyperv://u@hv1/vm?https=1').port).toBe(5986);
  });

  it('refuses passwords, unknown options, bad values', () => {
    for (const bad of ['hyperv://u:pw@h/vm', 'hyperv://h/vm', 'hyperv://u@h/', 'hyperv://u@h/a/b', 'hyperv://u@h/vm?x=1', 'hyperv://u@h/vm?consistency=vss', 'hyperv://u@h/vm?insecure=1', 'hyperv://u@h/vm?map=novalue', 'hyperv://u@h/vm?auth=kerberos', 'xen://u@h/vm']) {
      expect(() => parseHypervSource(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });

  it('maps host paths by the longest prefix, case-insensitively, at a separator', () => {
    const map = [{ host: 'C:\\VMs', local: '/mnt/vms' }, { host: 'C:\\VMs\\Fast', local: '/mnt/fast' }, { host: '\\\\nas\\hv', local: '/' }];
    expect(mapHostPath('c:\\vms\\a\\disk.vhdx', map)).toBe('/mnt/vms/a/disk.vhdx');
    expect(mapHostPath('C:\\VMs\\Fast\\d.avhdx', map)).toBe('/mnt/fast/d.avhdx');
    expect(mapHostPath('\\\\nas\\hv\\x.vhdx', map)).toBe('/x.vhdx');
    expect(() => mapHostPath('C:\\VMsOther\\d.vhdx', map)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(mapHostPath('/local/d.vhdx', [])).toBe('/local/d.vhdx');
    expect(diskNameOf('C:\\VMs\\a b\\Disk 1.vhdx')).toBe('Disk_1');
    expect(normalizeExtents([{ offset: 8192, length: 10 }, { offset: 0, length: 4096 }, { offset: 4096, length: 100 }, { offset: 8000, length: 200 }])).toEqual([{ offset: 0, length: 4196 }, { offset: 8000, length: 202 }]);
  });
});
