// Dockerfile parsing (through dockerfile-ast) into stages and steps, Docker's
// word expansion, and the errors for everything `vessel build` does not run.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isVesselError } from '../../../src/core/errors.js';
import {
  expand,
  normalisePorts,
  parseDockerfile,
  stageByRef,
  type Step,
} from '../../../src/builds/dockerfile.js';

const env =
  (vars: Record<string, string>) =>
  (name: string): string | undefined =>
    vars[name];

function stepsOf(text: string): Step[] {
  const parsed = parseDockerfile(text);
  return parsed.stages.flatMap((s) => s.steps);
}

describe('parseDockerfile', () => {
  test('a multi-stage Dockerfile: stages, steps, lines and one-line text', () => {
    const parsed = parseDockerfile(
      [
        '# syntax=docker/dockerfile:1', // 1
        'ARG BASE=alpine:3.20', // 2
        'ARG VERSION', // 3
        'FROM --platform=linux/amd64 ${BASE} AS Build', // 4
        'WORKDIR /src', // 5
        'COPY --chown=app:app --chmod=755 go.mod go.sum ./', // 6
        'RUN apk add --no-cache git \\', // 7
        '  # a comment inside the continuation', // 8
        '  && go build ./...', // 9
        '', // 10
        'from scratch as final', // 11
        'COPY --from=build /src/app /usr/local/bin/app', // 12
        'ENTRYPOINT ["/usr/local/bin/app", "serve"]', // 13
        'CMD --help', // 14
      ].join('\n'),
    );
    assert.deepEqual(parsed.globalArgs, [
      { name: 'BASE', default: 'alpine:3.20' },
      { name: 'VERSION' },
    ]);
    assert.equal(parsed.escape, '\\');
    assert.equal(parsed.stages.length, 2);
    const [build, final] = parsed.stages;
    assert.deepEqual(
      {
        index: build!.index,
        name: build!.name,
        from: build!.from,
        fromLine: build!.fromLine,
        platform: build!.platform,
      },
      { index: 0, name: 'build', from: '${BASE}', fromLine: 4, platform: 'linux/amd64' },
    );
    assert.deepEqual(build!.steps, [
      { kind: 'WORKDIR', line: 5, text: 'WORKDIR /src', path: '/src' },
      {
        kind: 'COPY',
        line: 6,
        text: 'COPY --chown=app:app --chmod=755 go.mod go.sum ./',
        sources: ['go.mod', 'go.sum'],
        dest: './',
        chown: 'app:app',
        chmod: '755',
      },
      {
        kind: 'RUN',
        line: 7,
        text: 'RUN apk add --no-cache git   && go build ./...',
        shell: true,
        args: ['apk add --no-cache git   && go build ./...'],
      },
    ]);
    assert.equal(final!.name, 'final');
    assert.equal(final!.platform, undefined);
    assert.deepEqual(final!.steps, [
      {
        kind: 'COPY',
        line: 12,
        text: 'COPY --from=build /src/app /usr/local/bin/app',
        sources: ['/src/app'],
        dest: '/usr/local/bin/app',
        from: 'build',
      },
      {
        kind: 'ENTRYPOINT',
        line: 13,
        text: 'ENTRYPOINT ["/usr/local/bin/app", "serve"]',
        shell: false,
        args: ['/usr/local/bin/app', 'serve'],
      },
      { kind: 'CMD', line: 14, text: 'CMD --help', shell: true, args: ['--help'] },
    ]);
  });

  test('exec form is a JSON array of strings; anything else is the shell form', () => {
    const steps = stepsOf(
      [
        'FROM a',
        'RUN ["sh", "-c", "echo \\"a  b\\""]',
        'RUN [ "echo" , "x" ]',
        'RUN ["echo", 1]',
        "RUN ['single', 'quotes']",
        'CMD []',
        'COPY ["with space.txt", "b", "/dst dir/"]',
        'ADD --chown=1 ["x.tar", "/opt/"]',
      ].join('\n'),
    );
    assert.deepEqual(
      steps
        .map((s) => (s.kind === 'RUN' || s.kind === 'CMD' ? [s.shell, s.args] : null))
        .slice(0, 5),
      [
        [false, ['sh', '-c', 'echo "a  b"']],
        [false, ['echo', 'x']],
        [true, ['["echo", 1]']],
        [true, ["['single', 'quotes']"]],
        [false, []],
      ],
    );
    const copy = steps[5]!;
    assert.ok(copy.kind === 'COPY');
    assert.deepEqual([copy.sources, copy.dest], [['with space.txt', 'b'], '/dst dir/']);
    const add = steps[6]!;
    assert.ok(add.kind === 'ADD');
    assert.deepEqual([add.sources, add.dest, add.chown], [['x.tar'], '/opt/', '1']);
  });

  test('ENV and LABEL keep raw words for expand(); legacy forms; MAINTAINER', () => {
    const steps = stepsOf(
      [
        'FROM a',
        'ENV A=1 B="two words" C=x\\ y D=\'$HOME\' E=',
        'ENV LEGACY value with  "spaces"',
        'LABEL "com.example.key"="v 1" k=v \\',
        '      other=${A}',
        "MAINTAINER Jane O'Brien <jane@example.com>",
      ].join('\n'),
    );
    const [e1, e2, label, maint] = steps;
    assert.ok(
      e1?.kind === 'ENV' &&
        e2?.kind === 'ENV' &&
        label?.kind === 'LABEL' &&
        maint?.kind === 'LABEL',
    );
    assert.deepEqual(e1.pairs, [
      ['A', '1'],
      ['B', '"two words"'],
      ['C', 'x\\ y'],
      ['D', "'$HOME'"],
      ['E', ''],
    ]);
    const x = (w: string): string => expand(w, env({ HOME: '/root', A: 'one' }));
    assert.deepEqual(
      e1.pairs.map(([k, v]) => [k, x(v)]),
      [
        ['A', '1'],
        ['B', 'two words'],
        ['C', 'x y'],
        ['D', '$HOME'],
        ['E', ''],
      ],
    );
    assert.deepEqual(
      e2.pairs.map(([k, v]) => [k, x(v)]),
      [['LEGACY', 'value with  spaces']],
    );
    assert.deepEqual(
      label.pairs.map(([k, v]) => [x(k), x(v)]),
      [
        ['com.example.key', 'v 1'],
        ['k', 'v'],
        ['other', 'one'],
      ],
    );
    assert.equal(label.line, 4);
    assert.deepEqual(
      maint.pairs.map(([k, v]) => [k, x(v)]),
      [['maintainer', "Jane O'Brien <jane@example.com>"]],
    );
  });

  test('ARG in a stage, several names per ARG; EXPOSE raw; USER and WORKDIR whole', () => {
    const steps = stepsOf(
      [
        'FROM a',
        'ARG A=1 B',
        'EXPOSE 80 53/UDP 8000-8002/tcp $PORT',
        'USER app:staff',
        'WORKDIR /my dir',
      ].join('\n'),
    );
    assert.deepEqual(steps, [
      { kind: 'ARG', line: 2, text: 'ARG A=1 B', name: 'A', default: '1' },
      { kind: 'ARG', line: 2, text: 'ARG A=1 B', name: 'B' },
      {
        kind: 'EXPOSE',
        line: 3,
        text: 'EXPOSE 80 53/UDP 8000-8002/tcp $PORT',
        // Raw words: the engine expands them, then normalises them with normalisePorts.
        ports: ['80', '53/UDP', '8000-8002/tcp', '$PORT'],
      },
      { kind: 'USER', line: 4, text: 'USER app:staff', user: 'app:staff' },
      { kind: 'WORKDIR', line: 5, text: 'WORKDIR /my dir', path: '/my dir' },
    ]);
  });

  test('EXPOSE words with variables, quotes or escapes are checked after expansion only', () => {
    assert.deepEqual(stepsOf('FROM a\nEXPOSE "8080" ${P:-80}/udp'), [
      {
        kind: 'EXPOSE',
        line: 2,
        text: 'EXPOSE "8080" ${P:-80}/udp',
        ports: ['"8080"', '${P:-80}/udp'],
      },
    ]);
  });

  test('the escape directive changes continuations and expand()', () => {
    const parsed = parseDockerfile(
      ['# escape=`', 'FROM a', 'RUN echo C:\\dir `', '  && dir', 'ENV P=C:\\x Q=`$HOME'].join(
        '\r\n',
      ),
    );
    assert.equal(parsed.escape, '`');
    const [run, envStep] = parsed.stages[0]!.steps;
    assert.ok(run?.kind === 'RUN' && envStep?.kind === 'ENV');
    assert.deepEqual(run.args, ['echo C:\\dir   && dir']);
    const x = (w: string): string => expand(w, env({ HOME: '/root' }), { escape: parsed.escape });
    assert.deepEqual(
      envStep.pairs.map(([k, v]) => [k, x(v)]),
      [
        ['P', 'C:\\x'],
        ['Q', '$HOME'],
      ],
    );
  });

  const bad: [string, string, RegExp][] = [
    ['empty', '', /Dockerfile is empty/],
    ['only comments', '# nothing\n\n', /Dockerfile is empty/],
    ['no FROM', 'ARG A=1', /no FROM/],
    ['RUN before FROM', 'RUN x\nFROM a', /line 1: RUN comes before the first FROM/],
    ['HEALTHCHECK', 'FROM a\nHEALTHCHECK NONE', /line 2: HEALTHCHECK is not supported/],
    [
      'HEALTHCHECK with flags',
      'FROM a\nHEALTHCHECK --interval=5s CMD true',
      /line 2: HEALTHCHECK is not supported by vessel build/,
    ],
    ['ONBUILD', 'FROM a\nONBUILD RUN x', /line 2: ONBUILD is not supported/],
    ['SHELL', 'FROM a\nSHELL ["bash", "-c"]', /line 2: SHELL is not supported/],
    ['STOPSIGNAL', 'FROM a\nSTOPSIGNAL SIGTERM', /line 2: STOPSIGNAL is not supported/],
    ['VOLUME', 'FROM a\n\nVOLUME /data', /line 3: VOLUME is not supported/],
    ['unknown word', 'FROM a\nFOO bar', /line 2: unknown instruction "FOO"/],
    ['broken JSON line', 'FROM a\nCMD ["a",\n "b"]', /line 3: unknown instruction/],
    [
      'RUN --mount',
      'FROM a\nRUN --mount=type=cache,target=/c make',
      /line 2: RUN --mount is not supported/,
    ],
    ['RUN --network', 'FROM a\nRUN --network=host x', /line 2: RUN --network is not supported/],
    ['ADD --from', 'FROM a AS b\nFROM c\nADD --from=b x y', /line 3: ADD --from is not allowed/],
    ['COPY --link', 'FROM a\nCOPY --link a b', /line 2: COPY --link is not supported/],
    ['flag twice', 'FROM a\nCOPY --chown=1 --chown=2 a b', /line 2: COPY --chown is given twice/],
    ['flag without value', 'FROM a\nCOPY --chown a b', /line 2: COPY --chown needs a value/],
    ['COPY one word', 'FROM a\nCOPY a', /line 2: COPY needs at least one source and a destination/],
    [
      'ADD URL',
      'FROM a\nADD https://example.com/x.tgz /x',
      /line 2: ADD of a URL is not supported: https:\/\/example.com\/x.tgz; use RUN curl/,
    ],
    ['ADD git', 'FROM a\nADD git@github.com:a/b.git /x', /ADD of a URL is not supported/],
    ['heredoc', 'FROM a\nRUN <<EOF\necho hi\nEOF', /line 2: RUN with a here-document/],
    ['ENV a=1 b', 'FROM a\nENV a=1 b', /line 2: ENV has no "=" in "b"/],
    ['ENV name only', 'FROM a\nENV a', /line 2: ENV a needs a value/],
    ['ENV nothing', 'FROM a\nENV', /line 2: ENV needs at least one name=value/],
    ['ARG a b', 'FROM a\nARG a b', /line 2: ARG a b/],
    ['RUN nothing', 'FROM a\nRUN', /line 2: RUN needs a command/],
    ['RUN []', 'FROM a\nRUN []', /line 2: RUN needs a command/],
    ['WORKDIR nothing', 'FROM a\nWORKDIR', /line 2: WORKDIR needs a path/],
    ['EXPOSE bad', 'FROM a\nEXPOSE 80/icmp', /line 2: EXPOSE invalid port "80\/icmp"/],
    ['EXPOSE range', 'FROM a\nEXPOSE 90-80', /invalid port/],
    ['EXPOSE among variables', 'FROM a\nEXPOSE $P 80/icmp', /EXPOSE invalid port "80\/icmp"/],
    ['FROM two words', 'FROM a b', /line 1: FROM needs an image/],
    ['FROM AS nothing', 'FROM a AS', /line 1: FROM needs an image/],
    ['FROM --foo', 'FROM --foo=x a', /line 1: FROM --foo is not supported/],
    ['stage name', 'FROM a AS 1st', /line 1: FROM stage name "1st" is invalid/],
    ['duplicate stage', 'FROM a AS x\nFROM b AS X', /line 2: FROM stage name "X" is already used/],
    [
      'COPY --from current',
      'FROM a AS x\nCOPY --from=x a b',
      /line 2: COPY --from=x refers to the current stage/,
    ],
    [
      'COPY --from later',
      'FROM a\nCOPY --from=later a b\nFROM b AS later',
      /line 2: COPY --from=later refers to a later stage/,
    ],
    ['COPY --from=1 in stage 0', 'FROM a\nCOPY --from=1 a b\nFROM b', /refers to a later stage/],
  ];
  for (const [name, text, message] of bad) {
    test(`refused: ${name}`, () => {
      assert.throws(
        () => parseDockerfile(text),
        (err: unknown) => isVesselError(err, 'invalid_argument') && message.test(err.message),
      );
    });
  }

  test('errors carry the line and instruction in details', () => {
    try {
      parseDockerfile('FROM a\n\nVOLUME /x');
      assert.fail('expected an error');
    } catch (err) {
      assert.ok(isVesselError(err));
      assert.deepEqual(err.details, { line: 3, instruction: 'VOLUME' });
    }
  });
});

describe('stageByRef', () => {
  const parsed = parseDockerfile('FROM a AS Build\nFROM b\nFROM c AS final');
  test('names (case-insensitive), numbers, images', () => {
    assert.equal(stageByRef(parsed, 'build'), 0);
    assert.equal(stageByRef(parsed, 'BUILD'), 0);
    assert.equal(stageByRef(parsed, '1'), 1);
    assert.equal(stageByRef(parsed, 'final'), 2);
    assert.equal(stageByRef(parsed, '3'), undefined);
    assert.equal(stageByRef(parsed, 'alpine:3.20'), undefined);
  });
  test('before limits to earlier stages; byIndex false takes names only', () => {
    assert.equal(stageByRef(parsed, 'final', { before: 2 }), undefined);
    assert.equal(stageByRef(parsed, 'build', { before: 1 }), 0);
    assert.equal(stageByRef(parsed, '0', { byIndex: false }), undefined);
  });
});

describe('expand', () => {
  const vars = env({ A: 'a', EMPTY: '', SP: 'x y', N: '1' });
  const cases: [string, string][] = [
    ['$A', 'a'],
    ['${A}', 'a'],
    ['pre${A}post', 'preapost'],
    ['$A$A', 'aa'],
    ['$UNSET', ''],
    ['${UNSET:-def}', 'def'],
    ['${EMPTY:-def}', 'def'],
    ['${A:-def}', 'a'],
    ['${UNSET-def}', 'def'],
    ['${EMPTY-def}', ''],
    ['${A:+alt}', 'alt'],
    ['${EMPTY:+alt}', ''],
    ['${EMPTY+alt}', 'alt'],
    ['${UNSET+alt}', ''],
    ['${UNSET:-${A}b}', 'ab'],
    ['${UNSET:-"q u"}', 'q u'],
    ['\\$A', '$A'],
    ['\\\\$A', '\\a'],
    ["'$A'", '$A'],
    ['"$A"', 'a'],
    ['"\\$A \\" \\n"', '$A " \\n'],
    ['"it\'s"', "it's"],
    ["'a'\\''b'", "a'b"],
    ['$', '$'],
    ['a$', 'a$'],
    ['$-', ''],
    ['$1x', 'x'],
    ['$ A', '$ A'],
    ['${SP}', 'x y'],
    ['trailing\\', 'trailing'],
    ['/usr/$N/bin', '/usr/1/bin'],
  ];
  for (const [word, want] of cases) {
    test(`${word} → ${JSON.stringify(want)}`, () => assert.equal(expand(word, vars), want));
  }
  const errors: [string, RegExp][] = [
    ['"open', /matching double-quote/],
    ["'open", /matching single-quote/],
    ['${A', /missing '}'/],
    ['${A:-x', /matching }/],
    ['${}', /bad substitution/],
    ['${A#x}', /missing ':' in substitution/],
    ['${A:=x}', /unsupported modifier \(=\)/],
    ['${UNSET:?must be set}', /UNSET: must be set/],
    ['${UNSET?}', /UNSET: is not allowed to be unset/],
  ];
  for (const [word, message] of errors) {
    test(`${word} fails`, () =>
      assert.throws(
        () => expand(word, vars),
        (err: unknown) => isVesselError(err, 'invalid_argument') && message.test(err.message),
      ));
  }
  test('${A:?x} passes a set value through', () => assert.equal(expand('${A:?x}', vars), 'a'));
});

describe('normalisePorts', () => {
  test('forms', () => {
    assert.deepEqual(normalisePorts('80'), ['80/tcp']);
    assert.deepEqual(normalisePorts('80/'), ['80/tcp']);
    assert.deepEqual(normalisePorts('5000/SCTP'), ['5000/sctp']);
    assert.deepEqual(normalisePorts('1-3/udp'), ['1/udp', '2/udp', '3/udp']);
    for (const bad of ['', 'x', '70000', '1/tcp/x', '-1', '80/icmp']) {
      assert.throws(() => normalisePorts(bad), /invalid port/);
    }
  });
});
