// Byte-exact stdio (issue 18), end to end through real microVMs: the real CLI
// (`bin/vessel.js`, spawned with argument arrays, output kept as Buffers) and the SDK against
// one daemon process. One long-running instance (`box`) serves the exec cases; a handful of
// `run --rm` instances serve the main-command cases. Binary blobs in and out compared by
// sha256, stdout and stderr apart and in order, nothing from the guest's init in the output,
// stdin only with -i, exit codes, and bounded memory with 1 GiB streamed each way and a
// stopped reader.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { Sandbox, Vessel } from '../../packages/sdk/src/index.js';
import { BIN } from '../helpers/cli.js';
import { vesselBytes, type BytesOptions, type BytesResult } from '../helpers/cli-bytes.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { sampleMemory, statusKiB } from '../helpers/proc-mem.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason(['/usr/bin/wc']);

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/**
 * Bound on the daemon's RSS growth while 1 GiB streams through it. The flow-control windows
 * keep at most a few hundred KiB per stream in flight (EXEC_WINDOW, MAIN_WINDOW: 256 KiB);
 * what remains is V8's young generation and allocator slack. Measured on this machine under
 * TCG over four runs: +1 to +8 MiB out, +0.3 to +20 MiB in; buffering the stream instead
 * would be +1 GiB.
 */
const DAEMON_GROWTH_BOUND_KIB = 64 * 1024;
/**
 * Bound on the CLI's peak RSS (absolute) while 1 GiB goes through it. A CLI at rest is about
 * 55-70 MiB (node, commander, undici or ws); measured peaks 77-106 MiB either way.
 */
const CLI_PEAK_BOUND_KIB = 160 * 1024;
/** While a 50 MB stream is held back by a stopped reader: well under the 50 MB. */
const STOPPED_GROWTH_BOUND_KIB = 20 * 1024;

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file) as AsyncIterable<Buffer>) h.update(c);
  return h.digest('hex');
}

/**
 * Bytes a text path would damage: NUL, 0xFF, CR/LF in every order, invalid and truncated
 * UTF-8 (a lone continuation byte, an overlong form, a surrogate, 5-byte forms), a terminal
 * escape, ^C/^D/^Z (which a tty would turn into signals or EOF), DEL, then every byte value.
 */
const NASTY = Buffer.concat([
  Buffer.from([0x00, 0xff, 0x0d, 0x0a, 0x0a, 0x0d, 0x0d, 0x0d, 0x0a, 0x00, 0x00]),
  Buffer.from([0x80, 0xc3, 0x28, 0xc0, 0xaf, 0xe2, 0x82, 0x28, 0xed, 0xa0, 0x80, 0xf8, 0x88]),
  Buffer.from([0x80, 0x80, 0x80, 0xfe, 0xff, 0x1b, 0x5b, 0x32, 0x4a, 0x03, 0x04, 0x1a, 0x7f]),
  Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
]);

/** Random bytes of `size`, starting with NASTY and ending in a truncated UTF-8 sequence. */
function blob(size: number): Buffer {
  const b = randomBytes(size);
  NASTY.copy(b, 0);
  b[size - 2] = 0xe2;
  b[size - 1] = 0x82;
  return b;
}

/** Byte equality (and sha256); a failure says how much arrived and where it first differs. */
function assertSameBytes(got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) {
    assert.equal(sha256(got), sha256(want));
    return;
  }
  let at = 0;
  while (at < got.length && at < want.length && got[at] === want[at]) at++;
  assert.fail(
    `${what}: got ${got.length} bytes of ${want.length}, first difference at offset ${at}`,
  );
}

/** `n` numbered lines `<tag> 1\n` … `<tag> n\n`. */
const numbered = (tag: string, n: number): string =>
  Array.from({ length: n }, (_, i) => `${tag} ${i + 1}\n`).join('');

/** A shell loop writing `out i` to stdout and `err i` to stderr alternately, n times each. */
const interleave = (n: number): string =>
  `i=1; while [ $i -le ${n} ]; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); done`;

/** A short account of a CLI run for assertion messages (stderr as text, output sizes). */
const show = (r: BytesResult): string =>
  `exit ${r.code ?? r.signal}, stdout ${r.stdout.length} B, stderr ${JSON.stringify(r.stderr.toString('utf8').slice(-600))}`;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('byte-exact stdio through real microVMs', { skip: why, timeout: 1_800_000 }, () => {
  let dir: string;
  let tmp: string;
  let d: SpawnedDaemon;
  let image: string;
  let daemonPid: number;
  let detached: { run: BytesResult; execRightAfter: BytesResult };
  const vessel = (args: readonly string[], options?: BytesOptions): Promise<BytesResult> =>
    vesselBytes(dir, args, options);
  /** `vessel run --rm [flags]` of a small instance without network. */
  const runRm = (
    cmd: readonly string[],
    options?: BytesOptions,
    flags: readonly string[] = [],
  ): Promise<BytesResult> =>
    vessel(['run', '--rm', ...flags, '--network', 'none', '-m', '256m', image, '--', ...cmd], {
      timeoutMs: 240_000,
      ...options,
    });

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-stdio-'));
    tmp = path.join(dir, 'host-files');
    await fs.mkdir(tmp);
    await seedKernel(dir);
    d = await startDaemon(dir);
    daemonPid = d.child.pid!;
    const archive = path.join(tmp, 'busybox.tar');
    await writeDockerArchive(archive, await busyboxImage(), 'stdio/busybox:1');
    image = (await d.client.importImage(createReadStream(archive))).name;
    // `run -d` returns only once the instance is Running: an exec right after must work.
    const run = await vessel(
      [
        'run',
        '-d',
        '--name',
        'box',
        '--network',
        'none',
        image,
        '--',
        'sh',
        '-c',
        'while :; do sleep 1; done',
      ],
      { timeoutMs: 240_000 },
    );
    const execRightAfter = await vessel(['exec', 'box', 'true']);
    detached = { run, execRightAfter };
    assert.equal(run.code, 0, `run -d: ${show(run)}`);
  });

  after(async () => {
    if (d) {
      for (const i of await d.client.listInstances().catch(() => [])) {
        await d.client.deleteInstance(i.id).catch(() => undefined);
      }
      await d.stop();
    }
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('run -d returns once Running: exec right after it succeeds', () => {
    const { run, execRightAfter } = detached;
    assert.match(run.stdout.toString('latin1'), /^[0-9a-f]{8,}\n$/, show(run));
    assert.equal(execRightAfter.code, 0, `exec right after run -d: ${show(execRightAfter)}`);
    assert.equal(execRightAfter.stdout.length, 0);
  });

  test(
    'exec: 1-byte, 64 KiB and 3 MB blobs into the guest and back, sha256 both ways',
    { timeout: 300_000 },
    async () => {
      const blobs = [
        ...[0x00, 0x0a, 0x0d, 0xff, 0x04].map((b) => Buffer.from([b])),
        blob(64 * 1024),
        blob(3_000_000),
      ];
      for (const [i, data] of blobs.entries()) {
        const what = `blob ${i} (${data.length} B)`;
        const guestFile = `/tmp/blob-${i}`;
        const put = await vessel(['exec', '-i', 'box', 'sh', '-c', `cat > ${guestFile}`], {
          input: data,
        });
        assert.equal(put.code, 0, `${what} in: ${show(put)}`);
        assert.deepEqual(
          [put.stdout.length, put.stderr.length],
          [0, 0],
          `${what} in: ${show(put)}`,
        );
        const sum = await vessel(['exec', 'box', 'busybox', 'sha256sum', guestFile]);
        assert.equal(sum.stdout.toString('latin1'), `${sha256(data)}  ${guestFile}\n`, what);

        // Out: into a buffer, and for the largest also straight into a host file.
        const back = await vessel(['exec', 'box', 'cat', guestFile]);
        assert.equal(back.code, 0, `${what} out: ${show(back)}`);
        assert.equal(back.stderr.length, 0, `${what} out: ${show(back)}`);
        assertSameBytes(back.stdout, data, what);
      }
      const file = path.join(tmp, 'out-3mb');
      const fh = await fs.open(file, 'w');
      const toFile = await vessel(['exec', 'box', 'cat', `/tmp/blob-${blobs.length - 1}`], {
        stdoutFd: fh.fd,
      }).finally(() => fh.close());
      assert.equal(toFile.code, 0, show(toFile));
      assert.equal(await sha256File(file), sha256(blobs.at(-1)!));
    },
  );

  test(
    'exec: 100 MB out (made in the guest) and 100 MB in (made on the host), sha256 compared',
    { timeout: 600_000 },
    async () => {
      const made = await vessel(
        [
          'exec',
          'box',
          'sh',
          '-c',
          'head -c 100000000 /dev/urandom > /tmp/big && busybox sha256sum /tmp/big',
        ],
        { timeoutMs: 240_000 },
      );
      assert.equal(made.code, 0, show(made));
      const guestSum = /^([0-9a-f]{64}) {2}\/tmp\/big\n$/.exec(made.stdout.toString('latin1'))?.[1];
      assert.ok(guestSum, `sha256sum printed ${JSON.stringify(made.stdout.toString('latin1'))}`);
      const outFile = path.join(tmp, 'big-out');
      const out = await fs.open(outFile, 'w');
      const read = await vessel(['exec', 'box', 'cat', '/tmp/big'], {
        stdoutFd: out.fd,
        timeoutMs: 300_000,
      }).finally(() => out.close());
      assert.equal(read.code, 0, show(read));
      assert.equal(read.stderr.length, 0, show(read));
      assert.equal((await fs.stat(outFile)).size, 100_000_000);
      assert.equal(await sha256File(outFile), guestSum);
      await fs.rm(outFile);

      const data = blob(100_000_000);
      const inFile = path.join(tmp, 'big-in');
      await fs.writeFile(inFile, data);
      const inFh = await fs.open(inFile, 'r');
      const write = await vessel(
        [
          'exec',
          '-i',
          'box',
          'sh',
          '-c',
          'cat > /tmp/big-in && busybox sha256sum /tmp/big-in && rm /tmp/big /tmp/big-in',
        ],
        { stdinFd: inFh.fd, timeoutMs: 300_000 },
      ).finally(() => inFh.close());
      assert.equal(write.code, 0, show(write));
      assert.equal(write.stdout.toString('latin1'), `${sha256(data)}  /tmp/big-in\n`);
      await fs.rm(inFile);
    },
  );

  test(
    'SDK: commands.run keeps bytes exact with stdin, into a guest file and back',
    { timeout: 300_000 },
    async () => {
      const sdk = new Vessel({ dataDir: dir });
      try {
        const box = await Sandbox.connect('box', { vessel: sdk });
        for (const data of [Buffer.from([0xff]), blob(64 * 1024), blob(3_000_000)]) {
          const what = `${data.length} B`;
          const echo = await box.commands.run(['cat'], { stdin: data });
          assert.equal(echo.exitCode, 0, what);
          assert.equal(echo.stderrBytes.length, 0, what);
          assertSameBytes(echo.stdoutBytes, data, `${what} echoed`);
          const put = await box.commands.run(
            'cat > /tmp/sdk-blob && busybox sha256sum /tmp/sdk-blob',
            {
              stdin: data,
            },
          );
          assert.equal(put.stdout, `${sha256(data)}  /tmp/sdk-blob\n`, what);
          const back = await box.commands.run(['cat', '/tmp/sdk-blob']);
          assert.equal(back.exitCode, 0, what);
          assertSameBytes(back.stdoutBytes, data, `${what} read back`);
        }
      } finally {
        await sdk.close();
      }
    },
  );

  test(
    'run --rm -i IMG -- cat: 3 MB of binary stdin comes back byte for byte',
    { timeout: 300_000 },
    async () => {
      const data = blob(3_000_000);
      const r = await runRm(['cat'], { input: data, timeoutMs: 280_000 }, ['-i']);
      assert.equal(r.code, 0, show(r));
      assertSameBytes(r.stdout, data, `run -i cat: ${show(r)}`);
      assert.equal(r.stderr.length, 0, show(r));
    },
  );

  test('run: stdout and stderr apart, exact, and the exit code', { timeout: 300_000 }, async () => {
    const r = await runRm(['sh', '-c', 'echo to-err >&2; echo to-out; exit 4']);
    assert.equal(r.stdout.toString('latin1'), 'to-out\n');
    assert.equal(r.stderr.toString('latin1'), 'to-err\n');
    assert.equal(r.code, 4);
  });

  test(
    'interleaved writes: 2000 lines on each stream, each stream complete and in order',
    { timeout: 300_000 },
    async () => {
      const [viaExec, viaRun] = await Promise.all([
        vessel(['exec', 'box', 'sh', '-c', interleave(2000)]),
        runRm(['sh', '-c', interleave(2000)]),
      ]);
      for (const [what, r] of [
        ['exec', viaExec],
        ['run', viaRun],
      ] as const) {
        assert.equal(r.code, 0, `${what}: ${show(r)}`);
        assert.equal(r.stdout.toString('latin1'), numbered('out', 2000), `${what} stdout`);
        assert.equal(r.stderr.toString('latin1'), numbered('err', 2000), `${what} stderr`);
      }
    },
  );

  test(
    'run output has nothing from the guest init; logs has app and console apart',
    { timeout: 300_000 },
    async () => {
      const only = await runRm(['echo', 'only-this']);
      assert.equal(only.code, 0, show(only));
      assert.ok(only.stdout.equals(Buffer.from('only-this\n')), show(only));
      assert.doesNotMatch(only.stderr.toString('latin1'), /vessel-init|VESSEL-MARKER/);

      const named = await vessel(
        [
          'run',
          '--name',
          'logged',
          '--network',
          'none',
          '-m',
          '256m',
          image,
          '--',
          'sh',
          '-c',
          'echo out-1; echo err-1 >&2; echo out-2',
        ],
        { timeoutMs: 240_000 },
      );
      assert.equal(named.code, 0, show(named));
      assert.equal(named.stdout.toString('latin1'), 'out-1\nout-2\n');
      assert.equal(named.stderr.toString('latin1'), 'err-1\n');
      const logs = await vessel(['logs', 'logged']);
      assert.equal(logs.code, 0, show(logs));
      assert.equal(logs.stdout.toString('latin1'), 'out-1\nout-2\n', 'app log: stdout on stdout');
      assert.equal(logs.stderr.toString('latin1'), 'err-1\n', 'app log: stderr on stderr');
      const consoleLog = await vessel(['logs', '--source', 'console', 'logged']);
      assert.equal(consoleLog.code, 0, show(consoleLog));
      assert.match(
        consoleLog.stdout.toString('latin1'),
        /vessel-init: root filesystem is (erofs|ext4)/,
      );
      assert.equal((await vessel(['rm', 'logged'])).code, 0);
    },
  );

  test(
    'stdin: none without -i (no hang, nothing read); with -i until EOF',
    { timeout: 300_000 },
    async () => {
      // The CLI's own stdin stays open with bytes waiting: without -i the command must not get
      // them, and must not wait for an EOF that never comes.
      const held = Buffer.from('must-not-arrive\n');
      const execCat = await vessel(['exec', 'box', 'cat'], { holdStdin: held, timeoutMs: 60_000 });
      assert.equal(execCat.code, 0, show(execCat));
      assert.deepEqual([execCat.stdout.length, execCat.stderr.length], [0, 0], show(execCat));
      assert.ok(execCat.ms < 30_000, `exec cat took ${execCat.ms} ms`);
      const runCat = await runRm(['cat'], { holdStdin: held });
      assert.equal(runCat.code, 0, show(runCat));
      assert.equal(runCat.stdout.length, 0, show(runCat));

      const abc = await vessel(['exec', '-i', 'box', 'cat'], { input: Buffer.from('abc') });
      assert.equal(abc.code, 0, show(abc));
      assert.equal(abc.stdout.toString('latin1'), 'abc');
    },
  );

  test(
    'exec exit codes: exit N, signals, missing and non-executable programs',
    { timeout: 300_000 },
    async () => {
      const cases: [string[], number][] = [
        [['sh', '-c', 'exit 3'], 3],
        [['sh', '-c', 'exit 255'], 255],
        [['sh', '-c', 'kill -9 $$'], 137],
        [['sh', '-c', 'kill -TERM $$'], 143],
      ];
      for (const [argv, want] of cases) {
        const r = await vessel(['exec', 'box', ...argv]);
        assert.equal(r.code, want, `${argv.join(' ')}: ${show(r)}`);
      }
      const made = await vessel([
        'exec',
        'box',
        'sh',
        '-c',
        'printf "#!/bin/sh\\necho hi\\n" > /tmp/noexec.sh && chmod 644 /tmp/noexec.sh',
      ]);
      assert.equal(made.code, 0, show(made));
      const failures: [string, number, RegExp][] = [
        ['/bin/nope', 127, /\/bin\/nope/],
        ['/etc/passwd', 126, /\/etc\/passwd/],
        ['/tmp/noexec.sh', 126, /\/tmp\/noexec\.sh/],
      ];
      for (const [program, want, named] of failures) {
        const r = await vessel(['exec', 'box', program]);
        assert.equal(r.code, want, `${program}: ${show(r)}`);
        assert.equal(r.stdout.length, 0, `${program}: nothing on stdout`);
        assert.match(r.stderr.toString('utf8'), named);
      }
    },
  );

  test(
    'run exit codes: exit N, signals, missing and non-executable programs; the instance records 127',
    { timeout: 600_000 },
    async () => {
      const cases: [string[], number, RegExp | null][] = [
        [['sh', '-c', 'exit 3'], 3, null],
        [['sh', '-c', 'exit 255'], 255, null],
        [['sh', '-c', 'kill -9 $$'], 137, null],
        [['sh', '-c', 'kill -TERM $$'], 143, null],
        [['/etc/passwd'], 126, /\/etc\/passwd/],
      ];
      // Three at a time: two cores, and TCG boots are CPU-bound.
      for (let i = 0; i < cases.length; i += 3) {
        const batch = cases.slice(i, i + 3);
        const results = await Promise.all(batch.map(([cmd]) => runRm(cmd)));
        for (const [j, r] of results.entries()) {
          const [cmd, want, named] = batch[j]!;
          assert.equal(r.code, want, `run ${cmd.join(' ')}: ${show(r)}`);
          assert.equal(r.stdout.length, 0, `run ${cmd.join(' ')}: ${show(r)}`);
          if (named) assert.match(r.stderr.toString('utf8'), named);
        }
      }
      const nope = await vessel(
        ['run', '--name', 'nope', '--network', 'none', '-m', '256m', image, '--', '/bin/nope'],
        { timeoutMs: 240_000 },
      );
      assert.equal(nope.code, 127, show(nope));
      assert.equal(nope.stdout.length, 0, show(nope));
      assert.match(nope.stderr.toString('utf8'), /\/bin\/nope/);
      const inspect = await vessel(['inspect', 'nope']);
      assert.equal(inspect.code, 0, show(inspect));
      const rec = JSON.parse(inspect.stdout.toString('utf8')) as {
        state: string;
        exit_code: number | null;
      };
      assert.deepEqual([rec.state, rec.exit_code], ['Stopped', 127]);
      const ps = await vessel(['--json', 'ps', '-a']);
      const listed = JSON.parse(ps.stdout.toString('utf8')) as {
        name: string;
        exit_code: number | null;
      }[];
      assert.equal(listed.find((i) => i.name === 'nope')?.exit_code, 127);
      assert.deepEqual(
        listed.map((i) => i.name).sort(),
        ['box', 'nope'],
        'the --rm instances are gone',
      );
      assert.equal((await vessel(['rm', 'nope'])).code, 0);
    },
  );

  test(
    '1 GiB out of exec to a slow reader: exact count, daemon and CLI memory bounded',
    { timeout: 900_000 },
    async (t) => {
      const base = statusKiB(daemonPid, 'VmRSS')!;
      const daemonRss = sampleMemory(daemonPid, 'VmRSS', 100);
      const t0 = Date.now();
      // dd, not head: busybox head reads /dev/zero in small pieces and under TCG would take
      // longer than the transfer itself (about 20 MB/s in the guest alone).
      const child = spawn(
        process.execPath,
        [BIN, '--data-dir', dir, 'exec', 'box', 'dd', 'if=/dev/zero', 'bs=65536', 'count=16384'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const cliHwm = sampleMemory(child.pid!, 'VmHWM', 100);
      let count = 0;
      let stderr = '';
      let pause: { before: number; after: number } | undefined;
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString('latin1')));
      child.stdout.on('data', (c: Buffer) => {
        count += c.length;
        if (pause || count < 100 * MiB) return;
        // A slow reader: nothing read for 5 s after the first 100 MiB.
        pause = { before: statusKiB(daemonPid, 'VmRSS')!, after: 0 };
        child.stdout.pause();
        setTimeout(() => {
          pause!.after = statusKiB(daemonPid, 'VmRSS')!;
          child.stdout.resume();
        }, 5000);
      });
      const killer = setTimeout(() => child.kill('SIGKILL'), 850_000);
      const code = await new Promise<number | null>((resolve) =>
        child.on('close', (c) => resolve(c)),
      );
      clearTimeout(killer);
      const secs = (Date.now() - t0) / 1000;
      const peakDaemon = daemonRss.stop();
      const peakCli = cliHwm.stop();
      const afterRss = statusKiB(daemonPid, 'VmRSS')!;
      const report = `1 GiB out in ${secs.toFixed(1)} s; daemon RSS ${base} KiB before, peak ${peakDaemon} (+${peakDaemon - base}), ${afterRss} after; during the 5 s pause ${pause?.before} → ${pause?.after}; CLI peak ${peakCli} KiB`;
      t.diagnostic(report);
      assert.equal(code, 0, `${report}; stderr ${stderr}`);
      assert.equal(count, GiB, report);
      assert.match(stderr, /16384\+0 records out/, 'dd’s report on stderr, apart from the data');
      assert.ok(daemonRss.samples > 10, 'the daemon was sampled');
      assert.ok(peakDaemon - base < DAEMON_GROWTH_BOUND_KIB, report);
      assert.ok(peakCli < CLI_PEAK_BOUND_KIB, report);
    },
  );

  test(
    '1 GiB into exec -i: exact count in the guest, daemon and CLI memory bounded',
    { timeout: 900_000 },
    async (t) => {
      const base = statusKiB(daemonPid, 'VmRSS')!;
      const daemonRss = sampleMemory(daemonPid, 'VmRSS', 100);
      const chunk = Buffer.alloc(MiB, 0x5a);
      const input = Readable.from(
        (function* () {
          for (let i = 0; i < 1024; i++) yield chunk;
        })(),
      );
      const r = await vessel(['exec', '-i', 'box', 'sh', '-c', 'wc -c'], {
        input,
        timeoutMs: 850_000,
      });
      const peakDaemon = daemonRss.stop();
      const afterRss = statusKiB(daemonPid, 'VmRSS')!;
      const report = `1 GiB in in ${(r.ms / 1000).toFixed(1)} s; daemon RSS ${base} KiB before, peak ${peakDaemon} (+${peakDaemon - base}), ${afterRss} after; CLI peak ${r.peakRssKiB} KiB`;
      t.diagnostic(report);
      assert.equal(r.code, 0, `${report}; ${show(r)}`);
      assert.equal(r.stdout.toString('latin1').trim(), String(GiB), report);
      assert.ok(peakDaemon - base < DAEMON_GROWTH_BOUND_KIB, report);
      assert.ok(r.peakRssKiB < CLI_PEAK_BOUND_KIB, report);
    },
  );

  test(
    'a stopped reader holds the command back in the guest; every byte arrives after',
    { timeout: 300_000 },
    async (t) => {
      // The reader: a host `wc -c` on the CLI's stdout, stopped with SIGSTOP before any byte.
      const reader = spawn('/usr/bin/wc', ['-c'], { stdio: ['pipe', 'pipe', 'ignore'] });
      reader.kill('SIGSTOP');
      let counted = '';
      reader.stdout.on('data', (c: Buffer) => (counted += c.toString('latin1')));
      const readerDone = new Promise<void>((resolve) => reader.on('close', () => resolve()));
      const base = statusKiB(daemonPid, 'VmRSS')!;
      const daemonRss = sampleMemory(daemonPid, 'VmRSS', 100);
      const cli = spawn(
        process.execPath,
        [
          BIN,
          '--data-dir',
          dir,
          'exec',
          'box',
          'sh',
          '-c',
          'head -c 50000000 /dev/zero; echo done >&2',
        ],
        { stdio: ['ignore', reader.stdin, 'pipe'] },
      );
      reader.stdin.destroy(); // the CLI holds the pipe's write end now; wc sees EOF when it exits
      let stderr = '';
      cli.stderr.on('data', (c: Buffer) => (stderr += c.toString('latin1')));
      const cliDone = new Promise<number | null>((resolve) => cli.on('close', (c) => resolve(c)));
      try {
        // Unstopped, the 50 MB take about 3 s here; give it 10 s stopped.
        await sleep(10_000);
        // The guest's process names (busybox sh runs `head` as a fork without exec, so its
        // command line is the shell's; its name is `head`).
        const ps = await vessel(['exec', 'box', 'sh', '-c', 'cat /proc/[0-9]*/comm']);
        const during = daemonRss.max;
        assert.match(
          ps.stdout.toString('latin1'),
          /^head$/m,
          'the writer in the guest is blocked, not finished',
        );
        assert.equal(stderr, '', 'the command has not finished while its reader is stopped');
        assert.ok(
          during - base < STOPPED_GROWTH_BOUND_KIB,
          `daemon RSS ${base} KiB → ${during} KiB while the reader was stopped`,
        );
        t.diagnostic(`stopped reader: daemon RSS ${base} KiB → max ${during} KiB`);
      } finally {
        reader.kill('SIGCONT');
      }
      const code = await cliDone;
      await readerDone;
      daemonRss.stop();
      assert.equal(code, 0, stderr);
      assert.equal(stderr, 'done\n');
      assert.equal(counted.trim(), '50000000');
    },
  );

  test(
    'rm of a running instance exits 5 naming -f; rm -f removes it',
    { timeout: 120_000 },
    async () => {
      const rm = await vessel(['rm', 'box']);
      assert.equal(rm.code, 5, show(rm));
      assert.match(rm.stderr.toString('utf8'), /-f/);
      assert.equal((await vessel(['exec', 'box', 'true'])).code, 0, 'still running');
      const force = await vessel(['rm', '-f', 'box']);
      assert.equal(force.code, 0, show(force));
      const gone = await vessel(['inspect', 'box']);
      assert.equal(gone.code, 4, show(gone));
    },
  );
});
