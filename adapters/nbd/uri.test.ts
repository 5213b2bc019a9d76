import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatNbdUri, parseNbdUri } from './uri.js';

const PIN = 'ab'.repeat(32);

describe('parseNbdUri', () => {
  it('parses TCP URIs as qemu and nbdinfo write them', () => {
    expect(parseNbdUri('nbd://example.com/disk')).toEqual({
      address: { transport: 'tcp', host: 'example.com', port: 10809 },
      exportName: 'disk',
      tls: null,
    });
    expect(parseNbdUri('nbd://127.0.0.1:10810')).toMatchObject({
      address: { transport: 'tcp', host: '127.0.0.1', port: 10810 },
      exportName: '',
    });
    expect(parseNbdUri('nbd://[::1]:7000/a/b%20c')).toMatchObject({
      address: { transport: 'tcp', host: '::1', port: 7000 },
      exportName: 'a/b c',
    });
    expect(parseNbdUri('nbd://h/')).toMatchObject({ exportName: '' });
    expect(parseNbdUri('nbd://h/./a/../b')).toMatchObject({ exportName: './a/../b' });
    expect(parseNbdUri('nbd://h/%2e')).toMatchObject({ exportName: '.' });
  });

  it('parses unix URIs, keeping + in socket paths', () => {
    expect(parseNbdUri('nbd+unix:///disk?socket=/run/a+b.sock')).toEqual({
      address: { transport: 'unix', path: '/run/a+b.sock' },
      exportName: 'disk',
      tls: null,
    });
    expect(parseNbdUri('nbd+unix://?socket=%2Ftmp%2Fx.sock')).toMatchObject({
      address: { transport: 'unix', path: '/tmp/x.sock' },
      exportName: '',
    });
  });

  it('parses TLS URIs and their options', () => {
    expect(parseNbdUri(`nbds://10.0.0.1/vdi?tls-ca=/etc/ca.pem&tls-hostname=xen1`)).toEqual({
      address: { transport: 'tcp', host: '10.0.0.1', port: 10809 },
      exportName: 'vdi',
      tls: { caFile: '/etc/ca.pem', hostname: 'xen1' },
    });
    const colons = PIN.toUpperCase().replace(/(..)(?!$)/g, '$1:');
    expect(parseNbdUri(`nbds+unix:///d?socket=/s&tls-pin=sha256:${colons}`)).toEqual({
      address: { transport: 'unix', path: '/s' },
      exportName: 'd',
      tls: { pinSha256: PIN },
    });
    expect(parseNbdUri('nbds://h/x').tls).toEqual({});
  });

  it.each([
    ['', 'empty'],
    ['disk.img', 'not a URI'],
    ['http://h/x', 'scheme'],
    ['nbd:///x', 'host'],
    ['nbd://h:0/x', 'port'],
    ['nbd://h:70000/x', 'port'],
    ['nbd://user@h/x', 'user info'],
    ['nbd://h/x#frag', 'fragment'],
    ['nbd://h/x?tls-ca=/ca.pem', 'TLS option without TLS'],
    ['nbd://h/x?socket=/s', 'socket on TCP'],
    ['nbd+unix:///x', 'missing socket'],
    ['nbd+unix://h/x?socket=/s', 'host on unix'],
    ['nbds://h/x?tls-certificates=/d', 'unknown key'],
    ['nbds://h/x?tls-ca=/a&tls-ca=/b', 'duplicate'],
    ['nbds://h/x?tls-pin=md5:00', 'bad pin'],
    [`nbds://h/x?tls-pin=sha256:${PIN}00`, 'long pin'],
    ['nbds://h/x?tls-ca=', 'empty option'],
    ['nbd://h/%E0%A4%A', 'bad percent-encoding'],
    [' nbd://h/x', 'padded'],
  ])('rejects %j (%s) with INVALID_ARGUMENT', (uri) => {
    expect(() => parseNbdUri(uri)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('formats what it parses (without TLS options)', () => {
    expect(formatNbdUri(parseNbdUri('nbd://h:10809/disk'))).toBe('nbd://h/disk');
    expect(formatNbdUri(parseNbdUri('nbds://[::1]:99/x?tls-ca=/ca'))).toBe('nbds://[::1]:99/x');
    expect(formatNbdUri(parseNbdUri('nbd+unix:///d?socket=/tmp/s.sock'))).toBe('nbd+unix:///d?socket=%2Ftmp%2Fs.sock');
  });

  it('round-trips export names, hosts and ports through format and parse', () => {
    const host = fc.oneof(fc.constant('127.0.0.1'), fc.constant('::1'), fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/));
    fc.assert(
      fc.property(host, fc.integer({ min: 1, max: 65535 }), fc.oneof(fc.string({ maxLength: 30 }), fc.constantFrom('.', '..', 'a/./b', '/x', 'a?b#c')), fc.boolean(), (h, port, exportName, tls) => {
        const target = { address: { transport: 'tcp' as const, host: h, port }, exportName, tls: tls ? {} : null };
        expect(parseNbdUri(formatNbdUri(target))).toEqual(target);
      }),
      { numRuns: 500 },
    );
  });
});
