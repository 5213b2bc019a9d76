import { describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../../engine/errors.js';
import { isVmwareSource, parseVmwareSource } from './source.js';

describe('vmware source URIs', () => {
  it('parses a full URI', () => {
    const s = parseVmwareSource('vmware://admin%40vsphere.local@vc.example:8443/DC1/vm/web%2001?transport=san,http&san=/mnt/ds&quiesce=1&thumbprint=AB:CD&dc=DC1');
    expect(s).toMatchObject({ user: 'admin@vsphere.local', host: 'vc.example', port: 8443, https: true, vm: 'DC1/vm/web 01', transports: ['san', 'http'], sanDir: '/mnt/ds', quiesce: true, thumbprint: 'AB:CD', datacenter: 'DC1', insecure: false });
    expect(isVmwareSource('vmware://u@h/vm')).toBe(true);
    expect(isVmwareSource('xen://u@h/vm')).toBe(false);
  });

  it('defaults: https on 443, http transport', () => {
    expect(parseVmwareSource('vmware://u@h/vm-42')).toMatchObject({ port: 443, https: true, transports: ['http'], quiesce: false });
    expect(parseVmwareSource('vmware://u@h/vm?http=1')).toMatchObject({ port: 80, https: false });
  });

  const bad: [string, string][] = [
    ['vmware://u:secret@h/vm', 'password'],
    ['vmware://h/vm', 'user'],
    ['vmware://u@h/', 'VM'],
    ['vmware://u@h/vm?foo=1', 'unknown option'],
    ['vmware://u@h/vm?transport=hotplug', 'transport'],
    ['vmware://u@h/vm?transport=san', 'san=DIR'],
    ['vmware://u@h/vm?transport=nbd', 'nbd=URI'],
    ['not a uri', 'URI'],
  ];
  for (const [uri, reason] of bad) {
    it(`refuses ${uri}`, () => {
      let err: unknown;
      try {
        parseVmwareSource(uri);
      } catch (e) {
        err = e;
      }
      expect(isChunkvaultError(err, 'INVALID_ARGUMENT')).toBe(true);
      expect(String((err as Error).message)).toContain(reason);
    });
  }
});
