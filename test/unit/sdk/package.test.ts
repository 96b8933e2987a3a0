// packages/sdk as built by `npm run build`: self-contained (every relative import stays in
// its dist/), and every package it imports at run time is one of its dependencies, at the
// same range as the daemon's own package.json.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { builtinModules } from 'node:module';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const SDK = path.join(ROOT, 'packages/sdk');

interface Manifest {
  dependencies?: Record<string, string>;
  exports: Record<string, string | Record<string, string>>;
}

const readJson = async <T>(file: string): Promise<T> =>
  JSON.parse(await fs.readFile(file, 'utf8')) as T;

async function files(dir: string, suffix: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await files(p, suffix)));
    else if (e.name.endsWith(suffix)) out.push(p);
  }
  return out;
}

/** Module specifiers of static imports/exports and dynamic `import('…')` in compiled code. */
function specifiers(code: string): string[] {
  const patterns = [
    /^\s*(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"\s]+)['"]/gm,
    /^\s*import\s*['"]([^'"\s]+)['"]/gm,
    /\bimport\(\s*['"]([^'"\s]+)['"]\s*\)/g,
  ];
  return patterns.flatMap((re) => [...code.matchAll(re)].map((m) => m[1]!));
}

const packageName = (spec: string): string =>
  spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;

test('the built SDK imports only its own files, node built-ins and its dependencies', async () => {
  const dist = path.join(SDK, 'dist');
  await fs.access(dist).catch(() => assert.fail(`${dist} is missing: run npm run build`));
  const manifest = await readJson<Manifest>(path.join(SDK, 'package.json'));
  const deps = new Set(Object.keys(manifest.dependencies ?? {}));
  const used = new Set<string>();
  for (const file of [...(await files(dist, '.js')), ...(await files(dist, '.d.ts'))]) {
    for (const spec of specifiers(await fs.readFile(file, 'utf8'))) {
      if (spec.startsWith('.')) {
        const target = path.resolve(path.dirname(file), spec);
        assert.ok(target.startsWith(dist + path.sep), `${file} imports ${spec}, outside dist/`);
        const candidates = file.endsWith('.d.ts') ? [target.replace(/\.js$/, '.d.ts')] : [target];
        await fs
          .access(candidates[0]!)
          .catch(() => assert.fail(`${file}: ${spec} is not in the package`));
        continue;
      }
      if (spec.startsWith('node:') || builtinModules.includes(spec)) continue;
      used.add(packageName(spec));
      assert.ok(
        deps.has(packageName(spec)),
        `${path.relative(SDK, file)} imports ${spec}, not a dependency of @vessel/sdk`,
      );
    }
  }
  assert.deepEqual([...deps].sort(), [...used].sort(), 'every dependency is used');
  const root = await readJson<Manifest>(path.join(ROOT, 'package.json'));
  for (const [name, range] of Object.entries(manifest.dependencies ?? {}))
    assert.equal(
      range,
      root.dependencies?.[name],
      `${name}: the SDK and the daemon ask for the same range`,
    );
});

test('the exports map points at built files', async () => {
  const manifest = await readJson<Manifest>(path.join(SDK, 'package.json'));
  const main = manifest.exports['.'] as Record<string, string>;
  for (const target of Object.values(main)) await fs.access(path.join(SDK, target));
});
