import { describe, expect, it } from 'vitest';
import { authenticateMessage, md4, negotiateMessage, ntlmv2Response, ntowfv2, parseAuthenticate, parseChallenge } from './ntlm.js';

describe('hyperv NTLM', () => {
  it('MD4 matches RFC 1320 test vectors', () => {
    expect(md4(Buffer.from('')).toString('hex')).toBe('31d6cfe0d16ae931b73c59d7e0c089c0');
    expect(md4(Buffer.from('abc')).toString('hex')).toBe('a448017aaf21d8525fc10ae87aa6729d');
    expect(md4(Buffer.from('1234567890'.repeat(8))).toString('hex')).toBe('e33b4ddc9c38f2199c3e7b164fcc0536');
  });

  it('NTOWFv1, NTOWFv2 and NTProofStr match MS-NLMP 4.2.2 / 4.2.4', () => {
    expect(md4(Buffer.from('Password', 'utf16le')).toString('hex')).toBe('a4f49c406510bdcab6824ee7c30fd852');
    const key = ntowfv2('Password', 'User', 'Domain');
    expect(key.toString('hex')).toBe('0c868a403bfd7a93a3001ef22ef02e3f');
    const targetInfo = Buffer.from('02000c0044006f006d00610069006e0001000c0053006500720076006500720000000000', 'hex');
    const nt = ntlmv2Response(key, Buffer.from('0123456789abcdef', 'hex'), Buffer.alloc(8, 0xaa), Buffer.alloc(8), targetInfo);
    expect(nt.subarray(0, 16).toString('hex')).toBe('68cd0ab851e51c96aabc927bebef6a1c');
  });

  it('builds messages a server can read back', () => {
    expect(Buffer.from(negotiateMessage(), 'base64').subarray(0, 12).toString('hex')).toBe('4e544c4d53535000' + '01000000');
    const ti = Buffer.from('0000000000', 'hex').subarray(0, 4);
    const type2 = Buffer.alloc(48 + ti.length);
    Buffer.from('NTLMSSP\0', 'latin1').copy(type2);
    type2.writeUInt32LE(2, 8);
    Buffer.from('0123456789abcdef', 'hex').copy(type2, 24);
    type2.writeUInt16LE(ti.length, 40);
    type2.writeUInt32LE(48, 44);
    const ch = parseChallenge(type2.toString('base64'));
    const auth = parseAuthenticate(authenticateMessage(ch, 'CORP\\backup', 'pw'));
    expect([auth.user, auth.domain]).toEqual(['backup', 'CORP']);
    const temp = auth.ntResponse.subarray(16);
    expect(ntlmv2Response(ntowfv2('pw', 'backup', 'CORP'), ch.serverChallenge, temp.subarray(16, 24), temp.subarray(8, 16), ti).equals(auth.ntResponse)).toBe(true);
    expect(() => parseChallenge('AAAA')).toThrow(expect.objectContaining({ code: 'PROTOCOL_ERROR' }));
  });
});
