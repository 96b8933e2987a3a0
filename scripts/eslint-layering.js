// Local ESLint rule: imports between src/<subsystem>/ folders must follow the
// dependency direction in ARCHITECTURE.md. A subsystem may import itself and
// the subsystems listed for it; anything else is reported.
import path from 'node:path';

/** subsystem -> subsystems it may import (besides itself). */
export const ALLOWED = {
  core: [],
  events: ['core'],
  store: ['core'],
  host: ['core'],
  kernels: ['core'],
  vmm: ['core'],
  guest: ['core'],
  network: ['core', 'store'],
  ingress: ['core', 'store'],
  instances: [
    'core',
    'store',
    'events',
    'images',
    'kernels',
    'vmm',
    'guest',
    'host',
    'network',
    'volumes',
  ],
  images: ['core', 'store', 'events'],
  // volumes reuse the image layer applier (images/unpack) for archives.
  volumes: ['core', 'store', 'images'],
  // builds run RUN steps in builder instances and commit images.
  builds: ['core', 'store', 'events', 'images', 'instances'],
  api: [
    'core',
    'store',
    'events',
    'images',
    'host',
    'instances',
    'kernels',
    'ingress',
    'volumes',
    'builds',
  ],
  client: ['core'],
  cli: ['core', 'client'],
  daemon: [
    'core',
    'store',
    'events',
    'images',
    'host',
    'api',
    'kernels',
    'vmm',
    'guest',
    'instances',
    'network',
    'ingress',
    'volumes',
    'builds',
  ],
};

function subsystemOf(file) {
  const m = /(?:^|[\\/])src[\\/]([^\\/]+)[\\/]/.exec(file);
  return m ? m[1] : undefined;
}

const rule = {
  meta: {
    type: 'problem',
    docs: { description: 'enforce the subsystem dependency direction' },
    schema: [],
    messages: {
      forbidden:
        'src/{{from}} may not import src/{{to}} (allowed: {{allowed}}); see ARCHITECTURE.md',
      unknown: 'src/{{from}} is not listed in scripts/eslint-layering.js',
    },
  },
  create(context) {
    const file = context.filename;
    const from = subsystemOf(file);
    if (!from) return {};
    const check = (node, spec) => {
      if (typeof spec !== 'string' || !spec.startsWith('.')) return;
      const target = path.resolve(path.dirname(file), spec);
      const to = subsystemOf(target);
      if (!to || to === from) return;
      const allowed = ALLOWED[from];
      if (!allowed) {
        context.report({ node, messageId: 'unknown', data: { from } });
      } else if (!allowed.includes(to)) {
        context.report({
          node,
          messageId: 'forbidden',
          data: { from, to, allowed: allowed.join(', ') || 'none' },
        });
      }
    };
    return {
      ImportDeclaration: (node) => check(node, node.source.value),
      ExportAllDeclaration: (node) => node.source && check(node, node.source.value),
      ExportNamedDeclaration: (node) => node.source && check(node, node.source.value),
      ImportExpression: (node) => node.source.type === 'Literal' && check(node, node.source.value),
    };
  },
};

export default { rules: { layering: rule } };
