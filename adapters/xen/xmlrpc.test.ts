import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/errors.js';
import { decodeCall, decodeResponse, encodeCall, encodeFault, encodeResponse, type XmlRpcValue } from './xmlrpc.js';
import { parseXenSource } from './source.js';

const value: fc.Arbitrary<XmlRpcValue> = fc.letrec<{ v: XmlRpcValue }>((tie) => ({
  v: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.string(),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.uint8Array({ maxLength: 40 }).map((a) => Buffer.from(a)),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(fc.string({ minLength: 1 }).filter((k) => k !== '__proto__'), tie('v'), { maxKeys: 4 }),
  ),
})).v;

describe('XML-RPC codec', () => {
  it('round-trips calls and responses', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1 }).map((s) => s.replace(/\s/g, 'x')), fc.array(value, { maxLength: 4 }), (method, params) => {
        // Control characters other than tab/newline are not representable in XML 1.0.
        fc.pre(!/[\x00-\x08\x0b\x0c\x0e-\x1f\r]/.test(JSON.stringify(params) + method));
        expect(decodeCall(encodeCall(method, params))).toEqual({ method, params });
        for (const p of params) expect(decodeResponse(encodeResponse(p))).toEqual(p);
      }),
    );
  });

  it('decodes xapi-style responses: untyped strings, whitespace, i8, entities', () => {
    const xml = `<?xml version="1.0"?>
<methodResponse><params><param><value><struct>
  <member><name>Status</name><value>Success</value></member>
  <member><name>Value</name><value><array><data>
    <value>a &amp; b &lt;c&gt; &#x41;&#66;</value><value><i8>9007199254740991</i8></value><value><boolean>1</boolean></value>
  </data></array></value></member>
</struct></value></param></params></methodResponse>`;
    expect(decodeResponse(xml)).toEqual({ Status: 'Success', Value: ['a & b <c> AB', 9007199254740991, true] });
  });

  it('maps faults to REMOTE_ERROR and garbage to PROTOCOL_ERROR', () => {
    const fault = (() => {
      try {
        decodeResponse(encodeFault(7, 'nope'));
      } catch (err) {
        return err;
      }
      return null;
    })();
    expect(isChunkvaultError(fault, 'REMOTE_ERROR') && fault.details['faultCode']).toBe(7);
    for (const bad of ['<html><body>502</body></html>', '<methodResponse><params>', '<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>', 'x < y']) {
      expect(() => decodeResponse(bad)).toThrow(expect.objectContaining({ code: 'PROTOCOL_ERROR' }) as Error);
    }
  });
});

describe('xen source URIs', () => {
  it('parses users, hosts, ports and options', () => {
    expect(parseXenSource('xen://root@10.0.0.1/web%20vm')).toMatchObject({ https: false, user: 'root', host: '10.0.0.1', port: 80, vm: 'web vm', names: 'device', transport: 'auto' });
    expect(parseXenSource('xens://admin@pool:8443/3f1c2d4e-0000-4000-8000-000000000000?ca=/etc/ca.pem&names=vdi&transport=http')).toMatchObject({
      https: true, port: 8443, caFile: '/etc/ca.pem', names: 'vdi', transport: 'http',
    });
  });

  it('refuses passwords in the URI, missing parts and unknown options', () => {
    for (const bad of ['xen://root:secret@h/vm', 'xen://h/vm', 'xen://root@h/', 'xen://root@h/a/b', 'xen://root@h/vm?tls=1', 'xen://root@h/vm?ca=x', 'xen://root@h/vm?names=x']) {
      expect(() => parseXenSource(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }) as Error);
    }
    try {
      parseXenSource('xen://root:secret@h/vm');
    } catch (err) {
      expect(JSON.stringify(err) + String(err)).not.toContain('secret');
    }
  });
});
