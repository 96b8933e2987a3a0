// `.dockerignore` semantics (moby/patternmatcher, as BuildKit applies them) and
// Go's `filepath.Match`, which COPY source globs use. Patterns come from the
// user's build context, so every malformed one is a clear `invalid_argument`.
import path from 'node:path';
import { VesselError } from './errors.js';

/** Which paths of a build context a `.dockerignore` excludes. Paths are relative, `/`-separated. */
export interface Matcher {
  /**
   * The predicate a directory walker needs. For a file (`isDir` false): true
   * when it is excluded. For a directory: true when the walker may skip it
   * whole, i.e. it is excluded and no `!` exception could re-include anything
   * below it; an excluded directory that may hold re-included paths gives
   * false, so the walker descends (and checks each path inside).
   */
  ignored(relPath: string, isDir: boolean): boolean;
  /**
   * Docker's match itself (patternmatcher's `MatchesOrParentMatches`): the last
   * pattern matching `relPath` or one of its parent directories is not a `!`
   * exception. For a directory this says whether its own entry is excluded.
   */
  excluded(relPath: string): boolean;
  /**
   * For a directory that `excluded` says is excluded: true when the walker
   * can skip it without reading it (BuildKit's rule: no exception has
   * wildcards, and none starts with `relPath/`). It does not check `excluded`
   * again: call it only after `excluded(relPath)` gave true, or use
   * `ignored(relPath, true)`, which does both.
   */
  skipDir(relPath: string): boolean;
}

/** Go's `path/filepath.Clean` for `/`-separated paths: `normalize` without a trailing `/`. */
export function cleanPath(p: string): string {
  const normal = path.posix.normalize(p);
  return normal.length > 1 && normal.endsWith('/') ? normal.slice(0, -1) : normal;
}

/** True when `s` holds a `filepath.Match` metacharacter (`*`, `?`, `[` or `\`). */
export function hasGlobMeta(s: string): boolean {
  return /[*?[\\]/.test(s);
}

class BadPattern extends Error {}

const REGEX_SYNTAX = /[\\^$.*+?()[\]{}|/]/;
const CLASS_SYNTAX = /[\\\][^-]/;

function literal(ch: string): string {
  return REGEX_SYNTAX.test(ch) ? `\\${ch}` : ch;
}

function classChar(ch: string): string {
  return CLASS_SYNTAX.test(ch) ? `\\${ch}` : ch;
}

/**
 * Translate the character class starting after `[` at `chars[start]` the way
 * `filepath.Match` reads it; returns the JS class and the index after `]`.
 */
function translateClass(chars: readonly string[], start: number): [string, number] {
  let i = start;
  const negated = chars[i] === '^';
  if (negated) i += 1;
  const items: string[] = [];
  let ranges = 0;
  const getEsc = (): string => {
    let ch = chars[i];
    if (ch === undefined || ch === '-' || ch === ']') throw new BadPattern();
    if (ch === '\\') {
      i += 1;
      ch = chars[i];
      if (ch === undefined) throw new BadPattern();
    }
    i += 1;
    if (i >= chars.length) throw new BadPattern();
    return ch;
  };
  for (;;) {
    if (chars[i] === ']' && ranges > 0) {
      i += 1;
      break;
    }
    const lo = getEsc();
    let hi = lo;
    if (chars[i] === '-') {
      i += 1;
      hi = getEsc();
    }
    ranges += 1;
    const loCode = lo.codePointAt(0) ?? 0;
    const hiCode = hi.codePointAt(0) ?? 0;
    if (loCode === hiCode) items.push(classChar(lo));
    else if (loCode < hiCode) items.push(`${classChar(lo)}-${classChar(hi)}`);
    // lo > hi never matches, as in Go.
  }
  if (items.length === 0) return [negated ? '[^]' : '(?!)', i];
  return [`[${negated ? '^' : ''}${items.join('')}]`, i];
}

/** `filepath.Match` syntax as an anchored RegExp; throws BadPattern. */
function goPatternRegExp(pattern: string): RegExp {
  const chars = Array.from(pattern);
  let src = '';
  for (let i = 0; i < chars.length;) {
    const ch = chars[i]!;
    i += 1;
    if (ch === '*') src += '[^/]*';
    else if (ch === '?') src += '[^/]';
    else if (ch === '[') {
      const [cls, next] = translateClass(chars, i);
      src += cls;
      i = next;
    } else if (ch === '\\') {
      const next = chars[i];
      if (next === undefined) throw new BadPattern();
      src += literal(next);
      i += 1;
    } else src += literal(ch);
  }
  return new RegExp(`^${src}$`, 'u');
}

/**
 * Compile a Go `filepath.Match` pattern (`*`, `?`, `[...]` with `^` and
 * ranges, `\` escapes; nothing matches `/` except a class). Throws
 * `invalid_argument` for a malformed pattern, as Go returns `ErrBadPattern`.
 */
export function compileGlob(pattern: string): (name: string) => boolean {
  try {
    const re = goPatternRegExp(pattern);
    return (name) => re.test(name);
  } catch (err) {
    throw new VesselError(
      'invalid_argument',
      `syntax error in pattern ${JSON.stringify(pattern)}`,
      {
        cause: err,
      },
    );
  }
}

type MatchType = 'exact' | 'prefix' | 'suffix' | 'regexp';

interface Pattern {
  readonly cleaned: string;
  readonly exclusion: boolean;
  readonly type: MatchType;
  readonly re: RegExp | undefined;
}

/**
 * moby/patternmatcher's `Pattern.compile`: the same match types and regexp.
 * Throws BadPattern where Go's `filepath.Match`, which moby calls first, would
 * return ErrBadPattern (a bad class, a trailing backslash).
 */
function compilePattern(cleaned: string, exclusion: boolean): Pattern {
  const chars = Array.from(cleaned);
  let src = '^';
  let type: MatchType = 'exact';
  for (let i = 0, step = 0; i < chars.length; step += 1) {
    const ch = chars[i]!;
    i += 1;
    if (ch === '*' && chars[i] === '*') {
      i += 1;
      if (chars[i] === '/') i += 1;
      if (i >= chars.length) {
        if (type === 'exact') type = 'prefix';
        else {
          src += '.*';
          type = 'regexp';
        }
      } else {
        src += '(.*/)?';
        type = 'regexp';
      }
      if (step === 0) type = 'suffix';
    } else if (ch === '*') {
      src += '[^/]*';
      type = 'regexp';
    } else if (ch === '?') {
      src += '[^/]';
      type = 'regexp';
    } else if (ch === '\\') {
      // moby leaves a trailing `\` alone, but filepath.Match refused it first.
      const next = chars[i];
      if (next === undefined) throw new BadPattern();
      src += literal(next);
      i += 1;
      type = 'regexp';
    } else if (ch === '[') {
      const [cls, next] = translateClass(chars, i);
      src += cls;
      i = next;
      type = 'regexp';
    } else src += literal(ch);
  }
  const re = type === 'regexp' ? new RegExp(`${src}$`, 'u') : undefined;
  return { cleaned, exclusion, type, re };
}

function matchOne(p: Pattern, file: string): boolean {
  switch (p.type) {
    case 'exact':
      return file === p.cleaned;
    case 'prefix':
      return file.startsWith(p.cleaned.slice(0, -2));
    case 'suffix': {
      const suffix = p.cleaned.slice(2);
      return file.endsWith(suffix) || (suffix.startsWith('/') && file === suffix.slice(1));
    }
    case 'regexp':
      return p.re?.test(file) ?? false;
  }
}

/** Patterns as moby's `ignorefile.ReadAll` yields them: `[line, pattern]`. */
function readPatterns(text: string): [number, string][] {
  const out: [number, string][] = [];
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  lines.forEach((raw, index) => {
    if (raw.startsWith('#')) return;
    let pattern = raw.trim();
    if (pattern === '') return;
    const invert = pattern.startsWith('!');
    if (invert) pattern = pattern.slice(1).trim();
    if (pattern.length > 0) {
      pattern = cleanPath(pattern);
      if (pattern.length > 1 && pattern.startsWith('/')) pattern = pattern.slice(1);
    }
    out.push([index + 1, invert ? `!${pattern}` : pattern]);
  });
  return out;
}

const FSUTIL_PATTERN_CHARS = /[*[\]?^\\]/;

/** fsutil's `patternWithoutTrailingGlob`. */
function withoutTrailingGlob(p: string): string {
  let s = p.endsWith('/**') ? p.slice(0, -3) : p;
  s = s.endsWith('/*') ? s.slice(0, -2) : s;
  return s;
}

/**
 * Parse a `.dockerignore` file. Lines starting with `#` are comments; each
 * other line is trimmed, cleaned (`./`, `//`, `..` resolved lexically; a
 * leading `/` dropped) and compiled with Docker's rules: `*` and `?` never
 * match `/`, `**` matches any number of directories, `[...]` and `\` as in Go,
 * `!` re-includes, the last matching pattern wins, and a pattern that matches
 * a directory excludes everything below it. Malformed patterns (`!` alone, an
 * unclosed `[`, a trailing `\`) throw `invalid_argument` naming the line.
 */
export function parseDockerignore(text: string): Matcher {
  const patterns: Pattern[] = [];
  for (const [line, raw] of readPatterns(text)) {
    const exclusion = raw.startsWith('!');
    const cleaned = exclusion ? raw.slice(1) : raw;
    if (cleaned === '') {
      throw new VesselError('invalid_argument', `.dockerignore line ${line}: "!" needs a pattern`);
    }
    try {
      patterns.push(compilePattern(cleaned, exclusion));
    } catch (err) {
      throw new VesselError(
        'invalid_argument',
        `.dockerignore line ${line}: syntax error in pattern ${JSON.stringify(raw)}`,
        { cause: err },
      );
    }
  }
  const exceptions = patterns.filter((p) => p.exclusion).map((p) => withoutTrailingGlob(p.cleaned));
  const wildcardExceptions = exceptions.some((p) => FSUTIL_PATTERN_CHARS.test(p));

  const excluded = (relPath: string): boolean => {
    const file = cleanPath(relPath.replace(/^\/+/, ''));
    if (file === '.' || patterns.length === 0) return false;
    // The file itself, then each parent directory from the top down.
    const candidates = [file];
    for (let i = file.indexOf('/'); i >= 0; i = file.indexOf('/', i + 1))
      candidates.push(file.slice(0, i));
    let matched = false;
    for (const p of patterns) {
      if (p.exclusion !== matched) continue;
      if (candidates.some((c) => matchOne(p, c))) matched = !p.exclusion;
    }
    return matched;
  };

  const skipDir = (relPath: string): boolean => {
    if (wildcardExceptions) return false;
    const dirSlash = `${cleanPath(relPath.replace(/^\/+/, ''))}/`;
    return !exceptions.some((p) => `${p}/`.startsWith(dirSlash));
  };

  return {
    excluded,
    skipDir,
    ignored: (relPath, isDir) => excluded(relPath) && (!isDir || skipDir(relPath)),
  };
}
