// The image catalog (issue 12): on a host with nothing pulled, `vessel run -- CMD` builds the
// default golden image (debian-bookworm, mmdebstrap from the host's apt sources) with its
// progress on stderr, then runs CMD in it. Two clients asking at once share one build.
// mmdebstrap downloads from the host's apt mirror: about a minute here.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
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
  },
);
