/**
 * The small XML subset the SOAP front-ends speak (vSphere, WS-Management): elements,
 * attributes, text, CDATA, comments and the XML declaration, parsed into a plain tree.
 *
 * Terms:
 * - element: `{name, qname, type, attrs, children, text}`. `qname` is the tag as written;
 *   `name` drops its prefix (peers choose prefixes freely, so callers match local names).
 *   `type` is the `xsi:type` value without its prefix (vim25 marks polymorphic values with
 *   it; Go's encoder names that prefix `XMLSchema-instance`), or null.
 * - attrs: every attribute under its written name, and prefixed ones also under their
 *   local name unless an unprefixed attribute has that name (`type="Task"` beside
 *   `xsi:type="..."` keeps `attrs.type === 'Task'`).
 * No DTDs and no entities beyond the five predefined ones and character references:
 * anything else is PROTOCOL_ERROR with `details.reason`, never a guess.
 */
import { ChunkvaultError } from '../engine/errors.js';

export interface XmlElement {
  /** Local name (prefix removed). */
  readonly name: string;
  readonly qname: string;
  /** The xsi:type value without its prefix, or null. */
  readonly type: string | null;
  readonly attrs: Readonly<Record<string, string>>;
  readonly children: XmlElement[];
  text: string;
}

const ENTITIES: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const ESCAPES: Record<string, string> = { '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' };

function bad(reason: string, offset: number): ChunkvaultError {
  return new ChunkvaultError('PROTOCOL_ERROR', `malformed XML: ${reason}`, { details: { reason, offset } });
}

/** Decodes the predefined entities and character references. */
export function unescapeXml(s: string, at = 0): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-z]+);/g, (_m, e: string) => {
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith('#')) return String.fromCodePoint(parseInt(e.slice(1), 10));
    const v = ENTITIES[e];
    if (v === undefined) throw bad(`unknown entity &${e};`, at);
    return v;
  });
}

/** Escapes text or an attribute value. */
export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ESCAPES[c] as string);
}

export function localName(qname: string): string {
  const i = qname.indexOf(':');
  return i < 0 ? qname : qname.slice(i + 1);
}

const ATTR_RE = /([^\s=/>]+)\s*=\s*("([^"]*)"|'([^']*)')/g;

function parseTag(body: string, at: number): XmlElement {
  const m = /^([^\s/>]+)/.exec(body);
  if (!m) throw bad('element without a name', at);
  const attrs: Record<string, string> = {};
  const prefixed: [string, string][] = [];
  let type: string | null = null;
  for (const a of body.slice(m[1]!.length).matchAll(ATTR_RE)) {
    const value = unescapeXml(a[3] ?? a[4] ?? '', at);
    attrs[a[1]!] = value;
    if (!a[1]!.includes(':')) continue;
    prefixed.push([localName(a[1]!), value]);
    if (localName(a[1]!) === 'type') type = localName(value);
  }
  for (const [name, value] of prefixed) if (!(name in attrs)) attrs[name] = value;
  return { name: localName(m[1]!), qname: m[1]!, type, attrs, children: [], text: '' };
}

/** Parses a document and returns its root element. */
export function parseXml(xml: string): XmlElement {
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  let i = 0;
  while (i < xml.length) {
    const lt = xml.indexOf('<', i);
    const text = xml.slice(i, lt < 0 ? xml.length : lt);
    if (stack.length > 0 && text !== '') stack[stack.length - 1]!.text += unescapeXml(text, i);
    if (lt < 0) break;
    const skipped = skipMarkup(xml, lt, stack[stack.length - 1]);
    if (skipped !== null) {
      i = skipped;
      continue;
    }
    const gt = xml.indexOf('>', lt);
    if (gt < 0) throw bad('unterminated tag', lt);
    i = gt + 1;
    const raw = xml.slice(lt + 1, gt);
    if (raw.startsWith('/')) {
      const open = stack.pop();
      if (!open || open.qname !== raw.slice(1).trim()) throw bad(`unexpected </${raw.slice(1).trim()}>`, lt);
      continue;
    }
    const selfClosing = raw.endsWith('/');
    const el = parseTag(selfClosing ? raw.slice(0, -1) : raw, lt);
    if (stack.length > 0) stack[stack.length - 1]!.children.push(el);
    else if (root === null) root = el;
    else throw bad('more than one root element', lt);
    if (!selfClosing) stack.push(el);
  }
  if (root === null) throw bad('no root element', 0);
  if (stack.length > 0) throw bad(`unclosed <${stack[stack.length - 1]!.qname}>`, xml.length);
  return root;
}

/** Comments, CDATA (appended to `into`), declarations: the index after them, or null for a tag. */
function skipMarkup(xml: string, lt: number, into: XmlElement | undefined): number | null {
  if (xml.startsWith('<!--', lt)) return endOf(xml, '-->', lt);
  if (xml.startsWith('<![CDATA[', lt)) {
    const end = endOf(xml, ']]>', lt);
    if (into) into.text += xml.slice(lt + 9, end - 3);
    return end;
  }
  if (xml.startsWith('<?', lt)) return endOf(xml, '?>', lt);
  if (xml.startsWith('<!', lt)) throw bad('DTDs are not accepted', lt);
  return null;
}

function endOf(xml: string, marker: string, from: number): number {
  const at = xml.indexOf(marker, from);
  if (at < 0) throw bad(`unterminated markup (expected "${marker}")`, from);
  return at + marker.length;
}

/** The first child with local name `name`. */
export function child(el: XmlElement | undefined, name: string): XmlElement | undefined {
  return el?.children.find((c) => c.name === name);
}

/** Every child with local name `name`. */
export function children(el: XmlElement | undefined, name: string): XmlElement[] {
  return el ? el.children.filter((c) => c.name === name) : [];
}

/** The first descendant (depth first) with local name `name`. */
export function find(el: XmlElement | undefined, name: string): XmlElement | undefined {
  if (!el) return undefined;
  for (const c of el.children) {
    if (c.name === name) return c;
    const deeper = find(c, name);
    if (deeper) return deeper;
  }
  return undefined;
}

/** The text of the descendant at `path` (local names separated by '/'), or undefined. */
export function textAt(el: XmlElement | undefined, path: string): string | undefined {
  let at = el;
  for (const part of path.split('/')) at = child(at, part);
  return at?.text;
}
