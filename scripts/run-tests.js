#!/usr/bin/env node
// Runs the compiled test files with Node's built-in test runner.
// Usage: node scripts/run-tests.js unit|integration|reliability|all [extra node --test args]
// `all` (npm test, CI) runs unit, integration and the reliability suite at its CI size;
// `VESSEL_RELIABILITY=full npm run test:reliability` runs the reliability suite at full size.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const which = process.argv[2] ?? 'all';
const roots = which === 'all' ? ['unit', 'integration', 'reliability'] : [which];

function find(dir) {
  let out = [];
  let entries;
  try {
    entries = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of entries) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out = out.concat(find(p));
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out.sort();
}

const files = roots.flatMap((r) => find(join('dist', 'test', r)));
if (files.length === 0) {
  console.error(
    `no compiled test files under dist/test/{${roots.join(',')}}; run npm run build first`,
  );
  process.exit(1);
}
const args = ['--test', '--test-reporter=spec', ...process.argv.slice(3), ...files];
const res = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(res.status ?? 1);
