// Parses a Dockerfile with dockerfile-ast into build stages and steps, checked
// against the instructions `vessel build` runs. Values stay unexpanded words:
// the engine expands them with `expand` (Docker's shell-word rules) at run time.
import {
  Copy,
  DockerfileParser,
  ModifiableInstruction,
  PropertyInstruction,
  Run,
  type Instruction,
} from 'dockerfile-ast';
import { VesselError } from '../core/errors.js';

/**
 * One instruction of a stage. `line` is 1-based; `text` is the instruction as
 * written on one line (continuations joined, comments inside removed), for
 * logs and the step cache key. Every value except RUN/CMD/ENTRYPOINT arguments
 * is a raw Docker word: pass it through `expand()` before use, which also
 * removes quotes and escapes as Docker does (ENV keys excepted: they are names).
 */
export type Step =
  | { kind: 'RUN'; line: number; text: string; shell: boolean; args: string[] }
  | {
      kind: 'COPY' | 'ADD';
      line: number;
      text: string;
      sources: string[];
      dest: string;
      chown?: string;
      chmod?: string;
      from?: string;
    }
  | { kind: 'ENV'; line: number; text: string; pairs: [string, string][] }
  | { kind: 'ARG'; line: number; text: string; name: string; default?: string }
  | { kind: 'WORKDIR'; line: number; text: string; path: string }
  | { kind: 'USER'; line: number; text: string; user: string }
  | { kind: 'ENTRYPOINT' | 'CMD'; line: number; text: string; shell: boolean; args: string[] }
  | { kind: 'EXPOSE'; line: number; text: string; ports: string[] }
  | { kind: 'LABEL'; line: number; text: string; pairs: [string, string][] };

export interface Stage {
  index: number;
  /** `AS` name, lower-cased (Docker's stage names are case-insensitive). */
  name?: string;
  /** The image (or earlier stage name) as written; expand with the global ARGs. */
  from: string;
  fromLine: number;
  platform?: string;
  steps: Step[];
}

export interface ParsedDockerfile {
  globalArgs: { name: string; default?: string }[];
  stages: Stage[];
  /** The escape character (`\`, or `` ` `` from a `# escape=` directive); pass it to `expand`. */
  escape: string;
}

const UNSUPPORTED = new Set(['HEALTHCHECK', 'ONBUILD', 'SHELL', 'STOPSIGNAL', 'VOLUME']);
const STAGE_NAME = /^[a-z][a-z0-9-_.]*$/;
/** A COPY/ADD source that is a URL or a git remote (`https://...`, `git@host:repo`). */
export const URL_SOURCE = /^(?:[a-z][a-z0-9+.-]*:\/\/|git@)/i;

function fail(line: number, keyword: string, why: string): VesselError {
  return new VesselError('invalid_argument', `Dockerfile line ${line}: ${keyword} ${why}`, {
    details: { line, instruction: keyword },
  });
}

/** Each instruction's arguments on one line, computed by `joinArguments` for the current parse. */
const joined = new WeakMap<Instruction, string>();

/** The arguments on one line: continuations joined, comment lines dropped; flags excluded. */
function content(inst: Instruction): string {
  return (joined.get(inst) ?? inst.getArgumentsContent() ?? '').trim();
}

/** Offsets where each line of `text` starts, split like the parser's document (CRLF, CR, LF). */
function lineStarts(text: string): number[] {
  const starts = [0];
  for (const m of text.matchAll(/\r\n|\r|\n/g)) starts.push(m.index + m[0].length);
  return starts;
}

/**
 * dockerfile-ast's argument ranges, joined. Its `getArgumentsContent` keeps an
 * indented comment line inside a continuation (`  # note`); Docker drops every
 * such line, and so do we: lines dockerfile-ast reports as comments are removed
 * from the ranges before they are joined.
 */
function joinArguments(
  inst: Instruction,
  text: string,
  starts: readonly number[],
  comments: ReadonlySet<number>,
): string {
  const offset = (p: { line: number; character: number }): number =>
    (starts[p.line] ?? text.length) + p.character;
  let out = '';
  for (const range of inst.getArgumentsRanges()) {
    for (let line = range.start.line; line <= range.end.line; line += 1) {
      if (comments.has(line) && line !== inst.getRange().start.line) continue;
      const from = line === range.start.line ? offset(range.start) : (starts[line] ?? text.length);
      const lineEnd = (starts[line + 1] ?? text.length + 1) - 1;
      const to = line === range.end.line ? offset(range.end) : lineEnd;
      out += text.slice(from, to).replace(/[\r\n]+$/, '');
    }
  }
  return out;
}

/** Docker's whitespace split (parseStringsWhitespaceDelimited) of the joined arguments. */
function words(inst: Instruction): string[] {
  const c = content(inst);
  return c === '' ? [] : c.split(/[ \t\v\f\r\n]+/);
}

/** A JSON array of strings (Docker's exec form), or undefined for the shell form. */
function execForm(inst: Instruction): string[] | undefined {
  const c = content(inst);
  if (!c.startsWith('[')) return undefined;
  try {
    const v: unknown = JSON.parse(c);
    if (Array.isArray(v) && v.every((s): s is string => typeof s === 'string')) return v;
  } catch {
    // Not JSON: Docker runs it in the shell form.
  }
  return undefined;
}

function stepText(inst: Instruction, keyword: string): string {
  const flags =
    inst instanceof ModifiableInstruction
      ? inst.getFlags().map((f) => {
          const v = f.getValue();
          return v === null ? `--${f.getName()}` : `--${f.getName()}=${v}`;
        })
      : [];
  return [keyword, ...flags, content(inst)].filter((s) => s !== '').join(' ');
}

const FLAG_HINTS: Record<string, string> = {
  mount: 'RUN --mount is not supported by vessel build',
  network: 'RUN --network is not supported; set the network for the whole build',
  security: 'RUN --security is not supported by vessel build',
};

function flagsOf(
  inst: Instruction,
  line: number,
  keyword: string,
  allowed: readonly string[],
): Map<string, string> {
  const out = new Map<string, string>();
  if (!(inst instanceof ModifiableInstruction)) return out;
  for (const f of inst.getFlags()) {
    const name = f.getName();
    if (!allowed.includes(name)) {
      const hint = keyword === 'RUN' ? FLAG_HINTS[name] : undefined;
      const why =
        keyword === 'ADD' && name === 'from'
          ? '--from is not allowed (Docker has no ADD --from); use COPY --from'
          : `--${name} is not supported by vessel build`;
      throw new VesselError(
        'invalid_argument',
        `Dockerfile line ${line}: ${hint ?? `${keyword} ${why}`}`,
        {
          details: { line, instruction: keyword },
        },
      );
    }
    if (out.has(name)) throw fail(line, keyword, `--${name} is given twice`);
    const value = f.getValue();
    if (value === null || value === '') throw fail(line, keyword, `--${name} needs a value`);
    out.set(name, value);
  }
  return out;
}

function hasHeredoc(inst: Instruction): boolean {
  if (inst instanceof Run || inst instanceof Copy) return inst.getHeredocs().length > 0;
  return words(inst).some((w) => /^\d*<<-?["']?\w/.test(w));
}

/** Name/value pairs of ENV and LABEL: `k=v k2="v 2"` or the legacy `k v w`. */
function pairsOf(inst: Instruction, line: number, keyword: string): [string, string][] {
  const props = inst instanceof PropertyInstruction ? inst.getProperties() : [];
  if (props.length === 0) throw fail(line, keyword, 'needs at least one name=value');
  const [first] = props;
  if (props.length === 1 && first !== undefined && first.getAssignmentOperator() === null) {
    const value = first.getUnescapedValue();
    if (value === null) throw fail(line, keyword, `${first.getName()} needs a value (name=value)`);
    if (first.getName() === '') throw fail(line, keyword, 'names can not be blank');
    return [[first.getName(), value]];
  }
  return props.map((p) => {
    if (p.getAssignmentOperator() === null) {
      throw fail(line, keyword, `has no "=" in ${JSON.stringify(p.getName())}: use name=value`);
    }
    if (p.getName() === '') throw fail(line, keyword, 'names can not be blank');
    return [p.getName(), p.getUnescapedValue() ?? ''];
  });
}

function argsOf(inst: Instruction, line: number): { name: string; default?: string }[] {
  const props = inst instanceof PropertyInstruction ? inst.getProperties() : [];
  if (props.length === 0) throw fail(line, 'ARG', 'needs a name');
  return props.map((p) => {
    const name = p.getName();
    if (name === '') throw fail(line, 'ARG', 'names can not be blank');
    const value = p.getUnescapedValue();
    if (p.getAssignmentOperator() === null && value !== null) {
      throw fail(
        line,
        'ARG',
        `${name} ${value}: write ARG ${name}=<default>, one name=value per ARG`,
      );
    }
    return value === null ? { name } : { name, default: value };
  });
}

/** A literal that `expand` returns unchanged (MAINTAINER is not expanded by Docker). */
function quoteLiteral(s: string, escape: string): string {
  return `'${s.replaceAll("'", `'${escape}''`)}'`;
}

function shellOrExec(
  inst: Instruction,
  line: number,
  keyword: string,
): { shell: boolean; args: string[] } {
  const exec = execForm(inst);
  if (exec !== undefined) return { shell: false, args: exec };
  const c = content(inst);
  if (c === '') throw fail(line, keyword, 'needs a command');
  return { shell: true, args: [c] };
}

function copyStep(inst: Instruction, line: number, keyword: 'COPY' | 'ADD', text: string): Step {
  const flags = flagsOf(
    inst,
    line,
    keyword,
    keyword === 'COPY' ? ['chown', 'chmod', 'from'] : ['chown', 'chmod'],
  );
  if (hasHeredoc(inst)) throw fail(line, keyword, 'with a here-document (<<) is not supported');
  const items = execForm(inst) ?? words(inst);
  const dest = items.pop();
  if (dest === undefined || items.length === 0) {
    throw fail(line, keyword, 'needs at least one source and a destination');
  }
  if (keyword === 'ADD') {
    const url = items.find((s) => URL_SOURCE.test(s));
    if (url !== undefined) {
      throw fail(
        line,
        keyword,
        `of a URL is not supported: ${url}; use RUN curl ... with --network`,
      );
    }
  }
  const step: Step = { kind: keyword, line, text, sources: items, dest };
  const chown = flags.get('chown');
  const chmod = flags.get('chmod');
  const from = flags.get('from');
  if (chown !== undefined) step.chown = chown;
  if (chmod !== undefined) step.chmod = chmod;
  if (from !== undefined) step.from = from;
  return step;
}

/**
 * EXPOSE keeps its words raw: the engine expands each and normalises it with
 * `normalisePorts`. A plain literal (no variable, quote or escape) is checked
 * here already, so a bad port fails at parse time with its line.
 */
function exposeStep(inst: Instruction, line: number, text: string): Step {
  const ports = words(inst);
  if (ports.length === 0) throw fail(line, 'EXPOSE', 'needs at least one port');
  for (const spec of ports) {
    if (!/^[\w/-]+$/.test(spec)) continue;
    try {
      normalisePorts(spec);
    } catch (err) {
      throw fail(line, 'EXPOSE', (err as Error).message);
    }
  }
  return { kind: 'EXPOSE', line, text, ports };
}

function parseStep(inst: Instruction, line: number, keyword: string, escape: string): Step[] {
  if (UNSUPPORTED.has(keyword)) throw fail(line, keyword, 'is not supported by vessel build');
  // COPY and ADD check their own flags; no other instruction here takes any.
  if (keyword !== 'COPY' && keyword !== 'ADD') flagsOf(inst, line, keyword, []);
  const text = stepText(inst, keyword);
  switch (keyword) {
    case 'RUN': {
      if (hasHeredoc(inst)) throw fail(line, keyword, 'with a here-document (<<) is not supported');
      const form = shellOrExec(inst, line, keyword);
      if (form.args.length === 0) throw fail(line, keyword, 'needs a command');
      return [{ kind: 'RUN', line, text, ...form }];
    }
    case 'CMD':
    case 'ENTRYPOINT':
      return [{ kind: keyword, line, text, ...shellOrExec(inst, line, keyword) }];
    case 'COPY':
    case 'ADD':
      return [copyStep(inst, line, keyword, text)];
    case 'ENV':
      return [{ kind: 'ENV', line, text, pairs: pairsOf(inst, line, keyword) }];
    case 'LABEL':
      return [{ kind: 'LABEL', line, text, pairs: pairsOf(inst, line, keyword) }];
    case 'MAINTAINER': {
      const who = content(inst);
      if (who === '') throw fail(line, keyword, 'needs a name');
      return [{ kind: 'LABEL', line, text, pairs: [['maintainer', quoteLiteral(who, escape)]] }];
    }
    case 'ARG':
      return argsOf(inst, line).map((a) => ({ kind: 'ARG', line, text, ...a }));
    case 'WORKDIR': {
      const path = content(inst);
      if (path === '') throw fail(line, keyword, 'needs a path');
      return [{ kind: 'WORKDIR', line, text, path }];
    }
    case 'USER': {
      const user = content(inst);
      if (user === '') throw fail(line, keyword, 'needs a user');
      return [{ kind: 'USER', line, text, user }];
    }
    case 'EXPOSE':
      return [exposeStep(inst, line, text)];
    default:
      throw new VesselError(
        'invalid_argument',
        `Dockerfile line ${line}: unknown instruction ${JSON.stringify(inst.getInstruction())}`,
        { details: { line, instruction: inst.getInstruction() } },
      );
  }
}

function parseFrom(inst: Instruction, line: number, stages: readonly Stage[]): Stage {
  const flags = flagsOf(inst, line, 'FROM', ['platform']);
  const w = words(inst);
  const [image, as, rawName] = w;
  const named = w.length === 3 && as?.toLowerCase() === 'as';
  if (image === undefined || (w.length !== 1 && !named)) {
    throw fail(line, 'FROM', 'needs an image, optionally followed by "AS name"');
  }
  const stage: Stage = { index: stages.length, from: image, fromLine: line, steps: [] };
  if (named && rawName !== undefined) {
    const name = rawName.toLowerCase();
    if (!STAGE_NAME.test(name)) {
      throw fail(
        line,
        'FROM',
        `stage name ${JSON.stringify(rawName)} is invalid: it must start with a letter and hold only letters, digits, "-", "_" and "."`,
      );
    }
    if (stages.some((s) => s.name === name)) {
      throw fail(
        line,
        'FROM',
        `stage name ${JSON.stringify(rawName)} is already used by an earlier stage`,
      );
    }
    stage.name = name;
  }
  const platform = flags.get('platform');
  if (platform !== undefined) stage.platform = platform;
  return stage;
}

/** COPY --from values written literally must name an earlier stage or an image. */
function checkCopyFrom(parsed: ParsedDockerfile): void {
  for (const stage of parsed.stages) {
    for (const step of stage.steps) {
      if (step.kind !== 'COPY' || step.from === undefined || step.from.includes('$')) continue;
      const target = stageByRef(parsed, step.from);
      if (target !== undefined && target >= stage.index) {
        throw fail(
          step.line,
          'COPY',
          `--from=${step.from} refers to ${target === stage.index ? 'the current stage' : 'a later stage'}; only earlier stages can be copied from`,
        );
      }
    }
  }
}

/**
 * Parse a Dockerfile. Throws `invalid_argument` naming the line and the
 * instruction for anything `vessel build` does not run (HEALTHCHECK, ONBUILD,
 * SHELL, STOPSIGNAL, VOLUME, RUN flags, here-documents, unknown words), for
 * malformed instructions, for an instruction other than ARG before the first
 * FROM, for duplicate stage names, and for a Dockerfile without FROM.
 */
export function parseDockerfile(text: string): ParsedDockerfile {
  const df = DockerfileParser.parse(text);
  const parsed: ParsedDockerfile = { globalArgs: [], stages: [], escape: df.getEscapeCharacter() };
  const instructions = df.getInstructions();
  const starts = lineStarts(text);
  const comments = new Set(df.getComments().map((c) => c.getRange().start.line));
  for (const inst of instructions) joined.set(inst, joinArguments(inst, text, starts, comments));
  if (instructions.length === 0) {
    throw new VesselError('invalid_argument', 'Dockerfile is empty: it has no instructions');
  }
  for (const inst of instructions) {
    const line = inst.getRange().start.line + 1;
    const keyword = inst.getKeyword();
    if (keyword === 'FROM') {
      parsed.stages.push(parseFrom(inst, line, parsed.stages));
      continue;
    }
    const stage = parsed.stages.at(-1);
    if (stage !== undefined) {
      stage.steps.push(...parseStep(inst, line, keyword, parsed.escape));
    } else if (keyword === 'ARG') {
      parsed.globalArgs.push(...argsOf(inst, line));
    } else {
      throw fail(line, keyword, 'comes before the first FROM; only ARG may');
    }
  }
  if (parsed.stages.length === 0) {
    throw new VesselError('invalid_argument', 'Dockerfile has no FROM instruction');
  }
  checkCopyFrom(parsed);
  return parsed;
}

/**
 * The stage a `--from` value (or a FROM image) names: a stage name
 * (case-insensitive) or, with `byIndex` (default true; FROM takes names only),
 * a stage number. Only stages before `before` count when it is given.
 * `undefined` means `ref` is an image reference.
 */
export function stageByRef(
  parsed: ParsedDockerfile,
  ref: string,
  options: { before?: number; byIndex?: boolean } = {},
): number | undefined {
  const limit = options.before ?? parsed.stages.length;
  const lower = ref.toLowerCase();
  const named = parsed.stages.find((s) => s.name === lower && s.index < limit);
  if (named !== undefined) return named.index;
  if ((options.byIndex ?? true) && /^\d+$/.test(ref)) {
    const n = Number(ref);
    if (n < limit) return n;
  }
  return undefined;
}

export interface ExpandOptions {
  /** The Dockerfile's escape character (`ParsedDockerfile.escape`); default `\`. */
  readonly escape?: string;
}

const SPECIAL_PARAMS = new Set(['@', '*', '#', '?', '-', '$', '!']);
const NAME_CHAR = /[\p{L}\p{N}_]/u;

/** Docker's shell lexer (`ProcessWord`) over one word. */
class WordLexer {
  private pos = 0;

  constructor(
    private readonly word: string,
    private readonly lookup: (name: string) => string | undefined,
    private readonly escape: string,
  ) {}

  run(): string {
    return this.until(undefined);
  }

  private error(why: string): VesselError {
    return new VesselError(
      'invalid_argument',
      `cannot expand ${JSON.stringify(this.word)}: ${why}`,
    );
  }

  private peek(): string | undefined {
    return this.word[this.pos];
  }

  private next(): string | undefined {
    const ch = this.word[this.pos];
    if (ch !== undefined) this.pos += 1;
    return ch;
  }

  /** Everything up to `stop` (consumed), or to the end when `stop` is undefined. */
  private until(stop: string | undefined): string {
    let out = '';
    for (let ch = this.peek(); ch !== undefined; ch = this.peek()) {
      if (stop !== undefined && ch === stop) {
        this.pos += 1;
        return out;
      }
      if (ch === "'") out += this.singleQuoted();
      else if (ch === '"') out += this.doubleQuoted();
      else if (ch === '$') out += this.dollar();
      else if (ch === this.escape) {
        this.pos += 1;
        const escaped = this.next();
        if (escaped === undefined) break;
        out += escaped;
      } else {
        out += ch;
        this.pos += 1;
      }
    }
    if (stop !== undefined)
      throw this.error(`unexpected end of statement while looking for matching ${stop}`);
    return out;
  }

  private singleQuoted(): string {
    this.pos += 1;
    const end = this.word.indexOf("'", this.pos);
    if (end < 0)
      throw this.error('unexpected end of statement while looking for matching single-quote');
    const out = this.word.slice(this.pos, end);
    this.pos = end + 1;
    return out;
  }

  private doubleQuoted(): string {
    this.pos += 1;
    let out = '';
    for (;;) {
      const ch = this.peek();
      if (ch === undefined)
        throw this.error('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.pos += 1;
        return out;
      }
      if (ch === '$') {
        out += this.dollar();
      } else if (ch === this.escape) {
        this.pos += 1;
        const escaped = this.next();
        if (escaped === '"' || escaped === '$' || escaped === this.escape) out += escaped;
        else out += ch + (escaped ?? '');
      } else {
        out += ch;
        this.pos += 1;
      }
    }
  }

  private name(): string {
    const first = this.peek();
    if (first === undefined) return '';
    if (/\d/.test(first)) {
      let digits = '';
      for (let ch = this.peek(); ch !== undefined && /\d/.test(ch); ch = this.peek())
        digits += this.next();
      return digits;
    }
    if (SPECIAL_PARAMS.has(first)) {
      this.pos += 1;
      return first;
    }
    let name = '';
    for (let ch = this.peek(); ch !== undefined && NAME_CHAR.test(ch); ch = this.peek())
      name += this.next();
    return name;
  }

  private dollar(): string {
    this.pos += 1;
    if (this.peek() !== '{') {
      const name = this.name();
      return name === '' ? '$' : (this.lookup(name) ?? '');
    }
    this.pos += 1;
    const name = this.name();
    const ch = this.next();
    if (ch === undefined) throw this.error("syntax error: missing '}'");
    if (name === '') throw this.error('bad substitution');
    const value = this.lookup(name);
    if (ch === '}') return value ?? '';
    const colon = ch === ':';
    const op = colon ? this.next() : ch;
    if (op !== '-' && op !== '+' && op !== '?') {
      throw this.error(
        colon
          ? `unsupported modifier (${op ?? ''}) in substitution`
          : "missing ':' in substitution",
      );
    }
    const word = this.until('}');
    // With a colon, an empty value counts as unset (${VAR:-x}); without, only unset does.
    const set = value !== undefined && (!colon || value !== '');
    if (op === '-') return set ? value : word;
    if (op === '+') return set ? word : '';
    if (!set) throw this.error(`${name}: ${word === '' ? 'is not allowed to be unset' : word}`);
    return value;
  }
}

/**
 * Expand one Dockerfile word the way Docker's shell lexer does for ENV, ARG,
 * LABEL, COPY/ADD, WORKDIR, USER, EXPOSE and FROM: `$VAR`, `${VAR}`,
 * `${VAR:-default}`, `${VAR:+alt}`, `${VAR:?message}` and their colon-less
 * forms (which test for unset only), single quotes (literal), double quotes
 * (expanding), and the escape character (`\$` is a literal `$`). Quotes and
 * escapes are removed. Unset variables expand to "". Throws `invalid_argument`
 * for an unterminated quote or `${`, and for unsupported modifiers (`${VAR#x}`).
 */
export function expand(
  word: string,
  lookup: (name: string) => string | undefined,
  options: ExpandOptions = {},
): string {
  return new WordLexer(word, lookup, options.escape ?? '\\').run();
}

const PROTOCOLS = new Set(['tcp', 'udp', 'sctp']);

/**
 * EXPOSE values normalised as image config keys: `80` → `80/tcp`,
 * `53/UDP` → `53/udp`, `8000-8002` → three ports. Throws `invalid_argument`.
 */
export function normalisePorts(spec: string): string[] {
  const [port = '', proto = 'tcp', ...rest] = spec.split('/');
  const protocol = proto === '' ? 'tcp' : proto.toLowerCase();
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(port);
  const invalid = (): VesselError =>
    new VesselError(
      'invalid_argument',
      `invalid port ${JSON.stringify(spec)}: use PORT[-PORT][/tcp|udp|sctp]`,
    );
  if (rest.length > 0 || !PROTOCOLS.has(protocol) || m === null) throw invalid();
  const start = Number(m[1]);
  const end = m[2] === undefined ? start : Number(m[2]);
  if (end > 65535 || start > end) throw invalid();
  const out: string[] = [];
  for (let p = start; p <= end; p += 1) out.push(`${p}/${protocol}`);
  return out;
}
