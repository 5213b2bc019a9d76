/**
 * NTLMv2 authentication messages (MS-NLMP) for WinRM's `Negotiate` HTTP scheme:
 * NEGOTIATE (type 1) -> CHALLENGE (type 2) -> AUTHENTICATE (type 3), authentication
 * only (no signing or sealing: use it over HTTPS, since WinRM refuses unencrypted
 * payloads on HTTP unless the host allows them).
 *
 * MD4 is written here because OpenSSL 3 moved it to the legacy provider, which node
 * does not load by default; HMAC-MD5 comes from node:crypto.
 *
 *   NTOWFv2     = HMAC_MD5(MD4(UTF16LE(password)), UTF16LE(UPPER(user) + domain))
 *   temp        = 01 01 00 00 | 0 x4 | time (8, FILETIME) | client challenge (8) | 0 x4 | target info | 0 x4
 *   NTProofStr  = HMAC_MD5(NTOWFv2, server challenge + temp)
 *   NT response = NTProofStr + temp;  LM response = 24 zero bytes (target info has a timestamp)
 */
import { createHmac, randomBytes } from 'node:crypto';
import { ChunkvaultError } from '../../engine/errors.js';

const SIGNATURE = Buffer.from('NTLMSSP\0', 'latin1');
/** NEGOTIATE_UNICODE | REQUEST_TARGET | NEGOTIATE_NTLM | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY | TARGET_INFO | 128 | 56 */
export const NTLM_FLAGS = (0x00000001 | 0x00000004 | 0x00000200 | 0x00008000 | 0x00080000 | 0x00800000 | 0x20000000 | 0x80000000) >>> 0;

function rotl(x: number, s: number): number {
  return ((x << s) | (x >>> (32 - s))) >>> 0;
}

/** MD4 (RFC 1320). */
export function md4(data: Uint8Array): Buffer {
  const bitLen = data.length * 8;
  const padded = Buffer.alloc(((data.length + 8) >> 6) * 64 + 64);
  padded.set(data);
  padded[data.length] = 0x80;
  padded.writeUInt32LE(bitLen >>> 0, padded.length - 8);
  padded.writeUInt32LE(Math.floor(bitLen / 2 ** 32) >>> 0, padded.length - 4);
  let [a, b, c, d] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];
  const X = new Array<number>(16);
  const F = (x: number, y: number, z: number): number => (x & y) | (~x & z);
  const G = (x: number, y: number, z: number): number => (x & y) | (x & z) | (y & z);
  const H = (x: number, y: number, z: number): number => x ^ y ^ z;
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) X[i] = padded.readUInt32LE(off + i * 4);
    const [aa, bb, cc, dd] = [a, b, c, d];
    for (const i of [0, 4, 8, 12]) {
      a = rotl((a + F(b, c, d) + X[i]!) >>> 0, 3);
      d = rotl((d + F(a, b, c) + X[i + 1]!) >>> 0, 7);
      c = rotl((c + F(d, a, b) + X[i + 2]!) >>> 0, 11);
      b = rotl((b + F(c, d, a) + X[i + 3]!) >>> 0, 19);
    }
    for (const i of [0, 1, 2, 3]) {
      a = rotl((a + G(b, c, d) + X[i]! + 0x5a827999) >>> 0, 3);
      d = rotl((d + G(a, b, c) + X[i + 4]! + 0x5a827999) >>> 0, 5);
      c = rotl((c + G(d, a, b) + X[i + 8]! + 0x5a827999) >>> 0, 9);
      b = rotl((b + G(c, d, a) + X[i + 12]! + 0x5a827999) >>> 0, 13);
    }
    for (const i of [0, 2, 1, 3]) {
      a = rotl((a + H(b, c, d) + X[i]! + 0x6ed9eba1) >>> 0, 3);
      d = rotl((d + H(a, b, c) + X[i + 8]! + 0x6ed9eba1) >>> 0, 9);
      c = rotl((c + H(d, a, b) + X[i + 4]! + 0x6ed9eba1) >>> 0, 11);
      b = rotl((b + H(c, d, a) + X[i + 12]! + 0x6ed9eba1) >>> 0, 15);
    }
    [a, b, c, d] = [(a + aa) >>> 0, (b + bb) >>> 0, (c + cc) >>> 0, (d + dd) >>> 0];
  }
  const out = Buffer.alloc(16);
  [a, b, c, d].forEach((v, i) => out.writeUInt32LE(v, i * 4));
  return out;
}

const hmacMd5 = (key: Uint8Array, ...parts: Uint8Array[]): Buffer => {
  const h = createHmac('md5', key);
  for (const p of parts) h.update(p);
  return h.digest();
};

export function ntowfv2(password: string, user: string, domain: string): Buffer {
  return hmacMd5(md4(Buffer.from(password, 'utf16le')), Buffer.from(user.toUpperCase() + domain, 'utf16le'));
}

/** The NTLMv2 response for a challenge: NTProofStr followed by the client blob. */
export function ntlmv2Response(key: Buffer, serverChallenge: Buffer, clientChallenge: Buffer, time: Buffer, targetInfo: Buffer): Buffer {
  const temp = Buffer.concat([Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]), time, clientChallenge, Buffer.alloc(4), targetInfo, Buffer.alloc(4)]);
  return Buffer.concat([hmacMd5(key, serverChallenge, temp), temp]);
}

/** Type 1, base64. */
export function negotiateMessage(): string {
  const m = Buffer.alloc(32);
  SIGNATURE.copy(m, 0);
  m.writeUInt32LE(1, 8);
  m.writeUInt32LE(NTLM_FLAGS, 12);
  return m.toString('base64');
}

export interface Challenge {
  readonly flags: number;
  readonly serverChallenge: Buffer;
  readonly targetInfo: Buffer;
}

function badChallenge(reason: string): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `NTLM challenge: ${reason}`, { details: { reason } });
}

/** Parses a type 2 message (base64). */
export function parseChallenge(b64: string): Challenge {
  const m = Buffer.from(b64, 'base64');
  if (m.length < 48 || !m.subarray(0, 8).equals(SIGNATURE) || m.readUInt32LE(8) !== 2) throw badChallenge('not an NTLM CHALLENGE message');
  const len = m.readUInt16LE(40);
  const at = m.readUInt32LE(44);
  if (at + len > m.length) throw badChallenge('target info beyond the message');
  return { flags: m.readUInt32LE(20), serverChallenge: Buffer.from(m.subarray(24, 32)), targetInfo: Buffer.from(m.subarray(at, at + len)) };
}

/** FILETIME now: 100 ns intervals since 1601-01-01, little-endian. */
function fileTime(): Buffer {
  const t = (BigInt(Date.now()) + 11_644_473_600_000n) * 10_000n;
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(t);
  return b;
}

/** Type 3, base64. `user` may be `DOMAIN\user` or `user@domain`. */
export function authenticateMessage(challenge: Challenge, account: string, password: string, workstation = ''): string {
  let [domain, user] = ['', account];
  if (account.includes('\\')) [domain, user] = account.split('\\', 2) as [string, string];
  else if (account.includes('@')) [user, domain] = account.split('@', 2) as [string, string];
  const nt = ntlmv2Response(ntowfv2(password, user, domain), challenge.serverChallenge, randomBytes(8), fileTime(), challenge.targetInfo);
  const fields = [Buffer.alloc(24), nt, Buffer.from(domain, 'utf16le'), Buffer.from(user, 'utf16le'), Buffer.from(workstation, 'utf16le'), Buffer.alloc(0)];
  const header = Buffer.alloc(64);
  SIGNATURE.copy(header, 0);
  header.writeUInt32LE(3, 8);
  let offset = header.length;
  // LM, NT, domain, user, workstation, session key: (len, maxlen, offset) at 12, 20, 28, 36, 44, 52.
  fields.forEach((f, i) => {
    header.writeUInt16LE(f.length, 12 + i * 8);
    header.writeUInt16LE(f.length, 14 + i * 8);
    header.writeUInt32LE(offset, 16 + i * 8);
    offset += f.length;
  });
  header.writeUInt32LE((challenge.flags & NTLM_FLAGS) >>> 0, 60);
  return Buffer.concat([header, ...fields]).toString('base64');
}

/** Reads an AUTHENTICATE message's user, domain and NT response (for simulators and tests). */
export function parseAuthenticate(b64: string): { user: string; domain: string; ntResponse: Buffer } {
  const m = Buffer.from(b64, 'base64');
  if (m.length < 64 || !m.subarray(0, 8).equals(SIGNATURE) || m.readUInt32LE(8) !== 3) throw new ChunkvaultError('PROTOCOL_ERROR', 'not an NTLM AUTHENTICATE message');
  const field = (i: number): Buffer => m.subarray(m.readUInt32LE(16 + i * 8), m.readUInt32LE(16 + i * 8) + m.readUInt16LE(12 + i * 8));
  return { ntResponse: Buffer.from(field(1)), domain: field(2).toString('utf16le'), user: field(3).toString('utf16le') };
}
