import { describe, expect, it } from 'vitest';
import { isChunkvaultError } from '../engine/errors.js';
import { child, children, escapeXml, parseXml, textAt } from './_xml.js';

describe('vmware xml', () => {
  it('parses prefixes, xsi:type under any prefix, entities, CDATA and comments', () => {
    const doc = parseXml(
      '<?xml version="1.0"?><!-- c --><s:Envelope xmlns:s="x"><s:Body><R xmlns="urn:vim25"><returnval XMLSchema-instance:type="VirtualDisk" type="Task">a &amp; b &#x41;&#66;</returnval><v><![CDATA[<raw>]]></v><e/></R></s:Body></s:Envelope>',
    );
    expect(doc.name).toBe('Envelope');
    const r = child(child(doc, 'Body'), 'R');
    expect(child(r, 'returnval')?.type).toBe('VirtualDisk');
    expect(child(r, 'returnval')?.attrs['type']).toBe('Task');
    expect(textAt(r, 'returnval')).toBe('a & b AB');
    expect(textAt(r, 'v')).toBe('<raw>');
    expect(children(r, 'e')).toHaveLength(1);
  });

  it('escapes what it must', () => {
    expect(escapeXml(`<a b="c" d='e'>&`)).toBe('&lt;a b=&quot;c&quot; d=&apos;e&apos;&gt;&amp;');
    expect(textAt(parseXml(`<x><y>${escapeXml('<&>"\'')}</y></x>`), 'y')).toBe('<&>"\'');
  });

  for (const bad of ['', 'text only', '<a><b></a>', '<a>', '<a></a><b></b>', '<a>&bogus;</a>', '<a><!-- open</a>']) {
    it(`rejects malformed input ${JSON.stringify(bad)} with PROTOCOL_ERROR`, () => {
      let err: unknown;
      try {
        parseXml(bad);
      } catch (e) {
        err = e;
      }
      expect(isChunkvaultError(err, 'PROTOCOL_ERROR')).toBe(true);
    });
  }
});
