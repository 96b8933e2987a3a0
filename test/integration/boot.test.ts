// Real microVMs under QEMU (TCG here): image → erofs/ext4 disk → kernel + initramfs with
// vessel-init → Running only after the boot markers and the agent's hello → exec → exit code.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import fs from 'node:fs/promises';
import path from 'node:path';
import { InstanceManager } from '../../src/instances/index.js';
import { busyboxImage, writeDockerArchive } from '../helpers/oci-builder.js';
import {
  makeImageEnv,
  makeInstanceManager,
  type ImageEnv,
  waitForStates,
} from '../helpers/image-env.js';
import { appLog } from '../helpers/app-log.js';
import { vmSkipReason } from '../helpers/prereqs.js';

const why = await vmSkipReason();

function managerFor(env: ImageEnv): InstanceManager {
  return makeInstanceManager(env, { tscKhz: hostKhz(), bootTimeoutMs: 90_000 });
}

function hostKhz(): number {
  const m = /^cpu MHz\s*:\s*([\d.]+)/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
  return Math.round(Number(m?.[1] ?? '2000') * 1000);
}

async function collect(s: NodeJS.ReadableStream): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString();
}

describe('boot real microVMs', { skip: why }, () => {
  let env: ImageEnv;
  let im: InstanceManager;
  let image: string;
  const archive = path.join('/tmp', `vessel-boot-${process.pid}.tar`);

  before(async () => {
    env = await makeImageEnv();
    await writeDockerArchive(archive, await busyboxImage(), 'boot/busybox:1');
    image = (
      await env.manager.waitForReady((await env.manager.import(createReadStream(archive))).name)
    ).name;
    im = managerFor(env);
    await im.init();
  });

  after(async () => {
    for (const i of im?.list() ?? []) await im.delete(i.id);
    await env?.close();
    await fs.rm(archive, { force: true });
  });

  test('run: output reaches the app log without markers, the exit code comes back, Running only after agent-ready', async () => {
    let serialAtRunning: string | undefined;
    const off = im.subscribe((e) => {
      if (e.type === 'state' && e.instance.state === 'Running' && e.instance.name === 'echo') {
        serialAtRunning = readFileSync(env.paths.instanceFile(e.id, 'vmm/serial.log'), 'utf8');
      }
    });
    const idSeen = (
      await im.create({
        image,
        name: 'echo',
        cmd: ['/bin/sh', '-c', 'echo hello from the vm; exit 3'],
      })
    ).id;
    const done = await waitForStates(im, idSeen, ['Stopped']);
    off();
    assert.equal(done.exit_code, 3);
    assert.equal(done.accel, 'tcg');
    assert.ok(
      serialAtRunning?.includes('VESSEL-MARKER agent-ready'),
      'Running was reported after the agent-ready marker',
    );
    // The app log holds the command's bytes and nothing else; init's messages are the console's.
    const app = appLog(im.logPath(idSeen, 'app'));
    assert.equal(app.stdout, 'hello from the vm\n');
    assert.equal(app.stderr, '');
    const consoleLog = readFileSync(im.logPath(idSeen, 'console'), 'utf8');
    assert.match(consoleLog, /root filesystem is erofs/);
    assert.doesNotMatch(consoleLog, /VESSEL-MARKER/);
  });

  test('exec: output and exit codes, stdin, a tty, two at once, a missing program', async () => {
    await im.create({ image, name: 'svc', cmd: ['/bin/sh', '-c', 'while true; do sleep 1; done'] });
    await waitForStates(im, 'svc', ['Running']);
    const one = await im.exec('svc', { argv: ['/bin/sh', '-c', 'echo out; echo err >&2; exit 5'] });
    const [out, err, status] = await Promise.all([
      collect(one.stdout),
      collect(one.stderr),
      one.result,
    ]);
    assert.deepEqual([out, err, status.code], ['out\n', 'err\n', 5]);

    // Relative names resolve through the instance's PATH, like docker exec.
    const cat = await im.exec('svc', { argv: ['cat'], stdin: true });
    cat.stdin.end('piped through stdin');
    assert.equal(await collect(cat.stdout), 'piped through stdin');
    assert.equal((await cat.result).code, 0);

    const tty = await im.exec('svc', {
      argv: ['sh', '-c', 'tty; stty size'],
      tty: true,
      rows: 30,
      cols: 100,
    });
    assert.match(await collect(tty.stdout), /\/dev\/pts\/\d+\r\n30 100/);
    assert.equal((await tty.result).code, 0);

    const a = await im.exec('svc', { argv: ['/bin/sh', '-c', 'sleep 1; echo a'] });
    const b = await im.exec('svc', { argv: ['/bin/sh', '-c', 'echo b'] });
    const [ra, rb] = await Promise.all([collect(a.stdout), collect(b.stdout)]);
    assert.deepEqual([ra, rb], ['a\n', 'b\n']);

    const missing = await im.exec('svc', { argv: ['/no/such/program'] });
    await assert.rejects(missing.result, /not found/);
  });

  test('the writable overlay persists across stop and start', async () => {
    const w = await im.exec('svc', { argv: ['/bin/sh', '-c', 'echo kept > /root/state && sync'] });
    assert.equal((await w.result).code, 0);
    await im.stop('svc', { timeoutMs: 5000 });
    assert.equal(im.get('svc').state, 'Stopped');
    await im.start('svc');
    await waitForStates(im, 'svc', ['Running']);
    const r = await im.exec('svc', { argv: ['cat', '/root/state'] });
    assert.equal(await collect(r.stdout), 'kept\n');
    const id = im.get('svc').id;
    await fs.access(env.paths.instanceDir(id));
    await im.delete('svc');
    await assert.rejects(fs.access(env.paths.instanceDir(id)), 'delete removes the instance files');
  });

  test('output without a final newline keeps the exit code (the marker still starts a line)', async () => {
    const inst = await im.create({ image, cmd: ['/bin/sh', '-c', 'printf no-newline; exit 9'] });
    const done = await waitForStates(im, inst.id, ['Stopped']);
    assert.equal(done.exit_code, 9);
    assert.equal(appLog(im.logPath(inst.id, 'app')).stdout, 'no-newline');
    await im.delete(inst.id);
  });

  test('a missing entrypoint exits 127 with the reason, as a shell would', async () => {
    await im.create({ image, name: 'broken', cmd: ['/does/not/exist'] });
    const done = await waitForStates(im, 'broken', ['Stopped']);
    assert.equal(done.exit_code, 127);
    assert.equal(done.state_error, null, 'the boot itself worked');
    assert.match(done.exit_message ?? '', /command not found.*\/does\/not\/exist/);
    assert.deepEqual(appLog(im.logPath('broken', 'app')), { stdout: '', stderr: '' });
  });

  test('a legacy ext4 image boots too', async () => {
    const ext4 = await makeImageEnv({ format: 'ext4' });
    try {
      await fs.cp(env.paths.kernelsDir, ext4.paths.kernelsDir, { recursive: true });
      const img = await ext4.manager.waitForReady(
        (await ext4.manager.import(createReadStream(archive))).name,
      );
      assert.equal(img.format, 'ext4');
      const m = managerFor(ext4);
      await m.init();
      const inst = await m.create({ image: img.name, cmd: ['/bin/sh', '-c', 'echo on ext4'] });
      const done = await waitForStates(m, inst.id, ['Stopped']);
      assert.equal(done.exit_code, 0);
      assert.equal(appLog(m.logPath(inst.id, 'app')).stdout, 'on ext4\n');
      assert.match(readFileSync(m.logPath(inst.id, 'console'), 'utf8'), /root filesystem is ext4/);
      await m.delete(inst.id);
    } finally {
      await ext4.close();
    }
  });

  test('the CLI: vessel run streams output and exits with the command’s code', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-cli-run-'));
    const bin = path.resolve(
      path.dirname(fileURLToPath(import.meta.url)),
      '../../../bin/vessel.js',
    );
    const envVars = { ...process.env, VESSEL_DATA_DIR: dir };
    try {
      await fs.cp(env.paths.kernelsDir, path.join(dir, 'kernels'), { recursive: true });
      const imp = spawnSync(process.execPath, [bin, 'image', 'import', archive], {
        env: envVars,
        encoding: 'utf8',
      });
      assert.equal(imp.status, 0, imp.stderr);
      const run = spawnSync(
        process.execPath,
        [bin, 'run', '--rm', 'boot/busybox:1', '--', 'sh', '-c', 'echo from the cli; exit 6'],
        {
          env: envVars,
          encoding: 'utf8',
          timeout: 120_000,
        },
      );
      assert.equal(run.status, 6, run.stderr);
      assert.equal(run.stdout, 'from the cli\n', 'the command’s bytes and nothing else');
      const ps = spawnSync(process.execPath, [bin, 'ps', '-a', '--json'], {
        env: envVars,
        encoding: 'utf8',
      });
      assert.deepEqual(JSON.parse(ps.stdout), [], '--rm removed the instance');
    } finally {
      const pid = Number(
        (await fs.readFile(path.join(dir, 'vessel.pid'), 'utf8').catch(() => '')).trim(),
      );
      if (pid > 0) {
        process.kill(pid, 'SIGTERM');
        for (let i = 0; i < 100; i++) {
          try {
            process.kill(pid, 0);
            await new Promise((r) => setTimeout(r, 100));
          } catch {
            break;
          }
        }
      }
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
