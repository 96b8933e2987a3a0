// Builds end to end (issue 12): a multi-stage Dockerfile FROM an image in the local test
// registry, built with the real CLI (`vessel build`): COPY with a glob and --chown,
// .dockerignore, COPY --from a stage, ENV/ARG/WORKDIR/USER/ENTRYPOINT/CMD/EXPOSE/LABEL, and a
// RUN that deletes a file of the base (a whiteout in the guest's layer). The image then runs
// and its output proves each instruction took effect. A rebuild runs no step; a change to one
// COPYed file reruns only from that step; a failing RUN fails the build with its exit code and
// output and leaves no builder VM behind. RUN steps boot builder microVMs (TCG: seconds each).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Build, BuildEvent, VesselClient } from '../../src/client/index.js';
import { pushBusybox } from '../helpers/oci-builder.js';
import { MULTISTAGE_DOCKERFILE, writeMultistageContext } from '../helpers/build-fixtures.js';
import { vmSkipReason } from '../helpers/prereqs.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { seedKernel, startDaemon, type SpawnedDaemon } from '../helpers/vm-daemon.js';

const why = await vmSkipReason(['/usr/bin/skopeo']);

describe('builds through builder microVMs', { skip: why, timeout: 1_200_000 }, () => {
  let dir: string;
  let ctx: string;
  let registry: TestRegistry;
  let d: SpawnedDaemon;
  let c: VesselClient;
  let base: string;

  const build = async (
    args: string[],
  ): Promise<{ code: number; stdout: string; stderr: string; build: Build }> => {
    const r = await d.cli(['build', ...args], 900_000);
    const list = await c.listBuilds();
    return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr, build: list.at(-1)! };
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-builds-it-'));
    await seedKernel(dir);
    registry = await startRegistry();
    base = await pushBusybox(registry.host, dir);
    d = await startDaemon(path.join(dir, 'data'));
    c = d.client;
    ctx = path.join(dir, 'ctx');
    await writeMultistageContext(ctx);
    await fs.writeFile(path.join(ctx, 'Dockerfile'), MULTISTAGE_DOCKERFILE);
  });

  after(async () => {
    await d?.stop();
    await registry?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('a multi-stage build: every instruction takes effect in the image', async () => {
    const r = await build(['-t', 'built/app:1', '--build-arg', `BASE=${base}`, ctx]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.equal(r.build.status, 'ready');
    assert.match(r.stdout, /=> \[\d+\/\d+\] RUN rm \/bin\/vi/);
    const img = await c.getImage('built/app:1');
    assert.equal(img.source, 'build');
    assert.equal(img.digest, r.build.image_digest);
    assert.deepEqual(img.entrypoint, ['/bin/sh', '-c']);
    assert.equal(img.user, '1000:1000');
    assert.equal(img.working_dir, '/app');
    assert.equal(img.env.APP_GREETING, 'hello');
    assert.deepEqual(img.exposed_ports, ['8080/tcp']);
    assert.equal(img.env.GREETING, undefined, 'an ARG is not in the image env');
    // The image runs; its output proves what each step did.
    const run = await d.cli(['run', '--rm', 'built/app:1'], 300_000);
    assert.equal(run.code, 0, run.stderr);
    assert.deepEqual(run.stdout.trim().split('\n'), [
      'built from alpha', // COPY glob + RUN in the first stage, COPY --from
      '1000', // --chown as the RUN saw it
      'arg=hello', // ARG default reached RUN
      'env=hello', // ENV expanded from the ARG
      '1000', // USER
      '/app', // WORKDIR from ENV
      'a.txt', // COPY dir/: contents, .dockerignore kept secret.txt out
      'b.txt',
      '1000', // --chown on a COPYed file
      'vi-gone', // RUN rm of a base file: a whiteout
      'data-writable',
    ]);
    // Nothing of the build is left running, and no intermediate image is listed.
    const vms = await c.listInstances();
    assert.deepEqual(
      vms.filter((v) => v.tags?.['vessel.build']),
      [],
    );
    const images = await c.listImages();
    assert.deepEqual(
      images.filter((i) => i.name.startsWith('vessel-build.local/')).map((i) => i.name),
      [],
    );
  });

  test('a rebuild of the unchanged Dockerfile runs no step', async () => {
    const t0 = Date.now();
    const r = await build(['-t', 'built/app:2', '--build-arg', `BASE=${base}`, ctx]);
    assert.equal(r.code, 0, r.stderr);
    const prov = r.build.provenance as { steps_run?: number; steps_cached?: number };
    assert.equal(prov.steps_run, 0, r.stdout);
    // COPY, RUN, WORKDIR (/src made) in the builder; WORKDIR (/app), COPY --from, COPY, RUN.
    assert.equal(prov.steps_cached, 7);
    assert.equal(r.build.builder_instance_id, null);
    const first = (await c.getImage('built/app:1')).digest;
    const second = (await c.getImage('built/app:2')).digest;
    assert.ok(second, 'rebuilt image has a digest');
    assert.equal(second, first, 'a fully cached rebuild makes the same image');
    assert.ok(Date.now() - t0 < 120_000);
  });

  test('changing one COPYed file reruns only from that step', async () => {
    await fs.writeFile(path.join(ctx, 'src', 'b.txt'), 'beta two');
    const r = await build(['-t', 'built/app:3', '--build-arg', `BASE=${base}`, ctx]);
    assert.equal(r.code, 0, r.stderr);
    const status = r.build.steps.map((s) => `${s.status} ${s.text.split(' ')[0]}`);
    // builder: FROM, WORKDIR, COPY (a*.txt: unchanged), RUN; final: FROM, ARG, ENV, WORKDIR,
    // COPY --from (cached), COPY src/ (b.txt changed: runs), RUN (after it: runs), ...
    const prov = r.build.provenance as { steps_run?: number; steps_cached?: number };
    assert.equal(prov.steps_run, 2, status.join('\n'));
    assert.equal(prov.steps_cached, 5, status.join('\n'));
  });

  test('a failing RUN fails the build with its exit code and output; no builder VM stays', async () => {
    const bad = path.join(dir, 'bad');
    await fs.mkdir(bad);
    await fs.writeFile(
      path.join(bad, 'Dockerfile'),
      `FROM ${base}\nRUN echo first-line && echo about-to-fail >&2 && exit 3\nRUN echo never\n`,
    );
    const r = await build(['-t', 'built/bad:1', bad]);
    assert.notEqual(r.code, 0);
    assert.equal(r.build.status, 'failed');
    assert.equal(r.build.exit_code, 3);
    assert.match(r.build.error ?? '', /exited with code 3/);
    assert.match(r.build.error ?? '', /about-to-fail/);
    assert.match(r.stderr, /about-to-fail/);
    assert.deepEqual(
      r.build.steps.map((s) => s.status),
      ['done', 'failed', 'pending'],
    );
    const vms = await c.listInstances();
    assert.deepEqual(
      vms.filter((v) => v.tags?.['vessel.build']),
      [],
    );
    await assert.rejects(c.getImage('built/bad:1'));
  });

  test('a Dockerfile error is refused at once, naming the line', async () => {
    const bad = path.join(dir, 'bad2');
    await fs.mkdir(bad);
    await fs.writeFile(path.join(bad, 'Dockerfile'), `FROM ${base}\nHEALTHCHECK CMD true\n`);
    const r = await d.cli(['build', '-t', 'built/bad:2', bad]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /line 2/);
    assert.match(r.stderr, /HEALTHCHECK/);
  });

  test('a build posted by curl (multipart) and cancelled with DELETE stops its builder VM', async () => {
    const slow = path.join(dir, 'slow');
    await fs.mkdir(slow);
    await fs.writeFile(
      path.join(slow, 'Dockerfile'),
      `FROM ${base}\nRUN echo started-sleeping && sleep 600\n`,
    );
    const tarFile = path.join(dir, 'slow.tar');
    await promisify(execFile)('tar', ['-C', slow, '-cf', tarFile, '.']);
    // curl's multipart encoder, not ours: the request is shaped by a third party.
    const { stdout } = await promisify(execFile)('curl', [
      '-sS',
      '--unix-socket',
      d.socket,
      '-F',
      'image=built/slow:1',
      '-F',
      `source=@${tarFile};type=application/x-tar`,
      'http://vessel/builds',
    ]);
    const created = JSON.parse(stdout) as Build;
    assert.ok(['queued', 'building'].includes(created.status), stdout);
    // Follow the events until the RUN's own output shows, then cancel mid-step.
    const events: BuildEvent[] = [];
    const stream = c.buildEvents(created.id)[Symbol.asyncIterator]();
    for (;;) {
      const next = await stream.next();
      if (next.done) break;
      events.push(next.value);
      if (next.value.type === 'log' && next.value.content?.trim() === 'started-sleeping') break;
    }
    assert.ok(
      events.some((e) => e.content?.trim() === 'started-sleeping'),
      'the RUN step ran in its builder VM',
    );
    assert.ok((await c.getBuild(created.id)).builder_instance_id);
    const t0 = Date.now();
    await c.cancelBuild(created.id);
    assert.equal((await c.getBuild(created.id)).status, 'cancelled');
    assert.ok(Date.now() - t0 < 60_000, 'cancel does not wait for the step');
    for (;;) {
      const next = await stream.next();
      if (next.done) break;
      events.push(next.value);
    }
    assert.equal(events.at(-1)?.status, 'cancelled');
    const vms = await c.listInstances();
    assert.deepEqual(
      vms.filter((v) => v.tags?.['vessel.build']),
      [],
    );
    await assert.rejects(c.getImage('built/slow:1'));
  });
});
