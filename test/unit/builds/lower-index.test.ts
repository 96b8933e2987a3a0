// What COPY sees of the image below: layers written by GNU tar (not by Vessel), with a
// sticky /tmp, a whiteout and an opaque directory in the upper layer.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { indexLayer, lowerLookup, type LayerIndex } from '../../../src/builds/lower-index.js';

describe('the image below a COPY', () => {
  let dir: string;
  let layers: LayerIndex[];

  const layer = async (name: string, make: (root: string) => Promise<void>): Promise<string> => {
    const root = path.join(dir, name);
    await fs.mkdir(root);
    await make(root);
    const file = path.join(dir, `${name}.tar`);
    execFileSync('tar', ['--numeric-owner', '-C', root, '-cf', file, '.']);
    return file;
  };

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vessel-lower-'));
    const low = await layer('low', async (r) => {
      await fs.mkdir(path.join(r, 'tmp'));
      await fs.chmod(path.join(r, 'tmp'), 0o1777);
      await fs.mkdir(path.join(r, 'srv/app/old'), { recursive: true });
      await fs.chmod(path.join(r, 'srv'), 0o750);
      await fs.writeFile(path.join(r, 'srv/app/old/f'), 'x');
      await fs.writeFile(path.join(r, 'gone.txt'), 'x');
      await fs.mkdir(path.join(r, 'opt/keep'), { recursive: true });
    });
    const high = await layer('high', async (r) => {
      await fs.writeFile(path.join(r, '.wh.gone.txt'), '');
      await fs.mkdir(path.join(r, 'opt'));
      await fs.writeFile(path.join(r, 'opt/.wh..wh..opq'), '');
      await fs.writeFile(path.join(r, 'opt/new'), 'n');
    });
    layers = [await indexLayer(createReadStream(low)), await indexLayer(createReadStream(high))];
  });

  after(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  test('directories keep their mode; files are files', () => {
    const look = lowerLookup(layers);
    assert.equal(look('/tmp')?.mode, 0o1777);
    assert.equal(look('/tmp')?.isDir, true);
    assert.equal(look('/srv')?.mode, 0o750);
    assert.equal(look('/srv/app/old/f')?.isDir, false);
    assert.equal(look('/')?.isDir, true);
    assert.equal(look('/nope'), undefined);
  });

  test('whiteouts and opaque directories hide what is below', () => {
    const look = lowerLookup(layers);
    assert.equal(look('/gone.txt'), undefined);
    assert.equal(look('/opt/keep'), undefined, 'hidden by the opaque /opt');
    assert.equal(look('/opt/new')?.isDir, false);
    assert.equal(look('/opt')?.isDir, true);
    // The lower layer alone still has them.
    const lowOnly = lowerLookup(layers.slice(0, 1));
    assert.equal(lowOnly('/gone.txt')?.isDir, false);
    assert.equal(lowOnly('/opt/keep')?.isDir, true);
  });
});
