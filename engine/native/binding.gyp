# chunkvault's native hot path (chunkvault_native.c). Built by `npm ci` / `npm install`
# (package.json "install"). LZ4 and XXH64 come from the liblz4 that the `lz4` package
# bundles, named by a path relative to this folder (gyp's make rules need one);
# SHA-256 from the OpenSSL that Node links and exports.
{
  'variables': {
    'lz4_lib': '<!(node -p "const p = require(\'path\'); p.relative(\'.\', p.join(p.dirname(require.resolve(\'lz4/package.json\')), \'deps\', \'lz4\', \'lib\'))")',
  },
  'targets': [
    {
      'target_name': 'chunkvault_native',
      'sources': [
        'chunkvault_native.c',
        '<(lz4_lib)/lz4.c',
        '<(lz4_lib)/xxhash.c',
      ],
      'include_dirs': ['<(lz4_lib)'],
      'cflags': ['-O3'],
      'defines': ['XXH_NAMESPACE=CHUNKVAULT_'],
    },
  ],
}
