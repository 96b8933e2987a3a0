// The image catalog (issue 12): on a host with nothing pulled, `vessel run -- CMD` builds the
// default golden image (debian-bookworm, mmdebstrap from the host's apt sources) with its
// progress on stderr, then runs CMD in it. Two clients asking at once share one build.
// mmdebstrap downloads from the host's apt mirror: about a minute here. The image has git, so
// the workspace flow (issue 13) is tested here too: `vessel run ./repo -- CMD` and export.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import type { VesselClient } from '../../src/client/index.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason(['/usr/bin/mmdebstrap']);

describe(
  'the image catalog: golden images built on this host',
  { skip: why, timeout: 900_000 },
  () => {
    let dir: string;
    let d: SpawnedDaemon;
    let c: VesselClient;

    before(async () => {
      dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-catalog-it-'));
      await seedKernel(dir);
      d = await startDaemon(path.join(dir, 'data'));
      c = d.client;
    });

    after(async () => {
      // A failed test may leave its kept instance: the daemon's stop leaves VMs running.
      for (const i of (await c?.listInstances().catch(() => [])) ?? [])
        await c.deleteInstance(i.id).catch(() => undefined);
      await d?.stop();
      if (dir) await fs.rm(dir, { recursive: true, force: true });
    });

    test('an unknown catalog name is not_found and lists the known ones', async () => {
      await assert.rejects(c.buildCatalogImage('nope'), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'not_found');
        assert.match(err.message, /debian-bookworm/);
        return true;
      });
      const [entry] = await c.listCatalog();
      assert.equal(entry?.name, 'debian-bookworm');
      assert.equal(entry?.default, true);
      assert.equal(entry?.local, false);
    });

    test('vessel run -- CMD builds the default image once, then runs CMD in it', async () => {
      // A second client asks for the same image while the CLI builds it: one build for both.
      const cli = d.cli(
        [
          'run',
          '--rm',
          '--',
          'sh',
          '-c',
          'cat /etc/debian_version; python3 -c "print(6*7)"; git --version; ' +
            'curl --version | head -n1 | cut -d" " -f1; test -s /etc/ssl/certs/ca-certificates.crt && echo certs; pwd',
        ],
        600_000,
      );
      let shared: string | undefined;
      for (let i = 0; i < 100 && shared === undefined; i++) {
        const entry = (await c.listCatalog())[0]!;
        shared = entry.build_id ?? undefined;
        if (shared === undefined) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(shared, 'the CLI started a catalog build');
      const again = await c.buildCatalogImage('debian-bookworm');
      assert.equal(again.id, shared, 'asking again while it builds returns the same build');
      const r = await cli;
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.match(lines[0] ?? '', /^12\.\d+$/);
      assert.deepEqual(lines.slice(1), ['42', lines[2], 'curl', 'certs', '/root']);
      assert.match(lines[2] ?? '', /^git version 2\./);
      assert.match(r.stderr, /debian-bookworm is not built yet/);
      assert.match(r.stderr, /mmdebstrap/);
      const builds = await c.listBuilds();
      assert.equal(builds.length, 1, 'one build served both clients');
      assert.equal(builds[0]?.status, 'ready');
      const [entry] = await c.listCatalog();
      assert.equal(entry?.local, true);
      const img = await c.getImage(entry.image);
      assert.equal(img.digest, entry?.digest);
      assert.equal(img.source, 'build');
      // Built once: the next run starts from the local image, with no build.
      const second = await d.cli(
        ['run', '--rm', 'debian-bookworm', '--', 'echo', 'again'],
        300_000,
      );
      assert.equal(second.code, 0, second.stderr);
      assert.equal(second.stdout, 'again\n');
      assert.doesNotMatch(second.stderr, /not built yet/);
      assert.equal((await c.listBuilds()).length, 1);
    });

    test('a build FROM debian-bookworm (merged /usr): COPY into /bin/ keeps /bin a link', async () => {
      const ctx = path.join(dir, 'usr-ctx');
      await fs.mkdir(ctx);
      await fs.writeFile(path.join(ctx, 'tool'), '#!/bin/sh\necho tool-ran\n', { mode: 0o755 });
      await fs.writeFile(
        path.join(ctx, 'Dockerfile'),
        'FROM debian-bookworm\nCOPY tool /bin/\nWORKDIR /var/run/app\n' +
          'RUN readlink /bin && tool && pwd -P > /where\n' +
          'CMD ["sh", "-c", "readlink /bin; cat /where; ls /usr/bin/tool; bash -c \'echo bash-ok\'"]\n',
      );
      const b = await d.cli(['build', '-t', 'usr/test:1', ctx], 300_000);
      assert.equal(b.code, 0, `${b.stdout}\n${b.stderr}`);
      assert.match(b.stdout, /tool-ran/);
      const r = await d.cli(['run', '--rm', 'usr/test:1'], 300_000);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split('\n'), [
        'usr/bin',
        '/run/app',
        '/usr/bin/tool',
        'bash-ok',
      ]);
    });

    test('vessel run ./repo -- CMD: the repository with its history, the changes back as a patch', async () => {
      const repo = path.join(dir, 'repo');
      await fs.mkdir(repo);
      const git = (...args: string[]): string =>
        execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8' });
      git('init', '-q', '-b', 'main');
      git('config', 'user.email', 't@example.com');
      git('config', 'user.name', 't');
      await fs.writeFile(path.join(repo, 'README'), 'hello\n');
      await fs.writeFile(path.join(repo, 'old.txt'), 'old\n');
      await fs.writeFile(path.join(repo, 'run.sh'), '#!/bin/sh\necho run\n', { mode: 0o755 });
      await fs.symlink('README', path.join(repo, 'link'));
      await fs.writeFile(path.join(repo, '.gitignore'), '*.log\n');
      git('add', '-A');
      git('commit', '-qm', 'first');
      git('tag', '-a', 'v1', '-m', 'an annotated tag');
      git('branch', 'feature');
      await fs.appendFile(path.join(repo, 'README'), 'two\n');
      git('commit', '-qam', 'second');
      const head = git('rev-parse', 'HEAD').trim();
      await fs.writeFile(path.join(repo, 'notes.txt'), 'untracked\n');
      await fs.writeFile(path.join(repo, 'debug.log'), 'ignored\n');
      const blob = randomBytes(200_000);
      const blobSha = createHash('sha256').update(blob).digest('hex');
      const hostDir = path.join(dir, 'host');
      await fs.mkdir(hostDir);
      await fs.writeFile(path.join(hostDir, 'blob.bin'), blob);
      const patch = path.join(dir, 'changes.patch');
      const r = await d.cli(
        [
          'run',
          '--keep',
          '--name',
          'ws-run',
          '--export',
          patch,
          '-v',
          `${hostDir}:/host:ro`,
          repo,
          '--',
          'sh',
          '-c',
          'git rev-parse HEAD; git branch --show-current; git log --format=%s | tr "\\n" " "; echo; ' +
            'git status --short | tr "\\n" " "; echo; test -x run.sh && readlink link; ' +
            'test -e debug.log || echo no-log; pwd; git describe --tags HEAD~1; ' +
            'git for-each-ref --format="%(refname:short)" refs/heads | tr "\\n" " "; echo; ' +
            'echo guest >> README; rm old.txt; cp /host/blob.bin blob.bin; git add blob.bin; ' +
            'git -c user.email=g@example.com -c user.name=g commit -qm guest; echo new > new.txt; git status --short | wc -l',
        ],
        300_000,
      );
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trim().split('\n');
      assert.deepEqual(lines.slice(0, 9), [
        head,
        'main',
        'second first ',
        '?? notes.txt ',
        'README',
        'no-log',
        '/work',
        'v1',
        'feature main ',
      ]);
      assert.equal(
        lines[9]?.trim(),
        '4',
        `the guest index and tree are as the command left them: ${r.stdout}`,
      );
      assert.match(r.stderr, /prepared \/work: \d+ files, .* HEAD [0-9a-f]{12} \(main\)/);
      // The patch is against the prepared HEAD: a clean clone at HEAD takes it, bytes exact.
      const clone = path.join(dir, 'clone');
      execFileSync('git', ['clone', '-q', repo, clone]);
      execFileSync('git', ['-C', clone, 'apply', '--binary', patch]);
      const got = await fs.readFile(path.join(clone, 'blob.bin'));
      assert.equal(createHash('sha256').update(got).digest('hex'), blobSha);
      assert.equal(await fs.readFile(path.join(clone, 'README'), 'utf8'), 'hello\ntwo\nguest\n');
      assert.equal(await fs.readFile(path.join(clone, 'new.txt'), 'utf8'), 'new\n');
      assert.equal(await fs.readFile(path.join(clone, 'notes.txt'), 'utf8'), 'untracked\n');
      await assert.rejects(fs.access(path.join(clone, 'old.txt')));
      // --apply takes only the guest's changes onto the host repository, all or nothing.
      const statusBefore = git('status', '--short');
      const applied = await d.cli(['workspace', 'export', 'ws-run', '--apply', repo]);
      assert.equal(applied.code, 0, applied.stderr);
      assert.equal(await fs.readFile(path.join(repo, 'README'), 'utf8'), 'hello\ntwo\nguest\n');
      assert.equal(await fs.readFile(path.join(repo, 'notes.txt'), 'utf8'), 'untracked\n');
      assert.notEqual(git('status', '--short'), statusBefore);
      const statusApplied = git('status', '--short');
      const again = await d.cli(['workspace', 'export', 'ws-run', '--apply', repo]);
      assert.equal(again.code, 5, 'a patch that does not apply is a conflict');
      assert.match(again.stderr, /does not apply .*nothing was changed/s);
      assert.equal(git('status', '--short'), statusApplied, 'nothing changed on a conflict');
      await c.deleteInstance('ws-run');
    });
  },
);
