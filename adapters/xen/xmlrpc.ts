/**
 * A small XML-RPC codec, enough for XenAPI (which xapi has served on `POST /` since
 * its first release; JSON-RPC came later).
 *
 * Terms:
 * - value: string, int / i4 / i8 (JS number), double, boolean, base64 (Buffer), nil
 *   (null), array, struct (plain object). A `<value>` with text and no type tag is a
 *   string, as the XML-RPC spec says.
 * - call: `<methodCall>` with a method name and params; response: `<methodResponse>`
 *   with one param or a `<fault>` struct {faultCode, faultString}.
 *
 * The parser accepts only this vocabulary (no attributes, DTDs or CDATA); anything
 * else is PROTOCOL_ERROR, so a proxy's HTML error page never decodes as a value.
 */
import { ChunkvaultError } from '../../engine/errors.js';

export type XmlRpcValue = string | number | boolean | null | Buffer | XmlRpcValue[] | { [key: string]: XmlRpcValue };

interface XmlNode {
  readonly name: string;
  readonly children: XmlNode[];
  text: string;
}

function protocolError(reason: string): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `XML-RPC: ${reason}`, { details: { reason } });
}

const ENTITIES: Readonly<Record<string, string>> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

function unescapeXml(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (whole, body: string) => {
    if (body.startsWith('#x')) return String.fromCodePoint(Number.parseInt(body.slice(2), 16));
    if (body.startsWith('#')) return String.fromCodePoint(Number.parseInt(body.slice(1), 10));
    const named = ENTITIES[body];
    if (named === undefined) throw protocolError(`unknown entity ${whole}`);
    return named;
  });
}

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Parses the element tree (tags without attributes, text, `<?xml ...?>`). */
export function parseXml(xml: string): XmlNode {
  const root: XmlNode = { name: '#root', children: [], text: '' };
  const stack: XmlNode[] = [root];
  const token = /<\?[^>]*\?>|<!--[\s\S]*?-->|<(\/?)([A-Za-z][A-Za-z0-9_.:-]*)\s*(\/?)>|([^<]+)|(<)/g;
  for (let m = token.exec(xml); m !== null; m = token.exec(xml)) {
    const top = stack[stack.length - 1] as XmlNode;
    if (m[5] !== undefined) throw protocolError(`unexpected markup at offset ${m.index}`);
    if (m[4] !== undefined) top.text += unescapeXml(m[4]);
    else if (m[2] !== undefined && m[1] === '/') {
      if (top.name !== m[2]) throw protocolError(`</${m[2]}> closes <${top.name}>`);
      stack.pop();
    } else if (m[2] !== undefined) {
      const node: XmlNode = { name: m[2], children: [], text: '' };
      top.children.push(node);
      if (m[3] !== '/') stack.push(node);
    }
  }
  if (stack.length !== 1) throw protocolError(`<${(stack[stack.length - 1] as XmlNode).name}> is not closed`);
  const [doc] = root.children;
  if (!doc || root.children.length !== 1) throw protocolError('expected one document element');
  return doc;
}

function only(node: XmlNode, name?: string): XmlNode {
  const [child] = node.children;
  if (!child || node.children.length !== 1 || (name !== undefined && child.name !== name)) {
    throw protocolError(`<${node.name}> must hold exactly one ${name ? `<${name}>` : 'element'}`);
  }
  return child;
}

function childrenNamed(node: XmlNode, name: string): XmlNode[] {
  for (const c of node.children) if (c.name !== name) throw protocolError(`unexpected <${c.name}> in <${node.name}>`);
  return node.children;
}

function decodeNumber(text: string, integer: boolean): number {
  const n = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(n) || (integer && !Number.isSafeInteger(n))) throw protocolError(`bad number "${text}"`);
  return n;
}

function decodeStruct(node: XmlNode): { [key: string]: XmlRpcValue } {
  const out: { [key: string]: XmlRpcValue } = {};
  for (const member of childrenNamed(node, 'member')) {
    const name = member.children.find((c) => c.name === 'name');
    const value = member.children.find((c) => c.name === 'value');
    if (!name || !value || member.children.length !== 2) throw protocolError('a struct member needs <name> and <value>');
    out[name.text] = decodeValue(value);
  }
  return out;
}

/** Decodes one `<value>` element. */
export function decodeValue(value: XmlNode): XmlRpcValue {
  if (value.name !== 'value') throw protocolError(`expected <value>, got <${value.name}>`);
  if (value.children.length === 0) return value.text;
  const typed = only(value);
  switch (typed.name) {
    case 'string':
      return typed.text;
    case 'int':
    case 'i4':
    case 'i8':
      return decodeNumber(typed.text, true);
    case 'double':
      return decodeNumber(typed.text, false);
    case 'boolean':
      if (typed.text.trim() !== '0' && typed.text.trim() !== '1') throw protocolError(`bad boolean "${typed.text}"`);
      return typed.text.trim() === '1';
    case 'base64':
      return Buffer.from(typed.text.replace(/\s+/g, ''), 'base64');
    case 'nil':
      return null;
    case 'array':
      return childrenNamed(only(typed, 'data'), 'value').map(decodeValue);
    case 'struct':
      return decodeStruct(typed);
    default:
      throw protocolError(`unknown type <${typed.name}>`);
  }
}

/** Encodes one value as `<value>...</value>`. */
export function encodeValue(v: XmlRpcValue): string {
  if (v === null) return '<value><nil/></value>';
  if (typeof v === 'string') return `<value><string>${escapeXml(v)}</string></value>`;
  if (typeof v === 'boolean') return `<value><boolean>${v ? 1 : 0}</boolean></value>`;
  if (typeof v === 'number') return Number.isInteger(v) ? `<value><int>${v}</int></value>` : `<value><double>${v}</double></value>`;
  if (Buffer.isBuffer(v)) return `<value><base64>${v.toString('base64')}</base64></value>`;
  if (Array.isArray(v)) return `<value><array><data>${v.map(encodeValue).join('')}</data></array></value>`;
  const members = Object.entries(v).map(([k, x]) => `<member><name>${escapeXml(k)}</name>${encodeValue(x)}</member>`);
  return `<value><struct>${members.join('')}</struct></value>`;
}

const PROLOGUE = '<?xml version="1.0"?>\n';

export function encodeCall(method: string, params: readonly XmlRpcValue[]): string {
  const ps = params.map((p) => `<param>${encodeValue(p)}</param>`).join('');
  return `${PROLOGUE}<methodCall><methodName>${escapeXml(method)}</methodName><params>${ps}</params></methodCall>`;
}

export function encodeResponse(value: XmlRpcValue): string {
  return `${PROLOGUE}<methodResponse><params><param>${encodeValue(value)}</param></params></methodResponse>`;
}

export function encodeFault(code: number, message: string): string {
  return `${PROLOGUE}<methodResponse><fault>${encodeValue({ faultCode: code, faultString: message })}</fault></methodResponse>`;
}

export function decodeCall(xml: string): { method: string; params: XmlRpcValue[] } {
  const doc = parseXml(xml);
  if (doc.name !== 'methodCall') throw protocolError(`expected <methodCall>, got <${doc.name}>`);
  const name = doc.children.find((c) => c.name === 'methodName');
  if (!name) throw protocolError('<methodCall> without <methodName>');
  const params = doc.children.find((c) => c.name === 'params');
  return { method: name.text.trim(), params: params ? childrenNamed(params, 'param').map((p) => decodeValue(only(p, 'value'))) : [] };
}

/** A response's value; a `<fault>` is REMOTE_ERROR with `details: {faultCode, faultString}`. */
export function decodeResponse(xml: string): XmlRpcValue {
  const doc = parseXml(xml);
  if (doc.name !== 'methodResponse') throw protocolError(`expected <methodResponse>, got <${doc.name}>`);
  const body = only(doc);
  if (body.name === 'fault') {
    const fault = decodeValue(only(body, 'value')) as { faultCode?: unknown; faultString?: unknown };
    const faultString = String(fault.faultString ?? '');
    throw new ChunkvaultError('REMOTE_ERROR', `XML-RPC fault: ${faultString}`, {
      details: { faultCode: Number(fault.faultCode ?? 0), faultString },
    });
  }
  if (body.name !== 'params') throw protocolError(`unexpected <${body.name}> in <methodResponse>`);
  return decodeValue(only(only(body, 'param'), 'value'));
}
