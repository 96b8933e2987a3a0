import fs from 'node:fs';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import type { Command } from 'commander';
import type { Image, VesselClient } from '../../client/index.js';
import { VesselError, errnoCode } from '../../core/errors.js';
import { connect, type GlobalOptions } from '../connect.js';
import { EXIT, exitCodeForImageError } from '../exit-codes.js';
import { ago, humanBytes, printJson, shortDigest, table } from '../output.js';
import { PullProgress } from '../progress.js';

type Globals = () => GlobalOptions;
type SetExit = (code: number) => void;

/** Follow an image until ready or failed; returns the exit code. */
export async function followImage(
  client: VesselClient,
  name: string,
  json: boolean,
): Promise<number> {
  const progress = json ? undefined : new PullProgress();
  let last: Image | undefined;
  for await (const e of client.imageEvents(name)) {
    progress?.update(e);
    if (e.type === 'status') last = e.image;
    if (e.type === 'deleted')
      throw new VesselError('image_not_found', `image "${name}" was deleted while pulling`);
  }
  if (!last) last = await client.getImage(name);
  if (json) printJson(last);
  if (last.status === 'ready') {
    if (!json) {
      process.stdout.write(
        `${last.name}  ${last.digest ?? ''}  ${last.format ?? ''}  ${humanBytes(last.size_bytes)}\n`,
      );
    }
    return EXIT.ok;
  }
  if (last.status === 'failed') {
    if (!json) process.stderr.write(`error: ${last.error ?? 'image failed'}\n`);
    return exitCodeForImageError(last.error_code);
  }
  process.stderr.write(`error: the event stream ended while ${last.name} was ${last.status}\n`);
  return EXIT.unavailable;
}

/** Pack a directory (an OCI layout) as a tar stream: files and directories only. */
async function tarDirectory(dir: string): Promise<Readable> {
  const tar = await import('tar-stream'); // only `image import DIR` needs it
  const pack = tar.pack();
  const out = new PassThrough();
  pack.pipe(out);
  const walk = async (rel: string): Promise<void> => {
    for (const e of await fs.promises.readdir(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const full = path.join(dir, r);
      if (e.isDirectory()) {
        pack.entry({ name: r, type: 'directory', mode: 0o755 });
        await walk(r);
      } else if (e.isFile()) {
        const st = await fs.promises.stat(full);
        await new Promise<void>((resolve, reject) => {
          const w = pack.entry({ name: r, size: st.size, mode: 0o644 }, (err) =>
            err ? reject(err) : resolve(),
          );
          fs.createReadStream(full).on('error', reject).pipe(w);
        });
      }
    }
  };
  walk('').then(
    () => pack.finalize(),
    (err: unknown) => out.destroy(err instanceof Error ? err : new Error(String(err))),
  );
  return out;
}

export function registerImageCommands(program: Command, globals: Globals, setExit: SetExit): void {
  const image = program
    .command('image')
    .description('pull, list, inspect, remove, import and garbage-collect images');

  image
    .command('pull')
    .description('pull an image from its registry and convert it to a VM disk')
    .argument('<reference>', 'image reference, e.g. alpine:3.20 or 127.0.0.1:5000/app@sha256:…')
    .option('-d, --detach', 'return as soon as the pull is queued')
    .action(async (reference: string, o: { detach?: boolean }) => {
      const g = globals();
      const client = await connect(g);
      const img = await client.pullImage(reference);
      if (o.detach) {
        if (g.json) printJson(img);
        else process.stdout.write(`${img.name}: ${img.status}\n`);
        return;
      }
      setExit(await followImage(client, img.name, g.json === true));
    });

  image
    .command('ls')
    .alias('list')
    .description('list images')
    .action(async () => {
      const g = globals();
      const images = await (await connect(g)).listImages();
      if (g.json) return printJson(images);
      process.stdout.write(
        `${table(
          ['NAME', 'STATUS', 'FORMAT', 'SIZE', 'DIGEST', 'CREATED'],
          images.map((i) => [
            i.name,
            i.status,
            i.format ?? '-',
            humanBytes(i.size_bytes),
            shortDigest(i.digest),
            ago(i.created_at),
          ]),
        )}\n`,
      );
    });

  image
    .command('inspect')
    .description('show everything known about an image (JSON)')
    .argument('<image>', 'reference or digest')
    .action(async (name: string) => {
      printJson(await (await connect(globals())).getImage(name));
    });

  image
    .command('rm')
    .alias('remove')
    .description('remove images (their layers stay until `vessel image gc`)')
    .argument('<images...>', 'references or digests')
    .action(async (names: string[]) => {
      const client = await connect(globals());
      for (const n of names) {
        await client.deleteImage(n);
        process.stdout.write(`removed ${n}\n`);
      }
    });

  image
    .command('import')
    .description('import a `docker save` tarball or an OCI image layout (directory or tar)')
    .argument('<path>', 'archive file or OCI layout directory ("-" reads the archive from stdin)')
    .option('--name <reference>', 'name for the image (required when the archive does not name it)')
    .action(async (file: string, o: { name?: string }) => {
      const g = globals();
      let archive: Readable;
      if (file === '-') archive = process.stdin;
      else {
        let st: fs.Stats;
        try {
          st = fs.statSync(file);
        } catch (err) {
          throw new VesselError(
            'invalid_argument',
            `cannot read ${file}: ${errnoCode(err) ?? String(err)}`,
          );
        }
        archive = st.isDirectory() ? await tarDirectory(file) : fs.createReadStream(file);
      }
      const client = await connect(g);
      const img = await client.importImage(archive, o.name);
      setExit(await followImage(client, img.name, g.json === true));
    });

  image
    .command('gc')
    .description('remove layers and disks that no image uses')
    .action(async () => {
      const g = globals();
      const r = await (await connect(g)).gcImages();
      if (g.json) return printJson(r);
      process.stdout.write(
        `removed ${r.removed_blobs} blobs and ${r.removed_disks} disks, freed ${humanBytes(r.freed_bytes)}\n`,
      );
    });

  image
    .command('catalog')
    .description(
      'golden images Vessel builds on this host (`vessel run NAME`); `catalog build NAME` builds or rebuilds one',
    )
    .argument('[action]', 'build: build (or rebuild) the named image now')
    .argument('[name]', 'a catalog name')
    .action(async (action: string | undefined, name: string | undefined) => {
      const g = globals();
      const client = await connect(g);
      if (action === undefined) {
        const entries = await client.listCatalog();
        if (g.json) return printJson(entries);
        process.stdout.write(
          `${table(
            ['NAME', 'DEFAULT', 'SOURCE', 'LOCAL', 'DIGEST', 'BUILT', 'PACKAGES'],
            entries.map((e) => [
              e.name,
              e.default ? 'yes' : '',
              e.source,
              e.local ? 'yes' : e.build_id ? `building (${e.build_id})` : 'no',
              shortDigest(e.digest),
              e.built_at ? ago(e.built_at) : '-',
              e.packages.join(','),
            ]),
          )}\n`,
        );
        return;
      }
      if (action !== 'build' || !name)
        throw new VesselError('invalid_argument', 'usage: vessel image catalog [build NAME]');
      const { followBuild } = await import('./build.js');
      const build = await client.buildCatalogImage(name);
      const end = await followBuild(client, build.id, g.json ? null : process.stdout);
      if (g.json) printJson(end);
      if (end.status === 'cancelled') process.exit(130);
      if (end.status !== 'ready')
        throw new VesselError('build_failed', end.error ?? `build ${end.id} ${end.status}`);
    });
}
