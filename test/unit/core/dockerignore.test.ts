// .dockerignore matching against Docker's documented behaviour and the cases
// moby/patternmatcher pins down, plus Go's filepath.Match for COPY globs.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import { cleanPath, compileGlob, parseDockerignore } from '../../../src/core/dockerignore.js';

const excluded = (patterns: string[], file: string): boolean =>
  parseDockerignore(patterns.join('\n')).excluded(file);

describe('.dockerignore file format (ignorefile.ReadAll)', () => {
  test('comments, blank lines, whitespace, leading / and ./ and .. cleaned', () => {
    const m = parseDockerignore(
      [
        '# a comment',
        '',
        '   ',
        '  test1  ',
        '/test2',
        '/a/file/here',
        './dot/./slash/',
        'x/../y',
        '! /inverted/abs/path',
        '   # not a comment: leading spaces make it a pattern',
      ].join('\r\n'),
    );
    const paths = [
      'test1',
      'test2',
      'a/file/here',
      'dot/slash/f',
      'y',
      'x',
      'inverted/abs/path',
      '# not a comment: leading spaces make it a pattern',
      '# a comment',
      '',
    ];
    assert.deepEqual(
      paths.map((p) => m.excluded(p)),
      [true, true, true, true, true, false, false, true, false, false],
    );
    // `! /inverted/abs/path` is an exception for inverted/abs/path.
    const inverted = parseDockerignore('inverted\n! /inverted/abs/path');
    assert.equal(inverted.excluded('inverted/abs/path'), false);
    assert.equal(inverted.excluded('inverted/other'), true);
  });

  test('a UTF-8 BOM is ignored', () => {
    const m = parseDockerignore('\uFEFFnode_modules\n');
    assert.equal(m.excluded('node_modules'), true);
    assert.equal(m.excluded('\uFEFFnode_modules'), false);
  });

  for (const [text, line] of [
    ['ok\n!', 2],
    ['[', 1],
    ['a\n\nab[c', 3],
    ['trailing\\', 1],
    ['[]a]', 1],
    ['[x-]', 1],
  ] as const) {
    test(`malformed ${JSON.stringify(text)} fails naming line ${line}`, () =>
      assert.throws(
        () => parseDockerignore(text),
        (err: unknown) =>
          isVesselError(err, 'invalid_argument') &&
          err.message.startsWith(`.dockerignore line ${line}:`),
      ));
  }
});

describe('Docker documentation examples', () => {
  // docs.docker.com/build/concepts/context/#dockerignore-files
  const m = parseDockerignore('# comment\n*/temp*\n*/*/temp*\ntemp?\n');
  const cases: [string, boolean][] = [
    ['somedir/temporary.txt', true],
    ['somedir/temp', true],
    ['temp.txt', false],
    ['somedir/subdir/temporary.txt', true],
    ['a/b/c/temp', false],
    ['tempa', true],
    ['tempab', false],
    ['temp', false],
  ];
  for (const [file, want] of cases)
    test(`${file} → ${want}`, () => assert.equal(m.excluded(file), want));

  test('**/*.go excludes Go files in every directory, including the root', () => {
    const go = parseDockerignore('**/*.go');
    assert.equal(go.excluded('main.go'), true);
    assert.equal(go.excluded('a/b/c.go'), true);
    assert.equal(go.excluded('a/b/c.gox'), false);
  });

  test('*.md / !README*.md / README-secret.md: last match wins', () => {
    const a = parseDockerignore('*.md\n!README*.md\nREADME-secret.md');
    assert.deepEqual(
      ['a.md', 'README.md', 'README-x.md', 'README-secret.md', 'sub/a.md'].map((f) =>
        a.excluded(f),
      ),
      [true, false, false, true, false],
    );
    const b = parseDockerignore('*.md\nREADME-secret.md\n!README*.md');
    assert.deepEqual(
      ['a.md', 'README.md', 'README-secret.md'].map((f) => b.excluded(f)),
      [true, false, false],
    );
  });

  test('a matched directory excludes its contents; an exception re-includes one file', () => {
    const m2 = parseDockerignore('docs\n!docs/README.md');
    assert.equal(m2.excluded('docs'), true);
    assert.equal(m2.excluded('docs/a/b.txt'), true);
    assert.equal(m2.excluded('docs/README.md'), false);
    assert.equal(m2.excluded('docsx'), false);
  });
});

describe('patternmatcher cases', () => {
  // [pattern, path, match (including through a parent directory)]
  const cases: [string, string, boolean][] = [
    ['**', 'file', true],
    ['**', 'dir/file', true],
    ['**/', 'file', true],
    ['**/**', 'dir/file', true],
    ['dir/**', 'dir/file', true],
    ['dir/**', 'dir/dir2/file', true],
    ['dir/**', 'dir', false],
    ['**/dir', 'dir', true],
    ['**/dir', 'dir/file', true],
    ['**/dir', 'a/b/dir', true],
    ['**/dir', 'a/xdir', false],
    ['**/dir2/*', 'dir/dir2/file', true],
    ['**/dir2/**', 'dir/dir2/dir3/file', true],
    ['**file', 'file', true],
    ['**file', 'dir/dir/file', true],
    ['**file', 'dir/xfile', true], // Docker's suffix fast path: no `/` before `file` needed
    ['**/file', 'dir/dir/file', true],
    ['**/file*', 'dir/dir/file.txt', true],
    ['**/file*txt', 'dir/dir/file.txt', true],
    ['**/**/*.txt', 'dir/dir/file.txt', true],
    ['**/**/*.txt2', 'dir/dir/file.txt', false],
    ['**/*.txt', 'file.txt', true],
    ['a**/*.txt', 'a/file.txt', true],
    ['a**/*.txt', 'a/dir/dir/file.txt', true],
    ['a/*.txt', 'a/dir/file.txt', false],
    ['a/*.txt', 'a/file.txt', true],
    ['a/*.txt**', 'a/file.txt', true],
    ['a[b-d]e', 'ae', false],
    ['a[b-d]e', 'ace', true],
    ['a[^b-d]e', 'aze', true],
    ['.*', '.foo', true],
    ['.*', 'foo', false],
    ['abc.def', 'abcdef', false],
    ['abc.def', 'abc.def', true],
    ['abc?def', 'abcZdef', true],
    ['abc?def', 'abcdef', false],
    ['abc/**', 'abc', false],
    ['abc/**', 'abc/def/ghi', true],
    ['**/.foo', '.foo', true],
    ['**/.foo', 'bar.foo', false],
    ['a(b)c/def', 'a(b)c/def', true],
    ['a.|)$(}+{bc', 'a.|)$(}+{bc', true],
    ['dist/*.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', true],
    ['a\\\\', 'a\\', true],
    ['a\\*b', 'a*b', true],
    ['a\\*b', 'axb', false],
    ['*', 'fileutils.go', true],
    ['*.go', 'fileutils.go', true],
    ['*.go', 'sub/fileutils.go', false],
    ['*', 'a/b', true], // through the parent "a"
    ['a?b', 'a☺b', true],
  ];
  for (const [pattern, file, want] of cases) {
    test(`${pattern} ~ ${file} → ${want}`, () => assert.equal(excluded([pattern], file), want));
  }

  const multi: [string[], string, boolean][] = [
    [['**', '!util/docker/web'], 'util/docker/web/foo', false],
    [['**', '!util/docker/web', 'util/docker/web/foo'], 'util/docker/web/foo', true],
    [['**', '!dist/*.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', false],
    [['!fileutils.go', '*.go'], 'fileutils.go', true],
    [['*.go', '!fileutils.go'], 'fileutils.go', false],
    [['docs/*', '!docs/README.md'], 'docs/README.md', false],
  ];
  for (const [patterns, file, want] of multi) {
    test(`${patterns.join(' ')} ~ ${file} → ${want}`, () =>
      assert.equal(excluded(patterns, file), want));
  }

  test('the context root itself is never excluded', () => {
    assert.equal(excluded(['*', '**'], '.'), false);
    assert.equal(excluded(['*'], ''), false);
  });
});

describe('directory walking (ignored(dir, true) and skipDir)', () => {
  test('an excluded directory without exceptions below it is skipped whole', () => {
    const m = parseDockerignore('node_modules\n.git\n!keep/this');
    assert.equal(m.ignored('node_modules', true), true);
    assert.equal(m.ignored('node_modules/x.js', false), true);
    assert.equal(m.ignored('src', true), false);
  });

  test('an exception under an excluded directory makes the walker descend', () => {
    const m = parseDockerignore('docs\n!docs/keep/**');
    assert.equal(m.excluded('docs'), true);
    assert.equal(m.ignored('docs', true), false);
    assert.equal(m.ignored('docs/keep', true), false);
    assert.equal(m.ignored('docs/other.txt', false), true);
    assert.equal(m.ignored('docs/keep/a.txt', false), false);
  });

  test('a wildcard exception means no excluded directory can be skipped (BuildKit)', () => {
    const m = parseDockerignore('*\n!**/*.py');
    assert.equal(m.excluded('sub'), true);
    assert.equal(m.skipDir('sub'), false);
    assert.equal(m.ignored('sub/deep/x.py', false), false);
    assert.equal(m.ignored('sub/deep/x.txt', false), true);
  });
});

describe('Go filepath.Match (compileGlob)', () => {
  // Go's own match tests.
  const cases: [string, string, boolean][] = [
    ['abc', 'abc', true],
    ['*', 'abc', true],
    ['*c', 'abc', true],
    ['a*', 'a', true],
    ['a*', 'abc', true],
    ['a*', 'ab/c', false],
    ['a*/b', 'abc/b', true],
    ['a*/b', 'a/c/b', false],
    ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
    ['a*b?c*x', 'abxbbxdbxebxczzx', true],
    ['a*b?c*x', 'abxbbxdbxebxczzy', false],
    ['ab[c]', 'abc', true],
    ['ab[b-d]', 'abc', true],
    ['ab[e-g]', 'abc', false],
    ['ab[^c]', 'abc', false],
    ['ab[^b-d]', 'abc', false],
    ['ab[^e-g]', 'abc', true],
    ['a\\*b', 'a*b', true],
    ['a\\*b', 'ab', false],
    ['a?b', 'a☺b', true],
    ['a[^a]b', 'a☺b', true],
    ['a???b', 'a☺b', false],
    ['[a-ζ]*', 'α', true],
    ['*[a-ζ]', 'A', false],
    ['a?b', 'a/b', false],
    ['a*b', 'a/b', false],
    ['[\\]a]', ']', true],
    ['[\\-]', '-', true],
    ['[x\\-]', 'x', true],
    ['[x\\-]', '-', true],
    ['[x\\-]', 'z', false],
    ['[\\-x]', '-', true],
    ['[\\-x]', 'a', false],
    ['*x', 'xxx', true],
    ['.*', '.hidden', true],
  ];
  for (const [pattern, name, want] of cases) {
    test(`Match(${pattern}, ${name}) = ${want}`, () =>
      assert.equal(compileGlob(pattern)(name), want));
  }
  for (const pattern of ['[]a]', '[-]', '[x-]', '[-x]', '\\', '[a-b-c]', '[', '[^', '[^bc', 'a[']) {
    test(`ErrBadPattern: ${pattern}`, () =>
      assert.throws(
        () => compileGlob(pattern),
        (err: unknown) => isVesselError(err, 'invalid_argument'),
      ));
  }
});

describe('cleanPath (Go filepath.Clean)', () => {
  const cases: [string, string][] = [
    ['', '.'],
    ['.', '.'],
    ['a/b/', 'a/b'],
    ['./a//b/./c', 'a/b/c'],
    ['a/../..', '..'],
    ['../a/../b', '../b'],
    ['/..', '/'],
    ['/a/../../b', '/b'],
    ['/', '/'],
  ];
  for (const [input, want] of cases)
    test(`${JSON.stringify(input)} → ${want}`, () => assert.equal(cleanPath(input), want));
});
